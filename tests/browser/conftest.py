"""Shared set-up of the browser tests: Debian's Chromium driven by Playwright (never downloaded)."""

import os
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"

# Playwright's sync API runs an event loop in the test thread; the test's ORM calls are fine.
os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"


@pytest.fixture
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is absent")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM)
        yield browser
        browser.close()


def open_page(browser, *, width: int = 1100, height: int = 900):
    """A fresh English page with a generous timeout (a busy CI machine), and the list its
    script errors are collected in."""
    context = browser.new_context(locale="en-US", viewport={"width": width, "height": height})
    page = context.new_page()
    page.set_default_timeout(30_000)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    return page, errors


PASSWORD = "correct horse battery"  # tests.factories.UserFactory's password


def sign_in(page, base_url: str, email: str, next_path: str) -> None:
    """Sign in through allauth's form and wait for the page it sends the user on to."""
    page.goto(f"{base_url}/accounts/login/?next={next_path}")
    page.fill("input[name=login]", email)
    page.fill("input[name=password]", PASSWORD)
    page.locator("#main form button[type=submit]").click()
    page.wait_for_url(f"{base_url}{next_path}")
