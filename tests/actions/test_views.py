import datetime
from decimal import Decimal

import pytest
from django.urls import reverse
from django.utils import timezone

from actions.models import Action, ActionPlan, ActionUpdate
from causes.models import Cause

from ..factories import CauseFactory, PartnerFactory, ProposalFactory, UserFactory
from .factories import (
    ActionFactory,
    ActionPlanFactory,
    MeasurementFactory,
    ObjectiveFactory,
)

pytestmark = pytest.mark.django_db

D = Decimal


def days(n):
    return timezone.localdate() + datetime.timedelta(days=n)


@pytest.fixture
def culture_action():
    """A published action with a decreasing objective, measured twice, built on a proposal."""
    cause = CauseFactory(title="Culture pour tous", slug="culture-pour-tous")
    owner = PartnerFactory(name="Ville de Lyon", slug="ville-de-lyon")
    funder = PartnerFactory(name="Fondation Lumière", slug="fondation-lumiere")
    plan = ActionPlanFactory(cause=cause, title="Plan 2026")
    proposal = ProposalFactory(
        consultation__cause=cause, content="Il faut ouvrir les bibliothèques le dimanche"
    )
    action = ActionFactory(plan=plan, owner=owner, title="Ouvrir 12 bibliothèques le dimanche")
    action.funders.add(funder)
    action.proposals.add(proposal)
    objective = ObjectiveFactory(
        action=action,
        indicator="Délai d'attente pour une carte",
        unit="jours",
        baseline=D(40),
        target=D(10),
        baseline_on=days(-100),
        due_date=days(100),
    )
    MeasurementFactory(
        objective=objective,
        value=D(30),
        measured_on=days(-50),
        evidence_url="https://example.org/rapport-mars.pdf",
    )
    MeasurementFactory(objective=objective, value=D(25), measured_on=days(-5), note="Bilan du mois")
    return action


def test_cause_actions_page_lists_actions_with_progress_owner_and_proposals(client, culture_action):
    response = client.get(reverse("actions:cause", args=["culture-pour-tous"]))
    assert response.status_code == 200
    html = response.content.decode()
    assert "Ouvrir 12 bibliothèques le dimanche" in html
    assert "Ville de Lyon" in html and "Fondation Lumière" in html
    assert "Il faut ouvrir les bibliothèques le dimanche" in html
    assert "Délai d&#x27;attente pour une carte" in html
    # (25 − 40) / (10 − 40) = 50 %
    assert 'value="50"' in html and "50&nbsp;%" in html
    assert "Plan 2026" in html


def test_cause_actions_page_hides_drafts_and_flags_late_actions(client):
    cause = CauseFactory(slug="sport")
    plan = ActionPlanFactory(cause=cause)
    late = ActionFactory(plan=plan, title="Rénover les gymnases")
    ObjectiveFactory(action=late, baseline_on=days(-60), due_date=days(-1))
    ActionFactory(plan=plan, title="Action brouillon", status=Action.Status.DRAFT)
    ActionFactory(
        plan=ActionPlanFactory(cause=cause, status=ActionPlan.Status.DRAFT),
        title="Plan brouillon",
    )
    html = client.get(reverse("actions:cause", args=["sport"])).content.decode()
    assert "Rénover les gymnases" in html
    assert "Action brouillon" not in html and "Plan brouillon" not in html
    assert "flag-late" in html


def test_cause_actions_page_of_a_hidden_cause_is_404(client):
    CauseFactory(slug="secret", status=Cause.Status.DRAFT)
    assert client.get(reverse("actions:cause", args=["secret"])).status_code == 404
    assert client.get(reverse("actions:cause", args=["nope"])).status_code == 404


