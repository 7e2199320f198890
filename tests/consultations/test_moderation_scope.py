"""Per-moderator scope: a moderator sees and decides only the consultations assigned to them.

Moderator A (assigned to consultation A) never sees, locks, decides, skips, edits or bulk-accepts
a proposal of consultation B: not in the queue, not in the list, not through a direct URL, not
through an HTMX partial. Superusers see everything. Staff assign moderators in the admin.
"""

from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission
from django.urls import reverse
from django.utils import timezone

from accounts.models import AuditEntry
from consultations.models import ModeratorAssignment, Proposal, ProposalEdit
from consultations.moderation import (
    ModerationError,
    moderation_bulk_accept,
    moderation_decide,
    moderation_edit,
    moderation_next,
    moderation_scope,
)

from ..admin_forms import consultation_admin_post
from ..factories import ConsultationFactory, ProposalFactory, UserFactory

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("english")]

QUEUE = "/moderation/"


def moderator(*consultations, **kwargs):
    user = UserFactory(is_staff=True, **kwargs)
    user.user_permissions.add(Permission.objects.get(codename="moderate_proposal"))
    for consultation in consultations:
        ModeratorAssignment.objects.create(moderator=user, consultation=consultation)
    return user


def pending(consultation, minutes_ago=0, **kwargs):
    return ProposalFactory(
        consultation=consultation,
        status="pending",
        created_at=timezone.now() - timedelta(minutes=minutes_ago),
        **kwargs,
    )


@pytest.fixture
def world():
    a = ConsultationFactory(question="Consultation A?", language="fr")
    b = ConsultationFactory(question="Consultation B?", language="en")
    in_a = pending(a, minutes_ago=5, content="Il faut planter des arbres dans les cours")
    in_b = pending(b, minutes_ago=50, content="We should open libraries on Sundays")
    return a, b, in_a, in_b, moderator(a)


def test_scope_is_the_assigned_consultations_and_all_for_superusers(world):
    a, b, _in_a, _in_b, alice = world
    assert list(moderation_scope(moderator=alice)) == [a]
    root = UserFactory(is_staff=True, is_superuser=True)
    assert set(moderation_scope(moderator=root)) == {a, b}
    citizen = UserFactory()
    ModeratorAssignment.objects.create(moderator=citizen, consultation=a)
    assert not moderation_scope(moderator=citizen).exists()  # an assignment without the permission


def test_next_only_gives_assigned_consultations(world):
    a, b, in_a, in_b, alice = world
    assert moderation_next(moderator=alice) == in_a  # in_b is older but out of scope
    assert moderation_next(moderator=alice, consultation=b) is None
    in_b.refresh_from_db()
    assert in_b.locked_by is None
    unassigned = moderator()
    assert moderation_next(moderator=unassigned) is None
    root = UserFactory(is_staff=True, is_superuser=True)
    assert moderation_next(moderator=root) == in_b


def test_services_refuse_out_of_scope_proposals(world):
    _a, _b, _in_a, in_b, alice = world
    with pytest.raises(ModerationError, match="do not moderate"):
        moderation_decide(moderator=alice, proposal=in_b, decision="accept")
    with pytest.raises(ModerationError, match="do not moderate"):
        moderation_edit(moderator=alice, proposal=in_b, content=in_b.content + "!")
    result = moderation_bulk_accept(moderator=alice, proposal_ids=[in_b.pk])
    assert not result.accepted and [pk for pk, _m in result.errors] == [in_b.pk]
    in_b.refresh_from_db()
    assert in_b.status == "pending" and not ProposalEdit.objects.exists()
    assert not AuditEntry.objects.filter(action__startswith="proposal.").exists()


def test_queue_page_and_filter_show_only_the_scope(client, world):
    a, b, in_a, in_b, alice = world
    client.force_login(alice)
    html = client.get(QUEUE).content.decode()
    assert in_a.content in html and in_b.content not in html
    assert "Consultation A?" in html and "Consultation B?" not in html
    assert "1 proposal waiting" in html
    # The filter on B is a 404, for the page and for the HTMX partial alike.
    assert client.get(QUEUE, {"c": b.slug}).status_code == 404
    assert client.get(QUEUE, {"c": b.slug}, HTTP_HX_REQUEST="true").status_code == 404
    assert client.get(reverse("moderation:list"), {"c": b.slug}).status_code == 404
    listing = client.get(reverse("moderation:list")).content.decode()
    assert in_a.content in listing and in_b.content not in listing


