"""A moderator goes through ten proposals with the keyboard only.

A accept, R then a reason's key to refuse, P postpone, N skip to the next, E then Enter to
correct the spelling. The moderator is assigned to one consultation and never sees the other
one's proposals. Screenshots of each step go to tests/artifacts/moderation-*.png.
"""

from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission
from django.utils import timezone

from accounts.models import AuditEntry
from consultations.classifier import classifier_train
from consultations.models import ModeratorAssignment, Proposal, ProposalEdit

from ..consultations.moderation_helpers import run_with_ideas
from ..factories import ConsultationFactory, ProposalFactory, UserFactory
from .conftest import ARTIFACTS, open_page

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PASSWORD = "correct horse battery"
TEXTS = [
    "Il faut ouvrir les bibliothèques le dimanche",
    "Achetez nos montres en promo sur www.montres-pas-cheres.com",
    "Il faut des pistes cyclabes entre les villages",  # misspelt: corrected, then accepted
    "Il faut rendre les musées gratuits pour les moins de 26 ans",
    "Il faut un concert gratuit chaque mois dans chaque quartier",
    "vous êtes tous des incapables",
    "Il faut planter des arbres dans les cours d'école",
    "Il faut baisser le prix des billets de théâtre pour les étudiants",
    "Il faut des ateliers de musique dans les maisons de retraite",
    "Il faut créer un pass culture pour les seniors",
]


CIVIC = [
    "ouvrir les piscines le soir",
    "des concerts gratuits en été",
    "rénover les salles des fêtes",
    "des cours de théâtre au collège",
    "un cinéma en plein air",
]
ADS = [
    "Achetez nos montres en promo sur www.bonnes-affaires{}.com",
    "Promo -50% code PROMO{} sur notre boutique en ligne",
    "Meilleur prix garanti, commandez sur shop{}.fr",
]


@pytest.fixture
def world():
    mine = ConsultationFactory(question="Comment rendre la culture accessible à tous ?")
    other = ConsultationFactory(question="Autre consultation")
    start = timezone.now() - timedelta(hours=2)
    proposals = [
        ProposalFactory(
            consultation=mine,
            content=text,
            status="pending",
            created_at=start + timedelta(minutes=i),
            author=UserFactory(),
        )
        for i, text in enumerate(TEXTS)
    ]
    hidden = ProposalFactory(
        consultation=other,
        content="Il faut une proposition que ce modérateur ne voit jamais",
        status="pending",
        created_at=start - timedelta(days=1),  # the oldest of all
    )
    # An engine run with ideas (hashing embeddings) and a classifier trained on past decisions,
    # so the page shows near-duplicates, the idea a proposal would join and the classifier's guess.
    run_with_ideas(
        mine,
        [
            (
                "Bibliothèques ouvertes le dimanche",
                [
                    "Il faut ouvrir les bibliothèques le dimanche après-midi",
                    "Il faut des bibliothèques ouvertes tous les dimanches",
                    "Il faut ouvrir les médiathèques le dimanche",
                ],
            ),
            (
                "Musées gratuits pour les jeunes",
                [
                    "Il faut rendre les musées gratuits pour les jeunes",
                    "Il faut la gratuité des musées pour les étudiants",
                    "Il faut des musées gratuits le premier dimanche du mois",
                ],
            ),
        ],
    )
    for i in range(30):
        ProposalFactory(
            consultation=mine,
            content=f"Il faut {CIVIC[i % len(CIVIC)]} dans la ville numéro {i}",
            status="accepted",
            created_at=start - timedelta(days=2),
        )
    for i in range(12):
        ProposalFactory(
            consultation=mine,
            content=ADS[i % len(ADS)].format(i),
            status="refused",
            refusal_reason="advertising",
            created_at=start - timedelta(days=2),
        )
    classifier_train(consultation=mine)
    moderator = UserFactory(email="moderator@example.org", is_staff=True)
    moderator.user_permissions.add(Permission.objects.get(codename="moderate_proposal"))
    ModeratorAssignment.objects.create(moderator=moderator, consultation=mine)
    return proposals, hidden


def idle(page):
    # A selector rather than wait_for_function: the site's CSP forbids eval, even to Playwright.
    page.wait_for_selector(".htmx-request, .htmx-settling, .htmx-swapping", state="detached")


def press(page, key):
    """Press a key once the page is idle (the script ignores shortcuts while a request runs)."""
    idle(page)
    page.keyboard.press(key)


def shot(page, name):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"moderation-{name}.png"), full_page=True)


def showing(page, text):
    page.wait_for_selector(f'#queue blockquote:has-text("{text}")')
    idle(page)


