"""Partners take public positions on proposals, in their own name (Make.org's organisations'
public votes): who may, what visitors see, bad input, and that no vote figure counts them."""

import pytest
from django.urls import reverse
from django.utils import translation

from causes.models import Cause
from consultations.models import Proposal, ProposalCounter
from consultations.selectors import consultation_stats
from partners.models import PartnerMembership, PartnerPosition

from ..factories import (
    CauseFactory,
    ConsultationFactory,
    PartnerFactory,
    ProposalFactory,
    UserFactory,
)

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("english")]


@pytest.fixture
def world():
    """A proposal; an association with an editor and a viewer; a citizen."""
    consultation = ConsultationFactory()
    proposal = ProposalFactory(
        consultation=consultation, content="Il faut ouvrir les musées le soir"
    )
    partner = PartnerFactory(name="Les Amis des Musées", slug="amis-musees")
    editor, viewer, citizen = UserFactory(), UserFactory(), UserFactory()
    PartnerMembership.objects.create(partner=partner, user=editor)
    PartnerMembership.objects.create(
        partner=partner, user=viewer, role=PartnerMembership.Role.VIEWER
    )
    return {
        "proposal": proposal,
        "partner": partner,
        "editor": editor,
        "viewer": viewer,
        "citizen": citizen,
    }


def position_url(partner, proposal):
    return reverse("partners:position", args=[partner.slug, proposal.pk])


def post(client, partner, proposal, htmx=True, **data):
    headers = {"HTTP_HX_REQUEST": "true"} if htmx else {}
    fields = {f"{partner.slug}-{k}": v for k, v in data.items() if k != "withdraw"}
    if "withdraw" in data:
        fields["withdraw"] = data["withdraw"]
    return client.post(position_url(partner, proposal), fields, **headers)


def test_an_editor_publishes_changes_and_withdraws_the_partners_position(client, world):
    proposal, partner = world["proposal"], world["partner"]
    client.force_login(world["editor"])
    page = client.get(proposal.get_absolute_url()).content.decode()
    assert "In the name of Les Amis des Musées" in page and "Publish the position" in page
    response = post(client, partner, proposal, stance="agree", statement="  Nous le demandons.  ")
    assert response.status_code == 200
    assert (
        "Agrees" in response.content.decode() and "Change the position" in response.content.decode()
    )
    position = PartnerPosition.objects.get()
    assert (position.stance, position.statement, position.author) == (
        "agree",
        "Nous le demandons.",
        world["editor"],
    )
    post(client, partner, proposal, stance="disagree", statement="")
    assert list(PartnerPosition.objects.values_list("stance", "statement")) == [("disagree", "")]
    response = post(client, partner, proposal, withdraw="1")
    assert response.status_code == 200 and not PartnerPosition.objects.exists()
    assert "No partner has taken a position on this proposal yet." in response.content.decode()


def test_visitors_read_the_positions_on_the_proposal_and_the_partners_page(client, world):
    proposal, partner = world["proposal"], world["partner"]
    client.force_login(world["editor"])
    post(client, partner, proposal, htmx=False, stance="agree", statement="Nous le demandons.")
    client.logout()
    page = client.get(proposal.get_absolute_url()).content.decode()
    section = page[page.index('id="partner-positions"') :]
    assert "Les Amis des Musées" in section and "Agrees" in section
    assert "“Nous le demandons.”" in section
    assert "In the name of" not in page  # no form for a visitor
    page = client.get(partner.get_absolute_url()).content.decode()
    assert "1 position on a proposal, in its own name." in page
    assert proposal.content in page and "“Nous le demandons.”" in page
    with translation.override("fr"):
        page = client.get(partner.get_absolute_url(), HTTP_ACCEPT_LANGUAGE="fr").content.decode()
    assert "D&#x27;accord" in page and "Prises de position" in page


