"""Every public page, and the pieces HTMX swaps in, pass axe-core's WCAG 2.1 A and AA rules.

axe-core comes in the PyPI package axe-playwright-python (its axe.min.js, MPL 2.0), run in Debian's
Chromium against the live server, in English and in French. A control page with an image without
a text alternative shows that the audit finds what it should.
"""

from datetime import timedelta

import pytest
from django.utils import timezone

from consensus import services
from consensus.models import EngineRun, Idea, IdeaMembership
from consultations.models import Participant, PopulationShare, Proposal
from partners.models import PartnerMembership

from ..consensus.engine_data import HASHING, add_votes, consultation_with_themes
from ..factories import PartnerFactory, UserFactory
from .conftest import open_page, sign_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

WCAG = {"type": "tag", "values": ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]}


@pytest.fixture
def axe():
    sync = pytest.importorskip("axe_playwright_python.sync_playwright")
    audit = sync.Axe()

    def violations(page) -> list[str]:
        results = audit.run(page, options={"runOnly": WCAG, "resultTypes": ["violations"]})
        return [
            f"{v['id']} ({v['impact']}): {[n['target'] for n in v['nodes'][:3]]}"
            for v in results.response["violations"]
        ]

    return violations


@pytest.fixture
def published():
    consultation = consultation_with_themes(
        question="Comment rendre la ville plus agréable ?",
        ends_at=timezone.now()
        + timedelta(days=30),  # it closes: its final results can be asked for
        ask_demographics=True,  # the sequence's "Who takes part?" card
    )
    add_votes(consultation)
    # the results weighted to the population: half the voters said 18-24, the others 65+
    voters = Participant.objects.filter(votes__proposal__consultation=consultation).distinct()
    for n, participant in enumerate(voters.order_by("pk")):
        participant.age_range = "18-24" if n % 3 else "65+"
        participant.save(update_fields=["age_range"])
    for value in ("18-24", "65+"):
        PopulationShare.objects.create(
            consultation=consultation, dimension="age_range", value=value, percent=50
        )
    run = services.engine_run_start(consultation=consultation, kind="full", **HASHING)
    run.refresh_from_db()
    assert run.status == EngineRun.Status.DONE, run.error
    return consultation, run


def test_the_audit_finds_an_image_without_a_text_alternative(browser, live_server, axe):
    page, _errors = open_page(browser)
    page.goto(f"{live_server.url}/")
    assert axe(page) == []
    page.evaluate("document.querySelector('main, #main, body').append(new Image(20, 20))")
    assert [v.split(" ")[0] for v in axe(page)] == ["image-alt"]


@pytest.mark.parametrize("language", ["en", "fr"])
def test_public_pages_and_swapped_parts_pass_wcag_a_and_aa(
    browser, live_server, axe, published, language
):
    consultation, run = published
    proposal = Proposal.objects.filter(consultation=consultation).order_by("pk").first()
    idea = Idea.objects.filter(run=run, size__gt=0).order_by("-size").first()
    base = live_server.url
    paths = [
        "/",
        f"/causes/{consultation.cause.slug}/",
        f"/c/{consultation.slug}/",
        f"/c/{consultation.slug}/?sort=popular",
        f"/c/{consultation.slug}/p/{proposal.pk}/",
        f"/c/{consultation.slug}/moderation/",
        f"/engine/{consultation.slug}/results/",
        f"/engine/{consultation.slug}/results/ideas/",
        f"/engine/{consultation.slug}/results/ideas/{idea.number}/",
        f"/actions/cause/{consultation.cause.slug}/",
        "/accounts/login/",
    ]
    page, errors = open_page(browser)
    page.context.add_cookies([{"name": "django_language", "value": language, "url": base}])
    found = {}
    for path in paths:
        page.goto(base + path)
        found[path] = axe(page)
    page.goto(f"{base}/engine/{consultation.slug}/results/")
    assert page.locator("#weighting-title").count() == 1  # audited above

    # the sequence: its first card, then the card once voted (how people voted) and the end card
    page.goto(f"{base}/c/{consultation.slug}/vote/")
    page.locator("#seq-card form button[type=submit]").first.click()
    page.locator("[data-card=vote]").wait_for()
    found["sequence: a card"] = axe(page)
    page.keyboard.press("a")
    page.locator("[data-card=qualify]").wait_for()
    found["sequence: voted"] = axe(page)
    page.keyboard.press("Enter")
    page.locator("[data-card=vote]").wait_for()
    page.keyboard.press("d")
    page.locator("[data-card=qualify]").wait_for()
    page.keyboard.press("Enter")
    page.locator("[data-card=demographics]").wait_for()
    found["sequence: who takes part"] = axe(page)
    page.fill("#seq-card input[name=postal_area]", "<b>?</b>")
    page.locator("#seq-card button.primary").click()
    page.locator("#postal-area-error").wait_for()
    found["sequence: who takes part, refused"] = axe(page)
    page.locator("#seq-card button[name=decline]").click()
    page.locator("[data-card=vote]").wait_for()

    # a citizen asks for the results by email (the box HTMX swaps) and reads their data
    user = UserFactory()
    page, errors_signed_in = open_page(browser)
    page.context.add_cookies([{"name": "django_language", "value": language, "url": base}])
    sign_in(page, base, user.email, f"/c/{consultation.slug}/")
    page.locator("#results-alert button").click()
    page.locator("#results-alert [name=stop]").wait_for(state="attached")
    found["results alert: asked"] = axe(page)
    page.goto(f"{base}/accounts/my-data/")
    found["my data"] = axe(page)

    # a partner's editor takes a position on a proposal (the box HTMX swaps), then its page
    partner = PartnerFactory()
    editor = UserFactory()
    PartnerMembership.objects.create(partner=partner, user=editor)
    page, errors_partner = open_page(browser)
    page.context.add_cookies([{"name": "django_language", "value": language, "url": base}])
    sign_in(page, base, editor.email, f"/c/{consultation.slug}/p/{proposal.pk}/")
    found["proposal: a partner's position form"] = axe(page)
    page.locator("#partner-positions input[value=agree]").check()
    page.locator("#partner-positions textarea").fill("Nous le demandons depuis longtemps.")
    page.locator("#partner-positions button[type=submit]").first.click()
    page.locator("#partner-positions button[name=withdraw]").wait_for()
    found["proposal: a partner's position published"] = axe(page)
    page.goto(f"{base}/partners/{partner.slug}/")
    found["partner page with its positions"] = axe(page)
    its_idea = IdeaMembership.objects.get(run=run, proposal=proposal).idea
    page.goto(f"{base}/engine/{consultation.slug}/results/ideas/{its_idea.number}/")
    assert page.locator("#idea-positions-title").count() == 1
    found["idea page with the partners' positions"] = axe(page)
    # the editor withdraws it: HTMX sends the button that was clicked
    page.goto(f"{base}/c/{consultation.slug}/p/{proposal.pk}/")
    page.locator("#partner-positions button[name=withdraw]").click()
    page.locator("#partner-positions button[name=withdraw]").wait_for(state="detached")
    assert page.locator("#partner-positions .position-list li").count() == 0

    assert {where: v for where, v in found.items() if v} == {}
    assert errors == [] and errors_signed_in == [] and errors_partner == []