def test_cause_actions_page_runs_a_bounded_number_of_queries(client, django_assert_max_num_queries):
    cause = CauseFactory(slug="bounded")
    plans = [ActionPlanFactory(cause=cause), ActionPlanFactory(cause=cause)]
    proposals = ProposalFactory.create_batch(3, consultation__cause=cause)
    funders = PartnerFactory.create_batch(2)
    for i in range(20):
        action = ActionFactory(plan=plans[i % 2])
        action.proposals.add(*proposals[: i % 3 + 1])
        action.funders.add(*funders[: i % 2 + 1])
        for _ in range(2):
            objective = ObjectiveFactory(action=action)
            MeasurementFactory.create_batch(2, objective=objective)
    url = reverse("actions:cause", args=["bounded"])
    # cause, actions (+plan, cause, owner), funders, proposals (+consultation), objectives (+latest)
    with django_assert_max_num_queries(6):
        response = client.get(url)
    assert response.status_code == 200
    assert len([r for p in response.context["plans"] for r in p.actions]) == 20
    # Same bound for a logged-in visitor (session and user add two).
    client.force_login(UserFactory())
    with django_assert_max_num_queries(8):
        assert client.get(url).status_code == 200


def test_action_detail_shows_objectives_chart_history_evidence_and_origin(client, culture_action):
    ActionUpdate.objects.create(
        action=culture_action,
        previous_status="planned",
        status="in_progress",
        note="Trois bibliothèques ouvertes en mars.",
    )
    response = client.get(culture_action.get_absolute_url())
    assert response.status_code == 200
    html = response.content.decode()
    assert "<svg" in html and 'role="img"' in html and "<desc" in html
    assert "Délai d&#x27;attente pour une carte" in html
    assert "https://example.org/rapport-mars.pdf" in html
    assert "Il faut ouvrir les bibliothèques le dimanche" in html
    assert "Trois bibliothèques ouvertes en mars." in html
    [(row, chart)] = response.context["objectives"]
    assert [m.value for m in row.history] == [D(30), D(25)]
    assert len(chart["measured"]) == 2
    # SVG coordinates use a dot whatever the language (French is the default here).
    assert 'points="' in html and "," in chart["measured_line"]
    for point in chart["measured"]:
        assert "," not in point.sx


def test_action_detail_of_a_draft_is_404_to_the_public(client):
    draft = ActionFactory(status=Action.Status.DRAFT)
    in_draft_plan = ActionFactory(plan__status=ActionPlan.Status.DRAFT)
    assert client.get(draft.get_absolute_url()).status_code == 404
    assert client.get(in_draft_plan.get_absolute_url()).status_code == 404
    assert client.get(reverse("actions:detail", args=[999999])).status_code == 404


def test_action_detail_renders_without_objectives_or_measurements(client):
    action = ActionFactory()
    html = client.get(action.get_absolute_url()).content.decode()
    assert action.title in html
    ObjectiveFactory(action=action)
    response = client.get(action.get_absolute_url())
    assert response.status_code == 200
    assert "0&nbsp;%" in response.content.decode()


def test_partner_page_shows_kind_actions_and_scorecard(client, culture_action):
    owner = culture_action.owner
    ActionFactory(owner=owner, status=Action.Status.DRAFT, title="Projet secret")
    late = ActionFactory(owner=owner, title="Action en retard")
    ObjectiveFactory(action=late, baseline_on=days(-30), due_date=days(-2))
    response = client.get(owner.get_absolute_url())
    assert response.status_code == 200
    html = response.content.decode()
    assert owner.get_kind_display() in html
    assert "Ouvrir 12 bibliothèques le dimanche" in html and "Action en retard" in html
    assert "Projet secret" not in html
    card = response.context["scorecard"]
    assert (card["total"], card["late"], card["on_time"], card["done"]) == (2, 1, 1, 0)
    assert card["mean_percent"] == 25  # (50 % + 0 %) / 2


def test_cause_page_links_to_its_actions(client, culture_action):
    html = client.get(culture_action.plan.cause.get_absolute_url()).content.decode()
    assert reverse("actions:cause", args=["culture-pour-tous"]) in html


def test_action_detail_runs_a_bounded_number_of_queries(
    client, culture_action, django_assert_max_num_queries
):
    for _ in range(5):
        objective = ObjectiveFactory(action=culture_action)
        MeasurementFactory.create_batch(
            6, objective=objective, evidence_url="https://example.org/e"
        )
    # action, funders, ideas, proposals, updates, objectives, measurements, follow, vote
    with django_assert_max_num_queries(9):
        response = client.get(culture_action.get_absolute_url())
    assert len(response.context["objectives"]) == 6
