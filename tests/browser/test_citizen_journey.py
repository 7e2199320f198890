"""A newcomer votes through a sequence with the keyboard, signs up, proposes; a moderator accepts.

Runs headless Chromium from the system (/usr/bin/chromium) through Playwright's sync API against
pytest-django's live server. Screenshots of each step go to tests/artifacts/ (git-ignored).
"""

import pytest
from django.contrib.auth.models import Permission
from django.core import mail

from consultations.models import ModeratorAssignment, Proposal, Qualification, Trust, Vote

from ..factories import ConsultationFactory, ProposalFactory, UserFactory
from .conftest import ARTIFACTS, open_page

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PASSWORD = "correct horse battery"
SIZE = 3
GOOD = "ouvrir les musées gratuitement le premier dimanche du mois"


@pytest.fixture
def world():
    consultation = ConsultationFactory(
        question="Comment rendre la culture accessible à tous ?",
        slug="culture-accessible",
        sequence_size=SIZE,
        description="Musées, bibliothèques, concerts : dites-nous ce qu'il faut changer.",
    )
    for text in [
        "Il faut ouvrir les musées le soir pour ceux qui travaillent",
        "Il faut des concerts gratuits dans les parcs en été",
        "Il faut un pass culture pour les seniors",
        "Il faut des bibliothèques ouvertes le dimanche",
        "Il faut enseigner la musique dès l'école primaire",
    ]:
        ProposalFactory(consultation=consultation, content=text)
    ProposalFactory(
        consultation=consultation,
        content="Il faut acheter les montres de ma boutique en ligne",
        status="pending",
        created_at=consultation.starts_at,
    )
    moderator = UserFactory(email="moderator@example.org", is_staff=True)
    moderator.user_permissions.add(Permission.objects.get(codename="moderate_proposal"))
    ModeratorAssignment.objects.create(moderator=moderator, consultation=consultation)
    return consultation


def press(page, key):
    """Press a shortcut once the page is idle (the script ignores keys while a request runs)."""
    # A selector, not wait_for_function: the Content-Security-Policy forbids eval, even to Playwright.
    page.wait_for_selector(".htmx-request, .htmx-settling", state="detached")
    page.keyboard.press(key)


def shot(page, name):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"journey-{name}.png"), full_page=True)


