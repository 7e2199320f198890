from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from causes.models import Cause
from consensus.models import EngineRun
from consultations.services import participant_for_session, vote_cast

from .factories import (
    CauseFactory,
    ConsultationFactory,
    PartnerFactory,
    ProposalFactory,
    UserFactory,
)

pytestmark = pytest.mark.django_db


def test_home_lists_open_consultations_with_counters(client):
    consultation = ConsultationFactory(votes_target=1000)
    proposal = ProposalFactory(consultation=consultation)
    vote_cast(participant=participant_for_session(session_key="a"), proposal=proposal, key="agree")
    response = client.get(reverse("home"))
    assert response.status_code == 200
    html = response.content.decode()
    assert consultation.question in html
    assert consultation.cause.title in html
    assert response.context["consultations"][0][1]["votes"] == 1


def test_home_cards_lead_to_the_vote_and_to_published_results(client):
    consultation = ConsultationFactory()
    vote = reverse("consultations:sequence", args=[consultation.slug])
    results = reverse("consensus:results", args=[consultation.slug])
    html = client.get(reverse("home")).content.decode()
    assert f'href="{vote}"' in html and f'href="{results}"' not in html
    consultation.current_run = EngineRun.objects.create(
        consultation=consultation, status=EngineRun.Status.DONE
    )
    consultation.save(update_fields=["current_run"])
    html = client.get(reverse("home")).content.decode()
    assert f'href="{vote}"' in html and f'href="{results}"' in html


def test_cause_page_shows_consultations_and_partners(client):
    consultation = ConsultationFactory()
    partner = PartnerFactory()
    consultation.cause.cause_partners.create(partner=partner, kind="founder")
    response = client.get(consultation.cause.get_absolute_url())
    assert response.status_code == 200
    assert consultation.question in response.content.decode()
    assert partner.name in response.content.decode()


def test_consultation_page_lists_only_accepted_proposals(client):
    consultation = ConsultationFactory()
    accepted = ProposalFactory(consultation=consultation, content="Il faut des bibliothèques ouvertes le dimanche")
    ProposalFactory(consultation=consultation, content="Il faut un texte en attente", status="pending")
    response = client.get(consultation.get_absolute_url())
    html = response.content.decode()
    assert accepted.content in html
    assert "texte en attente" not in html


def test_consultation_search_and_htmx_partial(client):
    consultation = ConsultationFactory()
    ProposalFactory(consultation=consultation, content="Il faut des concerts gratuits en plein air")
    ProposalFactory(consultation=consultation, content="Il faut baisser le prix des livres")
    response = client.get(consultation.get_absolute_url(), {"q": "concerts"}, HTTP_HX_REQUEST="true")
    html = response.content.decode()
    assert "concerts gratuits" in html
    assert "prix des livres" not in html
    assert "<html" not in html  # only the fragment
    assert "HX-Request" in response["Vary"]


def test_random_order_is_stable_per_visitor_and_pages_never_overlap(client):
    consultation = ConsultationFactory()
    ProposalFactory.create_batch(45, consultation=consultation)
    seen = []
    for page in (1, 2, 3):
        response = client.get(consultation.get_absolute_url(), {"sort": "random", "page": page})
        seen += [p.pk for p, _ in response.context["rows"]]
    assert len(seen) == 45 and len(set(seen)) == 45


def test_bad_sort_and_page_fall_back_cleanly(client):
    consultation = ConsultationFactory()
    ProposalFactory(consultation=consultation)
    response = client.get(consultation.get_absolute_url(), {"sort": "<script>", "page": "zzz"})
    assert response.status_code == 200
    assert response.context["sort"] == "recent"


def test_unknown_consultation_is_404(client):
    assert client.get("/c/does-not-exist/").status_code == 404


def test_a_missing_page_is_the_sites_own_and_says_why_when_a_view_wrote_why(client):
    # an unknown address: the site's page in French by default, the generic text, a way home
    response = client.get("/nowhere/")
    body = response.content.decode()
    assert response.status_code == 404 and '<html lang="fr"' in body
    assert "Page introuvable" in body and "Il n'y a rien à cette adresse\u00a0:" in body
    assert 'href="/"' in body
    # an internal message (untranslated, not written for visitors) is not shown
    assert "No such consultation." not in client.get("/c/does-not-exist/").content.decode()
    # a reason written for the visitor is shown, in their language
    consultation = ConsultationFactory()
    results = reverse("consensus:results_idea", args=[consultation.slug, 0])
    for language, reason in (
        ("fr", "Les résultats ne sont pas encore disponibles"),
        ("en", "The results are not available yet: the votes have not been analysed."),
    ):
        response = client.get(results, HTTP_ACCEPT_LANGUAGE=language, HTTP_COOKIE="")
        assert response.status_code == 404
        assert reason in response.content.decode(), language


