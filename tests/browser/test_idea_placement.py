"""Staff move proposals from one idea to another on the published run, in a real browser.

Headless Chromium (/usr/bin/chromium) through Playwright against the live server; screenshots go
to tests/artifacts/.
"""

import re

import pytest

from consensus import services
from consensus.models import Idea, IdeaMembership, IdeaPlacement

from ..consensus.engine_data import HASHING, consultation_with_themes
from ..factories import ProposalFactory, UserFactory
from .conftest import ARTIFACTS, sign_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def published_themes(*extra):
    """A consultation of 4 themes (and the ``extra`` proposals), its published ideas run, and a
    staff user to sign in."""
    consultation = consultation_with_themes()
    for text in extra:
        ProposalFactory(consultation=consultation, content=text)
    run = services.engine_run_start(consultation=consultation, kind="ideas", **HASHING)
    run.refresh_from_db()  # eager Celery: the run is done
    UserFactory(email="staff@example.org", is_staff=True)
    ARTIFACTS.mkdir(exist_ok=True)
    return consultation, run


def idea_about(run, keyword):
    (idea,) = [i for i in Idea.objects.filter(run=run) if keyword in i.keywords]
    return idea


def rename(page, number, label):
    """Staff name the idea from its page ("Rename"); the page comes back with the new title."""
    page.get_by_text("Rename", exact=True).click()
    page.fill("#idea-label", label)
    page.get_by_role("button", name="Save the label").click()
    page.wait_for_url(re.compile(rf"/ideas/{number}/$"))
    assert page.locator("h1").inner_text() == label


def test_staff_move_two_proposals_to_another_idea(live_server, browser):
    consultation, run = published_themes()
    cycling, museums = idea_about(run, "cyclables"), idea_about(run, "musées")
    page = browser.new_page(viewport={"width": 1280, "height": 1000}, locale="en-US")

    sign_in(
        page, live_server.url, "staff@example.org", f"/engine/{consultation.slug}/runs/{run.pk}/"
    )

    page.locator(f"a[href$='/runs/{run.pk}/ideas/{cycling.number}/']").click()
    page.wait_for_url(re.compile(rf"/ideas/{cycling.number}/$"))
    boxes = page.locator("input[name=proposals]")
    assert boxes.count() == cycling.size
    ticked = [int(boxes.nth(i).get_attribute("value")) for i in (0, 1)]
    boxes.nth(0).check()
    boxes.nth(1).check()
    page.select_option("select[name=idea]", str(museums.number))
    page.screenshot(path=ARTIFACTS / "engine-idea-move.png", full_page=True)
    page.get_by_role("button", name="Move").press("Enter")
    page.wait_for_load_state()

    assert "2 proposals moved to" in page.locator("body").inner_text()
    assert page.locator("input[name=proposals]").count() == cycling.size - 2
    assert set(
        IdeaMembership.objects.filter(run=run, proposal_id__in=ticked).values_list(
            "idea_id", flat=True
        )
    ) == {museums.pk}
    assert IdeaPlacement.objects.filter(run=run).count() == 2
    page.screenshot(path=ARTIFACTS / "engine-idea-moved.png", full_page=True)

    # the idea they joined lists them among its own, described again around its new centre
    page.goto(f"{live_server.url}/engine/{consultation.slug}/runs/{run.pk}/ideas/{museums.number}/")
    rows = page.locator("input[name=proposals]")
    assert rows.count() == museums.size + 2
    listed = [int(rows.nth(i).get_attribute("value")) for i in range(rows.count())]
    assert set(ticked) <= set(listed)
    assert page.get_by_text("among the most central").count() == 3
    page.screenshot(path=ARTIFACTS / "engine-idea-joined.png", full_page=True)
    assert page.locator(".notice").count() == 0  # eager Celery: the refresh already ran

    # while a refresh is pending (a busy worker), the page says the description is coming
    Idea.objects.filter(pk=museums.pk).update(members_changed=True)
    page.reload()
    assert "being computed again" in page.locator(".notice").inner_text()
    page.screenshot(path=ARTIFACTS / "engine-idea-refreshing.png")


