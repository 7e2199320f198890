import os
from pathlib import Path

import pytest

DATA_DIR = Path(os.environ.get("CONCORDE_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "data"))


@pytest.fixture
def data_dir():
    if not DATA_DIR.is_dir():
        pytest.skip(f"public data folder {DATA_DIR} is absent")
    return DATA_DIR


def pytest_collection_modifyitems(config, items):
    """Tests that need PostgreSQL fail loudly rather than pass on SQLite by accident."""
    from django.db import connection

    for item in items:
        if item.get_closest_marker("realservices") and connection.vendor != "postgresql":
            item.add_marker(pytest.mark.skip(reason="needs PostgreSQL (set DATABASE_URL)"))


@pytest.fixture
def english(settings):
    """Messages are checked in English, the source language (French is the site's default)."""
    from django.utils import translation

    settings.LANGUAGE_CODE = "en"
    with translation.override("en"):
        yield


@pytest.fixture(autouse=True)
def _clear_cache():
    """Cached figures (e.g. consultation stats) never leak from one test into another."""
    from django.core.cache import cache

    cache.clear()
    yield
    cache.clear()


@pytest.fixture(autouse=True)
def _celery_pools_open():
    """Tests that run a real worker may close the Celery app's connection pools on teardown;
    eager ``delay()`` still takes a producer from them, so reopen them for the next test."""
    from kombu import pools

    from config.celery import app

    producers = app.producer_pool
    closed = [app._pool, producers, getattr(producers, "connections", None)]
    if any(getattr(pool, "_closed", False) for pool in closed):
        app._pool = None
        app.amqp._producer_pool = None
        pools.reset()  # kombu keeps its own registry of connection and producer pools
    yield
