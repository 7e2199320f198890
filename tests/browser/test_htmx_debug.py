"""With DEBUG on (a newcomer's `make run`), HTMX error messages still land in the page.

django-htmx adds a debug script that shows any 4xx response as a whole page; the project's
messages (a 400 naming its place with HX-Retarget) must stay in #htmx-alerts instead.
"""

import pytest

from consultations.models import Vote

from ..factories import ConsultationFactory, ProposalFactory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_a_refused_vote_shows_its_message_in_the_page_with_debug_on(browser, live_server, settings):
    settings.DEBUG = True
    proposal = ProposalFactory(
        consultation=ConsultationFactory(), content="Il faut des concerts gratuits en été"
    )
    page = browser.new_page(locale="en-GB")
    page.goto(f"{live_server.url}{proposal.get_absolute_url()}")
    assert page.locator("script[data-debug]").count() == 1  # django-htmx's debug script is there
    page.evaluate("document.querySelector('#vote-box button[value=disagree]').value = 'maybe'")
    page.click('#vote-box button[value="maybe"]')
    page.wait_for_selector("#htmx-alerts .alert")
    assert "agree, disagree or neutral" in page.locator("#htmx-alerts").inner_text()
    assert "Il faut des concerts gratuits en été" in page.locator("blockquote").inner_text()
    assert page.locator("link[rel=stylesheet]").count() == 1  # still the whole page
    assert not Vote.objects.exists()