def test_staff_merge_an_idea_into_another(live_server, browser):
    consultation, run = published_themes()
    trees, cycling = idea_about(run, "arbres"), idea_about(run, "cyclables")
    page = browser.new_page(viewport={"width": 1280, "height": 1000}, locale="en-US")
    sign_in(
        page,
        live_server.url,
        "staff@example.org",
        f"/engine/{consultation.slug}/runs/{run.pk}/ideas/{trees.number}/",
    )

    page.select_option("select[name=into]", str(cycling.number))
    page.locator("#merge-title").scroll_into_view_if_needed()
    page.screenshot(path=ARTIFACTS / "engine-idea-merge.png", full_page=True)
    page.get_by_role("button", name="Merge").press("Enter")
    page.wait_for_url(re.compile(rf"/ideas/{cycling.number}/$"))

    assert "are moving into this idea" in page.locator("body").inner_text()
    assert page.locator("input[name=proposals]").count() == cycling.size + trees.size
    assert Idea.objects.get(pk=trees.pk).size == 0
    page.screenshot(path=ARTIFACTS / "engine-idea-merged.png", full_page=True)

    # staff name the merged idea on its page; the public results show the new name
    rename(page, cycling.number, "Des pistes cyclables et des arbres en ville")
    meta = page.locator("p.meta", has_text="closest to the idea's centre first")
    assert "named by staff" in meta.inner_text()
    page.screenshot(path=ARTIFACTS / "engine-idea-renamed.png")

    # the public list of ideas no longer shows the empty one
    page.goto(f"{live_server.url}/engine/{consultation.slug}/results/ideas/")
    assert page.locator(f"a[href$='/results/ideas/{trees.number}/']").count() == 0
    assert page.locator(f"a[href$='/results/ideas/{cycling.number}/']").count() >= 1
    assert "Des pistes cyclables et des arbres en ville" in page.locator("body").inner_text()
    # an old link to the emptied idea says why it is gone
    gone = page.goto(f"{live_server.url}/engine/{consultation.slug}/results/ideas/{trees.number}/")
    assert gone.status == 404
    assert page.locator("h1").inner_text() == "Page not found"
    assert "Staff moved every proposal of this idea" in page.locator("[role=alert]").inner_text()
    page.screenshot(path=ARTIFACTS / "results-idea-gone.png")


def test_staff_split_proposals_out_into_a_new_idea_and_name_it(live_server, browser):
    consultation, run = published_themes()
    cycling = idea_about(run, "cyclables")
    page = browser.new_page(viewport={"width": 1280, "height": 1000}, locale="en-US")
    sign_in(
        page,
        live_server.url,
        "staff@example.org",
        f"/engine/{consultation.slug}/runs/{run.pk}/ideas/{cycling.number}/",
    )

    boxes = page.locator("input[name=proposals]")
    ticked = [int(boxes.nth(i).get_attribute("value")) for i in (1, 2)]
    boxes.nth(1).check()
    boxes.nth(2).check()
    page.select_option("select[name=idea]", "new")
    page.get_by_role("button", name="Move").press("Enter")
    page.wait_for_load_state()

    split = Idea.objects.get(run=run, created_by_staff=True)
    assert page.url.endswith(f"/ideas/{split.number}/")
    assert "2 proposals split out into this new idea" in page.locator("body").inner_text()
    assert "split out by staff" in page.locator("p.meta").first.inner_text()
    listed = page.locator("input[name=proposals]")
    assert sorted(int(listed.nth(i).get_attribute("value")) for i in (0, 1)) == sorted(ticked)
    page.screenshot(path=ARTIFACTS / "engine-idea-split.png", full_page=True)

    rename(page, split.number, "Des pistes cyclables sûres")
    # the run's page lists it among the ideas
    page.goto(f"{live_server.url}/engine/{consultation.slug}/runs/{run.pk}/")
    assert page.locator(f"a[href$='/runs/{run.pk}/ideas/{split.number}/']").count() >= 1
    assert "split out by staff" in page.locator("body").inner_text()
    page.screenshot(path=ARTIFACTS / "engine-run-with-split.png", full_page=True)