@pytest.mark.parametrize("htmx", [False, True])
def test_direct_urls_to_another_consultations_proposal_are_404(client, world, htmx):
    _a, _b, _in_a, in_b, alice = world
    client.force_login(alice)
    headers = {"HTTP_HX_REQUEST": "true"} if htmx else {}
    for name, data in [
        ("moderation:decide", {"decision": "accept"}),
        ("moderation:decide", {"decision": "refuse", "reason": "off_topic"}),
        ("moderation:skip", {}),
        ("moderation:edit", {"content": in_b.content + "!"}),
    ]:
        response = client.post(reverse(name, args=[in_b.pk]), data, **headers)
        assert response.status_code == 404, name
    in_b.refresh_from_db()
    assert in_b.status == "pending" and in_b.locked_by is None and not in_b.edits.exists()
    assert not AuditEntry.objects.filter(target_id=str(in_b.pk)).exists()


def test_bulk_accept_through_the_page_skips_out_of_scope_ids(client, world):
    _a, _b, in_a, in_b, alice = world
    client.force_login(alice)
    response = client.post(reverse("moderation:bulk"), {"ids": [in_a.pk, in_b.pk]}, follow=True)
    html = response.content.decode()
    assert "1 proposal accepted." in html
    assert f"Proposal #{in_b.pk}" in html
    in_a.refresh_from_db(), in_b.refresh_from_db()
    assert (in_a.status, in_b.status) == ("accepted", "pending")
    only_b = client.post(reverse("moderation:bulk"), {"ids": [in_b.pk]})
    assert only_b.status_code == 400
    in_b.refresh_from_db()
    assert in_b.status == "pending"


def test_language_filter(client, world):
    a, b, in_a, in_b, alice = world
    ModeratorAssignment.objects.create(moderator=alice, consultation=b)
    client.force_login(alice)
    html = client.get(reverse("moderation:list"), {"lang": "en"}).content.decode()
    assert in_b.content in html and in_a.content not in html
    assert moderation_next(moderator=alice, language="fr") == in_a
    assert client.get(QUEUE, {"lang": "klingon"}).status_code == 404


def test_superuser_sees_every_consultation_on_the_page(client, world):
    _a, _b, in_a, in_b, _alice = world
    client.force_login(UserFactory(is_staff=True, is_superuser=True))
    html = client.get(reverse("moderation:list")).content.decode()
    assert in_a.content in html and in_b.content in html


def test_staff_assign_moderators_in_the_admin_with_an_audit_entry(client, world):
    _a, b, _in_a, in_b, alice = world
    root = UserFactory(is_staff=True, is_superuser=True)
    client.force_login(root)
    url = reverse("admin:consultations_consultation_change", args=[b.pk])
    page = client.get(url)
    assert page.status_code == 200 and "moderator_assignments-TOTAL_FORMS" in page.content.decode()
    response = consultation_admin_post(
        client,
        b,
        inlines={"moderator_assignments": [{"moderator": alice.pk, "consultation": b.pk}]},
    )
    assert response.status_code == 302, response.content.decode()[:3000]
    assignment = ModeratorAssignment.objects.get(moderator=alice, consultation=b)
    assert assignment.assigned_by == root
    assert AuditEntry.objects.filter(
        action="moderatorassignment.admin_add", target_id=str(assignment.pk), actor=root
    ).exists()
    assert moderation_next(moderator=alice, consultation=b) == in_b


def test_unassigned_moderator_sees_an_empty_queue(client, world):
    client.force_login(moderator())
    response = client.get(QUEUE)
    assert response.status_code == 200
    assert "Nothing to moderate" in response.content.decode()
    assert Proposal.objects.filter(locked_by__isnull=False).count() == 0
