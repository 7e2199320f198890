"""Who sees what on the public action pages: anonymous, citizen, cause member, partner A,
partner B and staff, on a public cause and on a private consultation's cause.

The partner space has its own matrix in tests/partners/test_space.py; these pages are the
public face, so drafts stay off them for everybody (staff included: they see drafts in the space)
and a private cause's actions are shown to its members and staff only.
"""

import pytest
from django.urls import reverse

from actions.models import Follow
from causes.models import Cause
from consultations.models import Participant, Vote

from ..factories import CauseFactory, PartnerFactory, ProposalFactory, UserFactory
from .factories import ActionFactory, ActionPlanFactory, MembershipFactory, ObjectiveFactory

pytestmark = pytest.mark.django_db

ROLES = ("anonymous", "citizen", "member", "partner_a", "partner_b", "staff")


@pytest.fixture
def world():
    public = CauseFactory(slug="culture")
    private = CauseFactory(slug="huis-clos", kind=Cause.Kind.PRIVATE_CONSULTATION)
    a, b = PartnerFactory(name="Ville A", slug="ville-a"), PartnerFactory(name="Asso B")
    plan = ActionPlanFactory(cause=public)
    draft_plan = ActionPlanFactory(cause=public, status="draft")
    private_plan = ActionPlanFactory(cause=private)
    w = {
        "public": ActionFactory(plan=plan, owner=a, title="Action publique de A"),
        "draft": ActionFactory(plan=plan, owner=a, title="Brouillon de A", status="draft"),
        "in_draft_plan": ActionFactory(plan=draft_plan, owner=a, title="Plan non publié de A"),
        "private": ActionFactory(plan=private_plan, owner=a, title="Action privée de A"),
        "b_public": ActionFactory(plan=plan, owner=b, title="Action publique de B"),
    }
    for key in ("public", "draft", "in_draft_plan", "private", "b_public"):
        ObjectiveFactory(action=w[key])
    users = {
        "anonymous": None,
        "citizen": UserFactory(),
        "member": UserFactory(),
        "partner_a": MembershipFactory(partner=a).user,
        "partner_b": MembershipFactory(partner=b).user,
        "staff": UserFactory(is_staff=True),
    }
    private.members.add(users["member"])
    return w, users, a


def login(client, user):
    if user is not None:
        client.force_login(user)


@pytest.mark.parametrize("role", ROLES)
def test_public_cause_page_shows_public_actions_only(client, world, role):
    w, users, _a = world
    login(client, users[role])
    response = client.get(reverse("actions:cause", args=["culture"]))
    assert response.status_code == 200
    html = response.content.decode()
    assert "Action publique de A" in html and "Action publique de B" in html
    assert "Brouillon de A" not in html and "Plan non publié de A" not in html
    assert "Action privée de A" not in html


@pytest.mark.parametrize("role", ROLES)
def test_action_detail_pages_by_role(client, world, role):
    w, users, _a = world
    login(client, users[role])
    assert client.get(w["public"].get_absolute_url()).status_code == 200
    # drafts and actions of an unpublished plan never reach the public pages, even for their owner
    assert client.get(w["draft"].get_absolute_url()).status_code == 404
    assert client.get(w["in_draft_plan"].get_absolute_url()).status_code == 404
    expected = 200 if role in ("member", "staff") else 404
    assert client.get(w["private"].get_absolute_url()).status_code == expected


@pytest.mark.parametrize("role", ROLES)
def test_private_cause_actions_page_by_role(client, world, role):
    _w, users, _a = world
    login(client, users[role])
    response = client.get(reverse("actions:cause", args=["huis-clos"]))
    if role in ("member", "staff"):
        assert response.status_code == 200
        assert "Action privée de A" in response.content.decode()
    else:
        assert response.status_code == 404


@pytest.mark.parametrize("role", ROLES)
def test_partner_page_lists_what_the_visitor_may_see(client, world, role):
    _w, users, a = world
    login(client, users[role])
    html = client.get(reverse("partners:detail", args=[a.slug])).content.decode()
    assert "Action publique de A" in html
    assert "Brouillon de A" not in html and "Plan non publié de A" not in html
    assert ("Action privée de A" in html) == (role in ("member", "staff"))
    assert "Action publique de B" not in html


@pytest.mark.parametrize("role", ["citizen", "member", "partner_a", "partner_b", "staff"])
def test_nobody_can_follow_a_draft_or_an_invisible_action(client, world, role):
    w, users, _a = world
    user = users[role]
    login(client, user)
    # the user voted for the proposals the actions build on, so only visibility stops them
    participant = Participant.objects.create(user=user)
    for key in ("draft", "in_draft_plan", "private"):
        proposal = ProposalFactory(consultation__cause=w[key].plan.cause)
        w[key].proposals.add(proposal)
        Vote.objects.create(participant=participant, proposal=proposal, key="agree")
    for key in ("draft", "in_draft_plan"):
        response = client.post(reverse("actions:follow", args=[w[key].pk]))
        assert response.status_code == 404
    response = client.post(reverse("actions:follow", args=[w["private"].pk]))
    if role in ("member", "staff"):
        assert response.status_code in (200, 302)
    else:
        assert response.status_code == 404
    followed = set(Follow.objects.filter(user=user).values_list("action_id", flat=True))
    assert w["draft"].pk not in followed and w["in_draft_plan"].pk not in followed
    assert (w["private"].pk in followed) == (role in ("member", "staff"))


def test_anonymous_follow_goes_to_login_and_follows_nothing(client, world):
    w, _users, _a = world
    response = client.post(reverse("actions:follow", args=[w["public"].pk]))
    assert response.status_code == 302 and "login" in response["Location"]
    assert not Follow.objects.exists()