def test_a_position_counts_in_no_vote_figure(client, world):
    proposal, partner = world["proposal"], world["partner"]
    before = consultation_stats(consultation=proposal.consultation)
    client.force_login(world["editor"])
    post(client, partner, proposal, stance="agree")
    assert PartnerPosition.objects.count() == 1
    assert not ProposalCounter.objects.filter(proposal=proposal).exists()
    assert consultation_stats(consultation=proposal.consultation)["votes"] == before["votes"] == 0


def test_only_the_partners_editors_speak_in_its_name(client, world):
    proposal, partner = world["proposal"], world["partner"]
    response = post(client, partner, proposal, stance="agree")
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]
    for user in (world["viewer"], world["citizen"]):
        client.force_login(user)
        assert "In the name of" not in client.get(proposal.get_absolute_url()).content.decode()
        assert post(client, partner, proposal, stance="agree").status_code == 403
        assert post(client, partner, proposal, stance="bogus").status_code == 403
        assert post(client, partner, proposal, withdraw="1").status_code == 403
    client.force_login(UserFactory(is_staff=True))  # staff do not speak for a partner either
    assert post(client, partner, proposal, stance="agree").status_code == 403
    assert not PartnerPosition.objects.exists()
    assert (
        client.get(reverse("partners:position", args=[partner.slug, proposal.pk])).status_code
        == 405
    )


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"stance": "maybe"}, "Select a valid choice."),
        ({}, "Choose agrees, disagrees or takes no side."),
        ({"stance": "agree", "statement": "x" * 501}, "at most 500 characters"),
    ],
)
def test_bad_input_gets_a_clear_error_and_keeps_the_position(client, world, data, message):
    proposal, partner = world["proposal"], world["partner"]
    client.force_login(world["editor"])
    post(client, partner, proposal, stance="neutral", statement="Avant")
    response = post(client, partner, proposal, **data)
    assert response.status_code == 400 and message in response.content.decode()
    assert list(PartnerPosition.objects.values_list("stance", "statement")) == [
        ("neutral", "Avant")
    ]
    response = post(client, partner, proposal, htmx=False, **data)  # without HTMX: the page
    assert response.status_code == 302
    page = client.get(response["Location"]).content.decode()
    assert message in page


def test_no_position_on_a_proposal_not_accepted_or_out_of_sight(client, world):
    partner, editor = world["partner"], world["editor"]
    client.force_login(editor)
    pending = ProposalFactory(status=Proposal.Status.PENDING)
    assert post(client, partner, pending, stance="agree").status_code == 404
    private = ConsultationFactory(cause=CauseFactory(kind=Cause.Kind.PRIVATE_CONSULTATION))
    hidden = ProposalFactory(consultation=private)
    assert post(client, partner, hidden, stance="agree").status_code == 404
    unknown = reverse("partners:position", args=["nobody", world["proposal"].pk])
    assert client.post(unknown, {"nobody-stance": "agree"}).status_code == 404
    assert not PartnerPosition.objects.exists()
    # a position taken before the proposal was refused, or in a consultation the visitor
    # cannot see, is left out of the partner's page
    private.cause.members.add(editor)
    post(client, partner, hidden, stance="agree")
    post(client, partner, world["proposal"], stance="disagree")
    assert PartnerPosition.objects.count() == 2
    client.logout()
    page = client.get(partner.get_absolute_url()).content.decode()
    assert "1 position on a proposal" in page and hidden.content not in page
    Proposal.objects.filter(pk=world["proposal"].pk).update(
        status=Proposal.Status.REFUSED, refusal_reason=Proposal.RefusalReason.OFF_TOPIC
    )
    page = client.get(partner.get_absolute_url()).content.decode()
    assert "No position on a proposal yet." in page


def test_the_account_data_export_lists_the_positions_the_user_wrote(client, world):
    from accounts.selectors import account_data_export

    client.force_login(world["editor"])
    post(client, world["partner"], world["proposal"], stance="agree", statement="Oui")
    (written,) = account_data_export(user=world["editor"])["partner_contributions"]["positions"]
    assert written["partner"] == "Les Amis des Musées" and written["statement"] == "Oui"
    world["editor"].delete()
    assert PartnerPosition.objects.get().author is None  # the partner's position stays


