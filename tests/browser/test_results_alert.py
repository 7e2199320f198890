"""In a real browser: a citizen asks for the results by email and stops, without a page load,
and a voter sees how people voted once they have voted in the sequence."""

import pytest

from consultations.models import Participant, ResultsAlert
from consultations.services import vote_cast

from ..factories import ConsultationFactory, ProposalFactory, UserFactory
from .conftest import ARTIFACTS, open_page, sign_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_a_citizen_asks_for_the_results_by_email_then_stops(browser, live_server, settings):
    settings.LANGUAGE_CODE = "en"
    consultation = ConsultationFactory(question="Comment mieux trier nos déchets ?")
    user = UserFactory()
    page, errors = open_page(browser)
    sign_in(page, live_server.url, user.email, consultation.get_absolute_url())
    page.evaluate("window.loaded_once = true")  # gone if the page reloads

    page.get_by_role("button", name="Email me the results").click()
    page.get_by_text("We will email you when its results are published").wait_for()
    assert ResultsAlert.objects.filter(user=user, consultation=consultation).exists()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "results_alert.png"))

    page.get_by_role("button", name="Stop").click()
    page.get_by_role("button", name="Email me the results").wait_for()
    assert not ResultsAlert.objects.filter(user=user).exists()
    assert page.evaluate("window.loaded_once") is True
    assert errors == []


def test_a_voter_sees_how_people_voted_once_they_have_voted(browser, live_server, settings):
    settings.LANGUAGE_CODE = "en"
    settings.CONCORDE_SHARES_MIN_VOTES = 3
    consultation = ConsultationFactory(sequence_size=1)
    proposal = ProposalFactory(consultation=consultation, content="Il faut des fontaines à eau")
    for key in ("agree", "agree", "disagree"):
        vote_cast(participant=Participant.objects.create(), proposal=proposal, key=key)
    page, errors = open_page(browser)
    page.goto(f"{live_server.url}/c/{consultation.slug}/vote/")
    page.get_by_role("button", name="Start voting").click()
    page.get_by_text("Il faut des fontaines à eau").wait_for()
    assert page.get_by_text("How people voted").count() == 0

    page.keyboard.press("a")

    page.get_by_text("How people voted").wait_for()
    shares = page.locator(".seq-others").inner_text()
    assert "75 %" in shares and "4 votes cast here" in shares  # 3 agree of 4 with this one
    page.screenshot(path=str(ARTIFACTS / "sequence_shares.png"))
    assert errors == []