def test_citizen_journey(browser, live_server, world):
    consultation = world
    mail.outbox = []
    page, errors = open_page(browser)

    # 1. A newcomer opens the consultation.
    page.goto(f"{live_server.url}{consultation.get_absolute_url()}")
    assert page.locator("h1").inner_text() == consultation.question
    shot(page, "01-consultation")

    # 2. The sequence: intro, then every card with the keyboard.
    page.click(".cta a.primary")
    page.wait_for_selector('#seq-card[data-card="intro"]')
    shot(page, "02-sequence-intro")
    press(page, "Enter")
    keys = ["a", "d", "n"]
    for position in range(1, SIZE + 1):
        card = page.locator(f'#seq-card[data-card="vote"]:has-text("{position} / {SIZE}")')
        card.wait_for()
        if position == 1:
            shot(page, "03-sequence-card")
        press(page, keys[position - 1])
        page.wait_for_selector('#seq-card[data-card="qualify"]')
        press(page, "1")
        page.wait_for_selector('#seq-card button.qual.on[aria-pressed="true"]')
        if position == 1:
            shot(page, "04-sequence-qualified")
        press(page, "Enter" if position % 2 else "ArrowRight")
    page.wait_for_selector('#seq-card[data-card="end"]')
    shot(page, "05-sequence-end")
    votes = list(Vote.objects.order_by("created_at"))
    assert [v.key for v in votes] == ["agree", "disagree", "neutral"]
    assert {(v.trust, v.in_sequence) for v in votes} == {(Trust.SEQUENCE, True)}
    assert Qualification.objects.count() == SIZE
    assert not errors, errors

    # 3. Proposing needs an account: the draft survives the sign-up.
    page.click('#seq-card a[href$="#propose"]')
    page.wait_for_selector("#id_content")
    page.fill("#id_content", "ouvrir les musées le soir")
    page.wait_for_selector("#similar li")  # similar proposals while typing
    assert "musées le soir" in page.locator("#similar").inner_text()
    shot(page, "06-similar-proposals")
    page.fill("#id_content", GOOD)
    page.click('.propose-form button[type="submit"].primary')
    page.wait_for_url("**/accounts/login/**")
    page.click('#main a[href*="/accounts/signup/"]')
    page.wait_for_url("**/accounts/signup/**")
    page.fill('input[name="email"]', "newcomer@example.org")
    page.fill('input[name="password1"]', PASSWORD)
    page.fill('input[name="password2"]', PASSWORD)
    shot(page, "07-signup")
    page.click('#main form[action*="/signup/"] button[type="submit"]')
    page.wait_for_url(f"**{consultation.get_absolute_url()}**")
    assert page.input_value("#id_content") == GOOD
    newcomer_votes = Vote.objects.filter(participant__user__email="newcomer@example.org")
    assert newcomer_votes.count() == SIZE  # the anonymous votes followed into the account

    # 4. A bad proposal is refused with a message, then a good one is sent.
    page.fill("#id_content", "<b>gras</b>")
    page.click('.propose-form button[type="submit"].primary')
    page.wait_for_selector("#proposal-errors")
    shot(page, "08-proposal-refused")
    assert not Proposal.objects.filter(author__email="newcomer@example.org").exists()
    page.fill("#id_content", GOOD)
    page.click('.propose-form button[type="submit"].primary')
    page.wait_for_selector(".messages li")
    shot(page, "09-proposal-sent")
    proposal = Proposal.objects.get(author__email="newcomer@example.org")
    assert proposal.content == f"Il faut {GOOD}" and proposal.status == "pending"

    # 5. A moderator accepts it with the keyboard; the author is told by e-mail.
    page.context.clear_cookies()
    page.goto(f"{live_server.url}/moderation/")
    page.wait_for_url("**/accounts/login/**")
    page.fill('input[name="login"]', "moderator@example.org")
    page.fill('input[name="password"]', PASSWORD)
    page.click('#main form[action*="/login/"] button[type="submit"]')
    page.wait_for_url("**/moderation/**")
    assert "montres" in page.locator("#queue").inner_text()  # the oldest first
    shot(page, "10-moderation")
    press(page, "r")  # the reasons open, the first one takes the focus
    # The details "toggle" event that moves the focus is queued, so wait for it rather than read at once.
    page.wait_for_selector('button[name="reason"]:focus', timeout=5000)
    assert page.evaluate("document.activeElement.name") == "reason"
    press(page, page.get_attribute('button[name="reason"][value="advertising"]', "aria-keyshortcuts"))
    page.wait_for_selector(f'#queue blockquote:has-text("{GOOD}")')
    assert Proposal.objects.get(content__contains="montres").refusal_reason == "advertising"
    press(page, "a")
    page.wait_for_selector(f'#queue .alert.success:has-text("{GOOD}")')
    shot(page, "11-moderation-accepted")
    proposal.refresh_from_db()
    assert proposal.status == "accepted"
    assert [m.to for m in mail.outbox if proposal.content in m.body] == [["newcomer@example.org"]]

    # 6. The proposal is public.
    page.goto(f"{live_server.url}{proposal.get_absolute_url()}")
    assert GOOD in page.locator("blockquote").inner_text()
    page.click('#vote-box button[value="agree"]')
    page.wait_for_selector('#vote-box button[value="agree"][aria-pressed="true"]')
    page.click('#vote-box button[value="like_it"]')
    page.wait_for_selector('#vote-box button.qual.on[value="like_it"]')
    vote = Vote.objects.get(proposal=proposal)
    assert (vote.trust, vote.in_sequence) == (Trust.TRUSTED, False)
    # A forged request gets a clear message and changes nothing.
    page.evaluate("document.querySelector('#vote-box button[value=disagree]').value = 'maybe'")
    page.click('#vote-box button[value="maybe"]')
    page.wait_for_selector("#htmx-alerts .alert")
    assert "agree, disagree or neutral" in page.locator("#htmx-alerts").inner_text()
    shot(page, "12-proposal-page")
    vote.refresh_from_db()
    assert vote.key == "agree"
    assert not errors, errors
    page.context.close()
