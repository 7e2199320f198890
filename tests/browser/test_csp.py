"""The Content-Security-Policy breaks nothing: a real browser reports no violation while HTMX
searches, suggests similar proposals, runs a sequence and votes, and the admin works.

Chromium reports every blocked inline script or style as a ``securitypolicyviolation`` event and
a console error; both are collected on every page.
"""

import pytest
from django.contrib.auth.models import Permission

from consultations.models import Vote

from ..factories import ConsultationFactory, ProposalFactory, UserFactory
from .conftest import ARTIFACTS

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

WATCH = """
window.__csp = [];
document.addEventListener('securitypolicyviolation', function (e) {
  window.__csp.push(e.violatedDirective + ' ' + (e.blockedURI || 'inline') + ' ' + e.sourceFile + ':' + e.lineNumber);
});
"""


def test_pages_and_htmx_work_under_the_policy(browser, live_server):
    expect = pytest.importorskip("playwright.sync_api").expect
    consultation = ConsultationFactory(sequence_size=2, slug="csp-check")
    for text in ("Il faut ouvrir les musées le soir", "Il faut des concerts gratuits en été"):
        ProposalFactory(consultation=consultation, content=text)
    staff = UserFactory(email="staff@example.org", is_staff=True, is_superuser=True)
    staff.user_permissions.add(Permission.objects.get(codename="moderate_proposal"))

    context = browser.new_context(locale="en-US", viewport={"width": 1100, "height": 900})
    context.add_init_script(WATCH)
    page = context.new_page()
    page.set_default_timeout(30_000)
    console = []
    page.on("console", lambda m: m.type == "error" and console.append(m.text))
    violations = []

    def collect():
        violations.extend(page.evaluate("window.__csp || []"))

    base = live_server.url
    page.goto(f"{base}{consultation.get_absolute_url()}")
    # HTMX search (hx-get on input) and similar proposals while typing.
    page.fill("#q", "musées")
    # expect(), not wait_for_function: the policy forbids eval, even to Playwright.
    expect(page.locator("#proposal-list li.proposal")).to_have_count(1)
    page.fill("#id_content", "ouvrir les musées le soir")
    page.wait_for_selector("#similar li")
    collect()
    # A sequence over HTMX: start, vote on both cards.
    page.goto(f"{base}/c/{consultation.slug}/vote/")
    page.click("#seq-card form button[type=submit]")
    for _ in range(2):
        page.wait_for_selector('#seq-card[data-card="vote"]')
        page.click("#seq-card button[name=key][value=agree]")
        page.wait_for_selector('#seq-card[data-card="qualify"]')
        page.click('#seq-card form[action$="/vote/next/"] button[type=submit]')
    page.wait_for_selector('#seq-card[data-card="end"]')
    collect()
    assert Vote.objects.count() == 2
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "csp-sequence-end.png"), full_page=True)
    # The admin, styled and scripted from its static files.
    page.goto(f"{base}/admin/login/?next=/admin/")
    page.fill("#id_username", "staff@example.org")
    page.fill("#id_password", "correct horse battery")
    page.click("input[type=submit]")
    page.wait_for_url(f"{base}/admin/")
    page.goto(f"{base}/admin/consultations/proposal/")
    page.wait_for_selector("#result_list")
    collect()
    page.screenshot(path=str(ARTIFACTS / "csp-admin.png"), full_page=True)
    context.close()
    assert not violations, violations
    assert not [m for m in console if "Content Security Policy" in m], console
