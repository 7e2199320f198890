import datetime
from decimal import Decimal

import pytest
from django.contrib.auth.models import AnonymousUser
from django.db import IntegrityError

from actions import selectors
from actions.models import Action, ActionPlan

from ..factories import CauseFactory
from .factories import (
    ActionFactory,
    ActionPlanFactory,
    MeasurementFactory,
    ObjectiveFactory,
)

D = Decimal
TODAY = datetime.date(2026, 6, 1)


# --- The formula, without the database ---------------------------------------------------------


@pytest.mark.parametrize(
    ("baseline", "target", "value", "expected"),
    [
        (D(0), D(100), D(25), 0.25),
        (D(10), D(20), D(15), 0.5),
        (D(40), D(10), D(25), 0.5),  # decreasing target: from 40 days down to 10
        (D(40), D(10), D(10), 1.0),
        (D(40), D(10), D(5), 1.0),  # better than the target is clamped to 100 %
        (D(40), D(10), D(50), 0.0),  # worse than the baseline is clamped to 0 %
        (D(0), D(100), D(150), 1.0),  # over-achievement clamped
        (D(0), D(100), D(-5), 0.0),
        (D(0), D(100), None, 0.0),  # nothing measured yet
        (D("0.5"), D("0.8"), D("0.65"), 0.5),
    ],
)
def test_objective_progress_formula(baseline, target, value, expected):
    got = selectors.objective_progress(baseline=baseline, target=target, value=value)
    assert got == pytest.approx(expected)


def test_expected_pace_is_linear_between_baseline_and_due_dates():
    start, due = datetime.date(2026, 1, 1), datetime.date(2026, 1, 11)
    assert selectors.expected_pace(start=start, due=due, today=datetime.date(2025, 12, 1)) == 0
    assert selectors.expected_pace(start=start, due=due, today=datetime.date(2026, 1, 6)) == 0.5
    assert selectors.expected_pace(start=start, due=due, today=due) == 1
    assert selectors.expected_pace(start=start, due=start, today=start) == 1  # same-day objective


@pytest.mark.parametrize(
    ("progress", "expected", "due", "late"),
    [
        (0.5, 1.0, TODAY - datetime.timedelta(days=1), "overdue"),
        (1.0, 1.0, TODAY - datetime.timedelta(days=1), ""),  # reached: never late
        (0.2, 0.5, TODAY + datetime.timedelta(days=10), "behind"),
        (0.41, 0.5, TODAY + datetime.timedelta(days=10), ""),  # within the 10-point tolerance
        (0.0, 0.05, TODAY + datetime.timedelta(days=100), ""),  # just started
    ],
)
def test_lateness(progress, expected, due, late):
    assert selectors.lateness(progress=progress, expected=expected, due=due, today=TODAY) == late


def test_percent_rounds_down_so_100_means_reached():
    assert selectors.percent(0.999) == 99
    assert selectors.percent(1.0) == 100
    assert selectors.percent(0.29) == 29  # no float artefact (0.29 * 100 = 28.999…)
    assert selectors.percent(None) is None


# --- Against the database ------------------------------------------------------------------


def _rows(actions, **kwargs):
    qs = selectors.action_prefetch_objectives(
        Action.objects.filter(pk__in=[a.pk for a in actions]).order_by("pk"), **kwargs
    )
    return selectors.actions_progress(qs, today=TODAY, **kwargs)


@pytest.mark.django_db
def test_latest_measurement_by_date_wins_not_the_last_entered():
    objective = ObjectiveFactory(
        baseline=D(0),
        target=D(100),
        baseline_on=TODAY - datetime.timedelta(days=100),
        due_date=TODAY + datetime.timedelta(days=100),
    )
    MeasurementFactory(
        objective=objective, value=D(60), measured_on=TODAY - datetime.timedelta(days=2)
    )
    MeasurementFactory(
        objective=objective, value=D(30), measured_on=TODAY - datetime.timedelta(days=9)
    )
    for with_history in (False, True):
        [row] = _rows([objective.action], with_history=with_history)
        assert row.objectives[0].latest_value == D(60)
        assert row.progress == pytest.approx(0.6)


@pytest.mark.django_db
def test_history_is_every_measurement_in_date_order():
    objective = ObjectiveFactory()
    for days, value in [(3, 30), (10, 10), (1, 40), (5, 20)]:
        MeasurementFactory(
            objective=objective, value=D(value), measured_on=TODAY - datetime.timedelta(days=days)
        )
    [row] = _rows([objective.action], with_history=True)
    assert [m.value for m in row.objectives[0].history] == [D(10), D(20), D(30), D(40)]


