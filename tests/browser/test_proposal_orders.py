"""A visitor sorts a consultation's proposals at random and by controversy, and pages through.

Headless Chromium (/usr/bin/chromium) through Playwright against pytest-django's live server;
the list is swapped by HTMX. Screenshot: tests/artifacts/orders-random-page-2.png.
"""

import pytest

from consultations.services import participant_for_session, vote_cast

from ..factories import ConsultationFactory, ProposalFactory
from .conftest import ARTIFACTS, open_page

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def consultation():
    consultation = ConsultationFactory(slug="orders")
    proposals = [
        ProposalFactory(consultation=consultation, content=f"Il faut la proposition numéro {i:02d}")
        for i in range(25)
    ]
    for proposal, (agree, disagree) in zip(proposals[:3], [(1, 1), (3, 3), (4, 1)], strict=True):
        for key, voters in (("agree", agree), ("disagree", disagree)):
            for n in range(voters):
                vote_cast(
                    participant=participant_for_session(session_key=f"{proposal.pk}{key}{n}"),
                    proposal=proposal,
                    key=key,
                )
    return consultation


def _listed(page) -> list[str]:
    page.wait_for_selector(".htmx-request, .htmx-settling", state="detached")
    return page.locator("#proposal-list li.proposal > a").all_inner_texts()


def _swap(page, action, *, sort: str):
    """Do ``action`` and wait for the list it asks HTMX for."""
    with page.expect_response(lambda r: f"sort={sort}" in r.url and r.status == 200):
        action()
    return _listed(page)


def test_random_then_controversial_orders_through_htmx(browser, live_server, consultation):
    page, errors = open_page(browser)
    page.goto(f"{live_server.url}{consultation.get_absolute_url()}")
    newest = _listed(page)

    first = _swap(page, lambda: page.select_option("#sort", "random"), sort="random")
    assert "Page 1 of 2" in page.locator("#proposal-list .pager").inner_text()
    second = _swap(
        page, lambda: page.click("#proposal-list .pager a:has-text('Next')"), sort="random"
    )
    assert "Page 2 of 2" in page.locator("#proposal-list .pager").inner_text()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "orders-random-page-2.png"), full_page=True)
    assert len(first) == 20 and len(second) == 5
    assert len(set(first + second)) == 25  # every proposal once across the two pages
    assert first != newest[:20]
    again = _swap(
        page, lambda: page.click("#proposal-list .pager a:has-text('Previous')"), sort="random"
    )
    assert again == first  # the visitor's order stays theirs

    top = _swap(page, lambda: page.select_option("#sort", "controversial"), sort="controversial")
    # balances 3, then 1 with 5 votes (4 agree, 1 disagree), then 1 with 2 votes
    assert top[:3] == [
        "Il faut la proposition numéro 01",
        "Il faut la proposition numéro 02",
        "Il faut la proposition numéro 00",
    ]
    assert not errors, errors
