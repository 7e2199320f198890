"""A citizen logs in, downloads their data, fails then succeeds to delete their account.

Headless Chromium (/usr/bin/chromium) through Playwright against pytest-django's live server.
Screenshots go to tests/artifacts/ (git-ignored).
"""

import json

import pytest

from accounts.models import User
from consultations.models import Participant, Vote
from consultations.services import participant_for_user, vote_cast

from ..factories import ProposalFactory, UserFactory
from .conftest import ARTIFACTS

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PASSWORD = "correct horse battery"


def test_download_then_delete_my_account(browser, live_server, settings):
    settings.LANGUAGE_CODE = "en"
    user = UserFactory(email="camille.browser@example.net", display_name="Camille")
    proposal = ProposalFactory(content="Il faut planter des arbres dans les cours d'école")
    vote_cast(participant=participant_for_user(user=user), proposal=proposal, key="agree")
    ARTIFACTS.mkdir(exist_ok=True)

    page = browser.new_page(locale="en-GB", accept_downloads=True)
    page.goto(f"{live_server.url}/accounts/login/")
    page.fill("input[name=login]", user.email)
    page.fill("input[name=password]", PASSWORD)
    page.locator("#main form button[type=submit]").click()
    page.wait_for_url(f"{live_server.url}/")
    page.click(f"text={user.email}")  # the navigation bar links to "my data"
    page.wait_for_url("**/accounts/my-data/")
    assert page.locator("h1").inner_text() == "My data"
    page.screenshot(path=str(ARTIFACTS / "my_data.png"), full_page=True)

    with page.expect_download() as info:
        page.click("text=Download (JSON)")
    data = json.loads(open(info.value.path(), encoding="utf-8").read())
    assert data["account"]["email"] == user.email and len(data["votes"]) == 1

    page.fill("input[name=confirm_email]", "not.me@example.net")
    page.fill("input[name=password]", PASSWORD)
    page.click("button.danger")
    assert "This is not the e-mail address of your account." in page.content()
    page.screenshot(path=str(ARTIFACTS / "my_data_wrong_confirmation.png"), full_page=True)
    assert User.objects.filter(pk=user.pk).exists()

    page.fill("input[name=confirm_email]", user.email)
    page.fill("input[name=password]", PASSWORD)
    page.click("button.danger")
    page.wait_for_url(f"{live_server.url}/")
    assert "Your account has been deleted" in page.content()
    assert "Log in" in page.content()
    page.screenshot(path=str(ARTIFACTS / "my_data_deleted.png"), full_page=True)
    assert not User.objects.filter(pk=user.pk).exists()
    assert Vote.objects.filter(proposal=proposal).count() == 1
    assert Participant.objects.get().user_id is None