def test_staff_name_a_theme_on_the_run_page_and_visitors_see_it(live_server, browser):
    consultation, run = published_themes()
    theme = run.themes.order_by("number").first()
    page = browser.new_page(viewport={"width": 1280, "height": 1000}, locale="en-US")
    sign_in(
        page, live_server.url, "staff@example.org", f"/engine/{consultation.slug}/runs/{run.pk}/"
    )
    cell = page.locator(f"#theme-title-{theme.number}")
    cell.get_by_text("Rename", exact=True).click()
    cell.locator("input[name=label]").fill("Se déplacer et se cultiver")
    cell.get_by_role("button", name="Save the label").click()
    # HTMX swaps the cell in place: the page does not reload
    page.locator(f"#theme-title-{theme.number}", has_text="named by staff").wait_for()
    assert page.url.endswith(f"/runs/{run.pk}/")
    page.locator("#themes + table").screenshot(path=ARTIFACTS / "engine-theme-renamed.png")
    theme.refresh_from_db()
    assert (theme.label, theme.named_by_staff) == ("Se déplacer et se cultiver", True)

    page.goto(f"{live_server.url}/engine/{consultation.slug}/results/")
    assert page.locator("#themes .theme-row h3", has_text="Se déplacer et se cultiver").count() == 1


def test_staff_find_the_proposals_that_say_some_words_and_move_them_all(live_server, browser):
    """From the run page, staff look for words, follow an idea that holds some of them, keep
    only those proposals, tick them all at once and move them to the idea they belong to."""
    bike = "Des pistes cyclables sécurisées pour aller à vélo"
    consultation, run = published_themes(f"{bike} au musée", f"{bike} jusqu'au musée du vin")
    cycling, museums = idea_about(run, "cyclables"), idea_about(run, "musées")
    saying = IdeaMembership.objects.filter(run=run, proposal__content__icontains="musée")
    assert saying.filter(idea=cycling).count() == 2, "the hashing embedder puts them with bikes"
    page = browser.new_page(viewport={"width": 1280, "height": 1000}, locale="en-US")
    sign_in(
        page, live_server.url, "staff@example.org", f"/engine/{consultation.slug}/runs/{run.pk}/"
    )

    page.fill("#proposal-search", "musée")
    page.get_by_role("button", name="Find").click()
    page.wait_for_url(re.compile(r"\?q=mus%C3%A9e#ideas$"))
    cards = page.locator("ol.ideas > li")
    assert cards.count() == 2  # the museums' idea, whose 12 proposals say it, first
    assert cards.first.locator(f"#idea-title-{museums.number}").count() == 1
    page.screenshot(path=ARTIFACTS / "engine-run-search.png")

    cards.nth(1).get_by_role("link", name="2 of its proposals say “musée”").click()
    page.wait_for_url(re.compile(rf"/ideas/{cycling.number}/\?q=mus%C3%A9e$"))
    boxes = page.locator("input[name=proposals]")
    assert boxes.count() == 2
    page.get_by_role("button", name="Tick every proposal of this page").click()
    assert boxes.nth(0).is_checked() and boxes.nth(1).is_checked()
    page.select_option("select[name=idea]", str(museums.number))
    page.screenshot(path=ARTIFACTS / "engine-idea-search-ticked.png", full_page=True)
    page.get_by_role("button", name="Move", exact=True).press("Enter")
    page.wait_for_load_state()

    assert "2 proposals moved to" in page.locator("body").inner_text()
    assert "No proposal here says “musée”." in page.locator("body").inner_text()  # same search
    assert not saying.filter(idea=cycling).exists()
    assert saying.filter(idea=museums).count() == 14


def test_staff_read_the_ideas_as_a_compact_list_and_search_it(live_server, browser):
    consultation, run = published_themes()
    ideas = Idea.objects.filter(run=run)
    page = browser.new_page(viewport={"width": 1280, "height": 1000}, locale="en-US")
    sign_in(
        page, live_server.url, "staff@example.org", f"/engine/{consultation.slug}/runs/{run.pk}/"
    )

    page.get_by_role("link", name="Compact list").click()
    page.wait_for_url(re.compile(r"\?view=list#ideas$"))
    rows = page.locator("table.ideas-compact tbody tr")
    assert rows.count() == ideas.count() and page.locator("ol.ideas").count() == 0
    page.screenshot(path=ARTIFACTS / "engine-run-compact.png", full_page=True)

    # a search keeps the list; each line says how many of its proposals say the words
    page.fill("#proposal-search", "partout")
    page.get_by_role("button", name="Find").click()
    page.wait_for_url(re.compile(r"q=partout"))
    assert "view=list" in page.url and rows.count() == 2
    assert set(rows.locator("td:last-child").all_inner_texts()) == {"1"}
    rows.first.locator("td:last-child a").click()
    page.wait_for_url(re.compile(r"/ideas/\d+/\?q=partout$"))
    assert page.locator("input[name=proposals]").count() == 1