def test_the_open_data_lists_the_positions_on_accepted_proposals(client, world):
    import csv
    import io

    proposal, partner = world["proposal"], world["partner"]
    other = ProposalFactory(consultation=proposal.consultation)
    client.force_login(world["editor"])
    post(client, partner, proposal, stance="agree", statement="=Nous le demandons.")
    post(client, partner, other, stance="neutral")
    Proposal.objects.filter(pk=other.pk).update(
        status=Proposal.Status.REFUSED, refusal_reason=Proposal.RefusalReason.OFF_TOPIC
    )
    client.logout()
    url = reverse("api:export", args=[proposal.consultation.slug, "positions", "csv"])
    response = client.get(url)
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert [(r["proposal_id"], r["partner"], r["partner_kind"], r["stance"]) for r in rows] == [
        (str(proposal.pk), "Les Amis des Musées", partner.kind, "agree")
    ]
    assert rows[0]["statement"] == "'=Nous le demandons."  # no formula for a spreadsheet
    assert set(rows[0]) == {
        "proposal_id", "partner", "partner_kind", "stance", "statement", "updated_at"
    }  # fmt: skip


def test_staff_read_and_remove_a_position_in_the_admin_but_never_rewrite_it(client, world):
    from accounts.models import AuditEntry

    client.force_login(world["editor"])
    post(client, world["partner"], world["proposal"], stance="agree", statement="Oui")
    position = PartnerPosition.objects.get()
    client.force_login(UserFactory(is_staff=True, is_superuser=True))
    listing = client.get(reverse("admin:partners_partnerposition_changelist"))
    assert listing.status_code == 200 and "Les Amis des Musées" in listing.content.decode()
    change_url = reverse("admin:partners_partnerposition_change", args=[position.pk])
    page = client.get(change_url).content.decode()
    assert 'name="_save"' not in page  # view only
    client.post(change_url, {"stance": "disagree", "statement": "Non"})
    assert PartnerPosition.objects.get().statement == "Oui"
    assert client.get(reverse("admin:partners_partnerposition_add")).status_code == 403
    delete_url = reverse("admin:partners_partnerposition_delete", args=[position.pk])
    client.post(delete_url, {"post": "yes"})
    assert not PartnerPosition.objects.exists()
    assert AuditEntry.objects.filter(action="partnerposition.admin_delete").count() == 1


def test_an_ideas_page_sums_up_the_partners_positions_on_its_proposals(
    client, django_capture_on_commit_callbacks
):
    from consensus.models import Idea, IdeaMembership

    from ..consensus.engine_data import consultation_with_themes
    from ..consensus.test_results_views import start

    consultation = consultation_with_themes()
    run = start(consultation, django_capture_on_commit_callbacks)
    idea = Idea.objects.filter(run=run).order_by("number").first()
    members = [m.proposal for m in IdeaMembership.objects.filter(idea=idea).order_by("pk")]
    elsewhere = IdeaMembership.objects.filter(run=run).exclude(idea=idea).first().proposal
    partner, other = PartnerFactory(name="Vélo Cité"), PartnerFactory(name="Zoo Club")
    editor = UserFactory()
    PartnerMembership.objects.create(partner=partner, user=editor)
    PartnerMembership.objects.create(partner=other, user=editor)
    client.force_login(editor)
    for proposal, stance in zip(
        members[:4], ["agree", "agree", "disagree", "neutral"], strict=True
    ):
        post(client, partner, proposal, stance=stance)
    post(client, other, elsewhere, stance="agree")  # a proposal of another idea
    client.logout()
    url = reverse("consensus:results_idea", args=[consultation.slug, idea.number])
    page = client.get(url).content.decode()
    section = page[page.index('id="idea-positions-title"') :]
    section = section[: section.index("</section>")]
    assert "Vélo Cité" in section and "Zoo Club" not in section
    assert "agrees with 2 of them" in section and "disagrees with 1" in section
    assert "takes no side on 1" in section
