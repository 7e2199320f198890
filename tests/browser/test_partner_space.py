"""A partner logs in, posts a measurement, and the public actions page shows the new progress.

Runs headless Chromium from the system (/usr/bin/chromium) through Playwright's sync API against
pytest-django's live server. Screenshots go to tests/artifacts/ (git-ignored).
"""

import datetime
import re
from decimal import Decimal

import pytest
from django.utils import timezone

from ..actions.factories import (
    ActionFactory,
    ActionPlanFactory,
    MeasurementFactory,
    MembershipFactory,
    ObjectiveFactory,
)
from ..factories import CauseFactory, PartnerFactory, ProposalFactory, UserFactory
from .conftest import ARTIFACTS

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PASSWORD = "correct horse battery"


@pytest.fixture
def partner_world(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path
    today = timezone.localdate()
    cause = CauseFactory(title="La culture pour tous", slug="culture-pour-tous")
    plan = ActionPlanFactory(cause=cause, title="Plan d'action 2026")
    partner = PartnerFactory(name="Ville de Lyon", slug="ville-de-lyon", kind="action_partner")
    action = ActionFactory(plan=plan, owner=partner, title="Ouvrir les bibliothèques le dimanche")
    action.proposals.add(
        ProposalFactory(
            consultation__cause=cause, content="Il faut ouvrir les bibliothèques le dimanche"
        )
    )
    action.funders.add(PartnerFactory(name="Fondation Lumière", kind="sponsor"))
    objective = ObjectiveFactory(
        action=action,
        indicator="Bibliothèques ouvertes le dimanche",
        unit="sites",
        baseline=Decimal(0),
        target=Decimal(20),
        baseline_on=today - datetime.timedelta(days=120),
        due_date=today + datetime.timedelta(days=240),
    )
    MeasurementFactory(
        objective=objective,
        value=Decimal(4),
        measured_on=today - datetime.timedelta(days=60),
        evidence_url="https://example.org/bilan-t1.pdf",
    )
    waiting = ObjectiveFactory(
        action=action,
        indicator="Délai pour obtenir une carte",
        unit="jours",
        baseline=Decimal(30),
        target=Decimal(5),
        baseline_on=today - datetime.timedelta(days=120),
        due_date=today + datetime.timedelta(days=240),
    )
    MeasurementFactory(
        objective=waiting, value=Decimal(20), measured_on=today - datetime.timedelta(days=30)
    )
    # A second, late action from another partner, so that the page shows a late flag too.
    other = ActionFactory(plan=plan, title="Rénover les salles de concert")
    ObjectiveFactory(
        action=other,
        indicator="Salles rénovées",
        baseline=Decimal(0),
        target=Decimal(8),
        baseline_on=today - datetime.timedelta(days=300),
        due_date=today - datetime.timedelta(days=10),
    )
    user = UserFactory(email="lyon@example.org")
    MembershipFactory(partner=partner, user=user)
    return {"cause": cause, "action": action, "objective": objective, "user": user}


def test_partner_posts_a_measurement_and_the_public_page_shows_it(
    live_server, browser, partner_world, tmp_path
):
    ARTIFACTS.mkdir(exist_ok=True)
    objective = partner_world["objective"]
    # English pages: the assertions below read a few interface words.
    page = browser.new_page(viewport={"width": 1200, "height": 900}, locale="en-US")

    # The public page before: 4 of 20 sites (20 %) and (30 − 20)/(30 − 5) = 40 %: 30 %.
    page.goto(f"{live_server.url}/actions/cause/culture-pour-tous/")
    assert page.locator(".action-card").first.locator(".progress-value").inner_text() == "30\u00a0%"

    # Log in; the login page sends the partner on to their space.
    page.goto(f"{live_server.url}/accounts/login/?next=/partners/space/")
    page.fill("input[name=login]", "lyon@example.org")
    page.fill("input[name=password]", PASSWORD)
    page.locator("#main form button[type=submit]").click()
    page.wait_for_url(re.compile(r"/partners/space/$"))
    assert "Ouvrir les bibliothèques le dimanche" in page.content()
    page.screenshot(path=ARTIFACTS / "partner-space.png", full_page=True)

    # Post a measurement through the objective's form (htmx swaps the card in place).
    page.get_by_role("link", name=re.compile("Update")).first.click()
    page.wait_for_url(re.compile(r"/partners/space/actions/\d+/$"))
    assert page.locator("#action-summary .flag-late").count() == 1  # 20 % of sites, 33 % due
    prefix = f"#id_o{objective.pk}-"
    page.fill(prefix + "value", "12")
    tomorrow = timezone.localdate() + datetime.timedelta(days=1)
    page.fill(prefix + "measured_on", tomorrow.isoformat())
    page.locator(f"#objective-card-{objective.pk} button[type=submit]").click()
    card = page.locator(f"#objective-card-{objective.pk}")
    card.locator(".errorlist").wait_for()
    assert "future" in card.locator(".errorlist").inner_text()
    page.screenshot(path=ARTIFACTS / "partner-measurement-error.png", full_page=True)

    page.fill(prefix + "measured_on", timezone.localdate().isoformat())
    page.fill(prefix + "evidence_url", "https://example.org/bilan-t2.pdf")
    page.fill(prefix + "note", "Six nouvelles bibliothèques ouvertes en mai.")
    evidence = tmp_path / "bilan.pdf"
    evidence.write_bytes(b"%PDF-1.4\n%%EOF\n")
    page.set_input_files(prefix + "evidence_file", str(evidence))
    card.locator("button[type=submit]").click()
    card = page.locator(f"#objective-card-{objective.pk}")
    card.get_by_role("status").wait_for()
    assert "60\u00a0%" in card.inner_text()
    # The action's own bar, outside the card, moved too (out-of-band swap), and is no longer late.
    assert page.locator("#action-summary .progress-value").inner_text() == "50\u00a0%"
    assert page.locator("#action-summary .flag-late").count() == 0
    page.screenshot(path=ARTIFACTS / "partner-measurement-posted.png", full_page=True)

    # The public actions page shows the new progress: (60 % + 40 %) / 2 = 50 %.
    page.goto(f"{live_server.url}/actions/cause/culture-pour-tous/")
    first = page.locator(".action-card").first
    assert first.locator(".progress-value").inner_text() == "50\u00a0%"
    assert "12 sites" in first.inner_text()
    page.screenshot(path=ARTIFACTS / "cause-actions.png", full_page=True)

    first.get_by_role("link", name="Ouvrir les bibliothèques le dimanche", exact=True).click()
    page.wait_for_url(re.compile(r"/actions/\d+/$"))
    assert page.locator("svg[role=img]").count() == 2
    assert "https://example.org/bilan-t2.pdf" in page.content()
    page.screenshot(path=ARTIFACTS / "action-detail.png", full_page=True)
