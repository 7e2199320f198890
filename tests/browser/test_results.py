"""A visitor browses a consultation's results and splits the agreement by age range.

Headless Chromium (/usr/bin/chromium) through Playwright against pytest-django's live server;
the engine runs for real (eager Celery, hashing embedder). Screenshots go to tests/artifacts/.
"""

import re

import pytest

from consensus import services
from consensus.models import EngineRun, OpinionGroup
from consultations.models import Participant

from ..consensus.engine_data import HASHING, add_votes, consultation_with_themes
from ..factories import UserFactory
from .conftest import ARTIFACTS, open_page, sign_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def published(settings):
    settings.CONSENSUS_MIN_SEGMENT_SIZE = 10
    consultation = consultation_with_themes(
        question="Comment rendre la ville plus agréable ?", slug="ville-agreable"
    )
    add_votes(consultation)
    voters = list(
        Participant.objects.filter(session_key__startswith="ville-agreable-voter-").order_by("pk")
    )
    Participant.objects.filter(pk__in=[p.pk for p in voters[:20]]).update(age_range="25-34")
    Participant.objects.filter(pk__in=[p.pk for p in voters[20:32]]).update(age_range="35-49")
    Participant.objects.filter(pk__in=[p.pk for p in voters[32:35]]).update(age_range="65+")
    # transaction=True: the run's on-commit tasks run eagerly as each transaction commits
    run = services.engine_run_start(consultation=consultation, kind="full", **HASHING)
    run.refresh_from_db()
    assert run.status == EngineRun.Status.DONE, run.error
    return consultation, run


def test_visitor_browses_results_and_filters_a_segment(live_server, browser, published):
    ARTIFACTS.mkdir(exist_ok=True)
    consultation, run = published
    page = browser.new_page(viewport={"width": 1200, "height": 900}, locale="en-US")
    errors = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))

    page.goto(f"{live_server.url}/c/{consultation.slug}/")
    page.get_by_role("link", name=re.compile("results", re.I)).first.click()
    page.wait_for_url(re.compile(r"/engine/ville-agreable/results/$"))
    assert page.locator("h1").inner_text() == "Results"

    # live counters: loaded by HTMX (the page never waits for them), then polled while open
    page.locator("#live-counters [data-counter=participants]").wait_for()
    counters = page.locator("#live-counters")
    assert counters.get_attribute("hx-trigger") == "every 15s"
    assert counters.locator("[data-counter=participants]").inner_text() == "45"

    # key ideas with their vote-share bars, opinion map with its legend and one card per group
    assert page.locator("#ideas-consensual .idea-card").count() >= 1
    assert page.locator(".share-chart svg[role=img]").count() >= 1
    opinion_map = page.locator(".opinion-map svg[role=img]")
    assert opinion_map.is_visible()
    assert opinion_map.bounding_box()["height"] > 150
    n_groups = OpinionGroup.objects.filter(run=run).count()
    assert page.locator(".group-card").count() == n_groups
    assert page.locator(".map-legend > span").count() >= n_groups
    page.screenshot(path=ARTIFACTS / "results-page.png", full_page=True)
    opinion_map.screenshot(path=ARTIFACTS / "results-opinion-map.png")

    # split by age range: HTMX swaps the table in, small segments stay hidden
    page.select_option("#dimension", "age_range")
    table = page.locator("#segments table")
    table.wait_for()
    headers = table.locator("thead th").all_inner_texts()
    assert headers[1:] == ["25–34", "35–49", "65 and over"]
    first_row = table.locator("tbody tr").first.locator("td").all_inner_texts()
    assert first_row[0].endswith("%") and first_row[1].endswith("%")
    assert first_row[2] == "too few participants"
    assert page.url.endswith("/results/")  # swapped in place, no navigation
    page.locator("#segments-title").scroll_into_view_if_needed()
    page.screenshot(path=ARTIFACTS / "results-segment-age.png", full_page=False)

    # the method card names the run that produced what is shown
    assert f"Run #{run.pk}," in page.locator("#method-title").locator("..").inner_text()
    assert errors == []