def test_private_consultation_is_invisible_to_non_members(client):
    cause = CauseFactory(kind=Cause.Kind.PRIVATE_CONSULTATION)
    consultation = ConsultationFactory(cause=cause)
    member = UserFactory()
    cause.members.add(member)
    assert client.get(consultation.get_absolute_url()).status_code == 404
    assert consultation.question not in client.get(reverse("home")).content.decode()
    client.force_login(UserFactory())
    assert client.get(consultation.get_absolute_url()).status_code == 404
    client.force_login(member)
    assert client.get(consultation.get_absolute_url()).status_code == 200


def test_draft_cause_is_hidden_from_the_public(client):
    cause = CauseFactory(status=Cause.Status.DRAFT)
    assert client.get(cause.get_absolute_url()).status_code == 404


def test_proposal_page_shows_shares_after_ten_votes(client):
    proposal = ProposalFactory()
    for i in range(10):
        vote_cast(
            participant=participant_for_session(session_key=f"s{i}"),
            proposal=proposal,
            key="agree" if i < 7 else "disagree",
        )
    response = client.get(proposal.get_absolute_url())
    html = response.content.decode()
    assert proposal.content in html
    assert "70 %" in html and "30 %" in html


def test_admin_pages_render_for_staff(client):
    admin = UserFactory(is_staff=True, is_superuser=True)
    ProposalFactory()
    client.force_login(admin)
    for name in (
        "admin:index",
        "admin:consultations_proposal_changelist",
        "admin:consultations_consultation_changelist",
        "admin:causes_cause_changelist",
        "admin:consultations_vote_changelist",
        "admin:consensus_enginerun_changelist",
        "admin:actions_action_changelist",
        "admin:partners_partner_changelist",
    ):
        assert client.get(reverse(name)).status_code == 200, name


def test_french_is_the_default_and_english_is_available(client):
    ConsultationFactory()
    assert 'lang="fr"' in client.get(reverse("home")).content.decode()
    response = client.get(reverse("home"), HTTP_ACCEPT_LANGUAGE="en")
    assert 'lang="en"' in response.content.decode()


@pytest.mark.parametrize("name", ["account_login", "account_signup", "account_reset_password"])
def test_account_pages_render_inside_the_site_layout(client, name):
    response = client.get(reverse(name))
    assert response.status_code == 200
    html = response.content.decode()
    assert 'class="brand"' in html and "<form" in html


def test_home_sorts_consultations_into_open_coming_and_closed(client):
    now = timezone.now()
    open_ = ConsultationFactory(question="Une question ouverte ?")
    coming = ConsultationFactory(question="Une question à venir ?", starts_at=now + timedelta(days=5))
    closed = ConsultationFactory(
        question="Une question close ?",
        starts_at=now - timedelta(days=30),
        ends_at=now - timedelta(days=2),
    )
    closed.current_run = EngineRun.objects.create(consultation=closed, status=EngineRun.Status.DONE)
    closed.save(update_fields=["current_run"])

    response = client.get(reverse("home"), HTTP_ACCEPT_LANGUAGE="en")

    html = " ".join(response.content.decode().split())
    sections = {
        title: html.split(f"<h2>{title}</h2>", 1)[1].split("</section>", 1)[0]
        for title in ("Open consultations", "Coming soon", "Closed consultations: what came out of them")
    }
    assert open_.question in sections["Open consultations"]
    assert coming.question in sections["Coming soon"] and "opens on" in sections["Coming soon"]
    closed_section = sections["Closed consultations: what came out of them"]
    assert closed.question in closed_section and "closed on" in closed_section
    assert reverse("consensus:results", args=[closed.slug]) in closed_section
    assert reverse("consultations:sequence", args=[closed.slug]) not in html
    assert closed.question not in sections["Open consultations"]
    assert coming.question not in sections["Open consultations"]