@pytest.mark.django_db
def test_decreasing_target_and_no_measurement_average_into_action_progress():
    action = ActionFactory()
    waiting = ObjectiveFactory(action=action, baseline=D(40), target=D(10), unit="days")
    MeasurementFactory(objective=waiting, value=D(25), measured_on=TODAY)
    ObjectiveFactory(action=action, baseline=D(0), target=D(10))  # never measured
    [row] = _rows([action])
    assert [o.progress for o in row.objectives] == [pytest.approx(0.5), 0.0]
    assert row.progress == pytest.approx(0.25)
    assert row.objectives[1].latest_value is None


@pytest.mark.django_db
def test_over_achievement_is_clamped_and_the_action_is_done():
    objective = ObjectiveFactory(baseline=D(0), target=D(10))
    MeasurementFactory(objective=objective, value=D(14), measured_on=TODAY)
    [row] = _rows([objective.action])
    assert row.progress == 1.0
    assert row.bucket == "done"
    assert not row.is_late


@pytest.mark.django_db
def test_overdue_objective_makes_the_action_late_even_if_marked_done():
    action = ActionFactory(status=Action.Status.DONE)
    objective = ObjectiveFactory(
        action=action,
        baseline_on=TODAY - datetime.timedelta(days=60),
        due_date=TODAY - datetime.timedelta(days=1),
    )
    MeasurementFactory(
        objective=objective, value=D(80), measured_on=TODAY - datetime.timedelta(days=3)
    )
    [row] = _rows([action])
    assert row.objectives[0].late == "overdue"
    assert row.is_late and row.bucket == "late"


@pytest.mark.django_db
def test_behind_the_linear_pace_is_late_and_keeping_up_is_not():
    # Half of the time has passed: 50 % expected, 10 points of tolerance.
    start, due = TODAY - datetime.timedelta(days=50), TODAY + datetime.timedelta(days=50)
    slow = ObjectiveFactory(baseline_on=start, due_date=due)
    MeasurementFactory(objective=slow, value=D(30), measured_on=TODAY)
    steady = ObjectiveFactory(baseline_on=start, due_date=due)
    MeasurementFactory(objective=steady, value=D(45), measured_on=TODAY)
    slow_row, steady_row = _rows([slow.action, steady.action])
    assert slow_row.objectives[0].expected == pytest.approx(0.5)
    assert slow_row.objectives[0].late == "behind"
    assert steady_row.objectives[0].late == ""


@pytest.mark.django_db
def test_plan_progress_and_scorecard_leave_abandoned_actions_out():
    plan = ActionPlanFactory()
    done = ObjectiveFactory(action=ActionFactory(plan=plan))
    MeasurementFactory(objective=done, value=D(100), measured_on=TODAY)
    half = ObjectiveFactory(action=ActionFactory(plan=plan))
    MeasurementFactory(objective=half, value=D(50), measured_on=TODAY)
    abandoned = ObjectiveFactory(action=ActionFactory(plan=plan, status=Action.Status.ABANDONED))
    MeasurementFactory(objective=abandoned, value=D(0), measured_on=TODAY)
    ActionFactory(plan=plan)  # no objective: listed, but without progress
    rows = _rows(list(plan.actions.all()))
    [plan_row] = selectors.plans_progress(rows)
    assert plan_row.progress == pytest.approx(0.75)
    card = selectors.scorecard(rows)
    assert card == {
        "on_time": 2,
        "late": 0,
        "done": 1,
        "abandoned": 1,
        "total": 4,
        "mean_progress": pytest.approx(0.75),
        "mean_percent": 75,
    }


@pytest.mark.django_db
def test_action_progress_runs_in_bounded_queries(django_assert_num_queries):
    for _ in range(15):
        objective = ObjectiveFactory()
        MeasurementFactory.create_batch(3, objective=objective)
        ObjectiveFactory(action=objective.action)
    with django_assert_num_queries(2):  # actions, objectives annotated with their latest value
        rows = selectors.actions_progress(
            selectors.action_prefetch_objectives(Action.objects.all()), today=TODAY
        )
    assert len(rows) == 15
    with django_assert_num_queries(3):  # + every measurement, for the histories
        selectors.actions_progress(
            selectors.action_prefetch_objectives(Action.objects.all(), with_history=True),
            today=TODAY,
            with_history=True,
        )


@pytest.mark.django_db
def test_target_equal_to_baseline_is_refused_by_the_database():
    with pytest.raises(IntegrityError):
        ObjectiveFactory(baseline=D(5), target=D(5))


@pytest.mark.django_db
def test_public_list_hides_drafts_and_draft_plans():
    cause = CauseFactory()
    visible = ActionFactory(plan=ActionPlanFactory(cause=cause))
    closed = ActionFactory(plan=ActionPlanFactory(cause=cause, status=ActionPlan.Status.CLOSED))
    ActionFactory(plan=visible.plan, status=Action.Status.DRAFT)
    ActionFactory(plan=ActionPlanFactory(cause=cause, status=ActionPlan.Status.DRAFT))
    public = set(selectors.action_public_list(user=AnonymousUser()))
    assert public == {visible, closed}