def test_moderate_ten_proposals_with_the_keyboard(browser, live_server, world):
    proposals, hidden = world
    page, errors = open_page(browser, width=1200)

    page.goto(f"{live_server.url}/moderation/")
    page.wait_for_url("**/accounts/login/**")
    page.fill('input[name="login"]', "moderator@example.org")
    page.fill('input[name="password"]', PASSWORD)
    page.click('#main form[action*="/login/"] button[type="submit"]')
    page.wait_for_url("**/moderation/**")
    showing(page, TEXTS[0])
    assert "10 proposals waiting" in page.locator("#queue").inner_text()
    assert hidden.content not in page.content()  # another consultation's proposal, older
    queue = page.locator("#queue").inner_text()
    assert "Bibliothèques ouvertes le dimanche" in queue  # the idea it would join
    assert "Il faut ouvrir les bibliothèques le dimanche après-midi" in queue  # a near-duplicate
    shot(page, "01-queue")

    def reason_key(reason):
        return page.get_attribute(f'button[name="reason"][value="{reason}"]', "aria-keyshortcuts")

    # 1 accept
    press(page, "a")
    showing(page, TEXTS[1])
    # 2 refuse: advertising
    assert "likely refusal" in page.locator('[data-testid="prediction"]').inner_text()
    press(page, "r")
    page.wait_for_selector('button[name="reason"][value="advertising"]', state="visible")
    shot(page, "02-refuse-reasons")
    press(page, reason_key("advertising"))
    showing(page, TEXTS[2])
    # 3 correct the spelling, then accept
    press(page, "e")
    field = page.locator('#queue input[name="content"]')
    field.wait_for(state="visible")
    page.wait_for_selector('#queue input[name="content"]:focus', timeout=5000)  # the focus moves on "toggle"
    assert page.evaluate("document.activeElement.name") == "content"
    field.fill("Il faut des pistes cyclables entre les villages")
    shot(page, "03-spelling")
    press(page, "Enter")
    page.wait_for_selector('#queue .alert.success:has-text("Spelling corrected")')
    page.wait_for_selector("#queue .edits ins")
    shot(page, "04-spelling-saved")
    press(page, "a")
    showing(page, TEXTS[3])
    # 4 skip to the next one (it stays pending, for someone else or later)
    press(page, "n")
    showing(page, TEXTS[4])
    # 5 postpone
    press(page, "p")
    showing(page, TEXTS[5])
    # 6 refuse: insulting; Escape first closes the panel without deciding
    press(page, "r")
    page.wait_for_selector('button[name="reason"][value="insulting"]', state="visible")
    press(page, "Escape")
    page.wait_for_selector('button[name="reason"][value="insulting"]', state="hidden")
    assert Proposal.objects.get(content=TEXTS[5]).status == "pending"
    press(page, "r")
    page.wait_for_selector('button[name="reason"][value="insulting"]', state="visible")
    press(page, reason_key("insulting"))
    showing(page, TEXTS[6])
    # 7 to 10 accept
    for i in range(6, 10):
        showing(page, TEXTS[i])
        press(page, "a")
    page.wait_for_selector('#queue:has-text("You skipped 1 proposal")')
    shot(page, "05-after-ten")
    # The skipped one comes back when asked.
    page.click('#queue a:has-text("Show them again")')
    showing(page, TEXTS[3])
    shot(page, "06-skipped-back")

    status = {
        p.content: p.status for p in Proposal.objects.filter(pk__in=[p.pk for p in proposals])
    }
    fixed = "Il faut des pistes cyclables entre les villages"
    assert status == {
        TEXTS[0]: "accepted",
        TEXTS[1]: "refused",
        fixed: "accepted",
        TEXTS[3]: "pending",
        TEXTS[4]: "postponed",
        TEXTS[5]: "refused",
        **{TEXTS[i]: "accepted" for i in range(6, 10)},
    }
    assert Proposal.objects.get(content=TEXTS[1]).refusal_reason == "advertising"
    assert Proposal.objects.get(content=TEXTS[5]).refusal_reason == "insulting"
    assert ProposalEdit.objects.get().after == fixed
    hidden.refresh_from_db()
    assert hidden.status == "pending" and hidden.locked_by is None
    actions = sorted(
        AuditEntry.objects.filter(target_type="consultations.proposal").values_list(
            "action", flat=True
        )
    )
    assert actions == sorted(
        ["proposal.accept"] * 6
        + ["proposal.refuse"] * 2
        + ["proposal.postpone", "proposal.edit", "proposal.skip"]
    )
    # The list (bulk accept) and the public statistics, for the record.
    page.goto(f"{live_server.url}/moderation/list/?order=refusals")
    page.wait_for_selector("table.moderation-list")
    shot(page, "07-list")
    page.goto(f"{live_server.url}{proposals[0].consultation.get_absolute_url()}moderation/")
    assert "Advertising" in page.locator("main").inner_text()
    shot(page, "08-public-stats")
    assert not errors, errors
    page.context.close()
