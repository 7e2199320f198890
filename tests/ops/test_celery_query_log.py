"""A Celery worker under DEBUG must not keep the SQL of every query it ran (config/celery.py)."""

import pytest
from celery import signals
from django.db import connection

import config.celery  # noqa: F401  (connects the task_postrun handler)


@pytest.mark.django_db
def test_the_query_log_is_cleared_after_each_task():
    connection.force_debug_cursor = True  # what DEBUG = True does
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        assert len(connection.queries_log) >= 1
        signals.task_postrun.send(sender=None, task_id="t", task=None, args=(), kwargs={})
        assert len(connection.queries_log) == 0
    finally:
        connection.force_debug_cursor = False