def test_visitor_opens_an_idea_and_reads_all_its_proposals(live_server, browser, published):
    ARTIFACTS.mkdir(exist_ok=True)
    consultation, run = published
    page = browser.new_page(viewport={"width": 1200, "height": 900}, locale="en-US")
    page.goto(f"{live_server.url}/engine/{consultation.slug}/results/")
    card = page.locator("#ideas-all .idea-card").first
    title = card.locator("h3").inner_text()
    card.locator("h3 a").click()
    page.wait_for_url(re.compile(r"/results/ideas/\d+/$"))
    assert page.locator(".idea-card h3").inner_text() == title
    idea = run.ideas.get(label=title)
    members = page.locator(".idea-members > li")
    assert members.count() == idea.size  # every proposal, each linked to its page
    assert members.first.locator("a").get_attribute("href").startswith(f"/c/{consultation.slug}/p/")
    page.screenshot(path=ARTIFACTS / "results-idea.png", full_page=True)


def test_visitor_reads_the_themes_and_opens_the_ideas_of_one(live_server, browser, published):
    ARTIFACTS.mkdir(exist_ok=True)
    consultation, run = published
    page = browser.new_page(viewport={"width": 1200, "height": 900}, locale="en-US")
    page.goto(f"{live_server.url}/engine/{consultation.slug}/results/")
    page.get_by_role("link", name="Themes", exact=True).click()
    rows = page.locator("#themes .theme-row")
    assert rows.count() == run.themes.count() == 2
    bar = rows.first.locator(".theme-bar")
    assert bar.is_visible() and bar.bounding_box()["width"] > 300  # the largest theme's full bar
    page.locator("#themes").screenshot(path=ARTIFACTS / "results-themes.png")

    name = rows.first.locator("h3").inner_text()
    rows.first.locator("h3 a").click()
    page.wait_for_url(re.compile(r"/results/ideas/\?theme=\d+$"))
    assert page.locator("h1").inner_text() == f"Theme: {name}"
    theme = run.themes.get(number=int(page.url.rsplit("=", 1)[1]))
    assert page.locator(".idea-card").count() == theme.ideas.filter(size__gt=0).count()
    page.screenshot(path=ARTIFACTS / "results-theme.png", full_page=True)


def sideways(page) -> int:
    """How far the page reaches past the screen's right edge, in CSS pixels (0: it does not)."""
    return page.evaluate("document.documentElement.scrollWidth - window.innerWidth")


def test_nobody_on_a_phone_scrolls_sideways(live_server, browser, published):
    """A citizen and a staff member signed in with long e-mail addresses, on a 390 px wide phone:
    the header wraps, forms and tables stay within the screen (a table scrolls in its own box)."""
    consultation, run = published
    slug = consultation.slug
    pages = {
        "citizen": [
            "/",
            f"/c/{slug}/",
            f"/c/{slug}/vote/",
            f"/engine/{slug}/results/",
            f"/engine/{slug}/results/ideas/0/",
            f"/causes/{consultation.cause.slug}/",
            "/accounts/my-data/",
        ],
        "staff": [f"/engine/{slug}/", f"/engine/{slug}/runs/{run.pk}/?view=list", "/moderation/"],
    }
    for who, paths in pages.items():
        email = f"camille.dupont-lefebvre.{who}@association-culture-pour-tous.example.org"
        UserFactory(email=email, is_staff=who == "staff", is_superuser=who == "staff")
        page, errors = open_page(browser, width=390, height=844)
        sign_in(page, live_server.url, email, paths[0])
        for path in paths:
            assert page.goto(f"{live_server.url}{path}").ok, (who, path)
            assert sideways(page) == 0, (who, path, sideways(page))
        page.screenshot(path=str(ARTIFACTS / f"phone-{who}.png"), full_page=True)
        assert not errors
        page.context.close()
