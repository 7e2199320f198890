"""Reads for action plans: visibility, and progress derived from measurements.

Progress is never typed in: it is computed here from an objective's baseline, target and
measurements. The formula, the pace rule for lateness and how plans and partners aggregate are
documented in docs/progress.md; keep the two in step.
"""

import datetime
import math
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal

from django.db.models import OuterRef, Prefetch, Q, QuerySet, Subquery
from django.http import Http404
from django.utils import timezone

from causes.selectors import cause_visible_list
from consensus.models import Idea
from consultations.models import Proposal, Vote
from partners.models import PartnerMembership

from .models import Action, ActionPlan, ActionUpdate, Follow, Measurement, Objective

# Plans whose actions the public sees. A closed plan stays public as an archive.
PUBLIC_PLAN_STATUSES = (ActionPlan.Status.PUBLISHED, ActionPlan.Status.CLOSED)
# An objective is "behind pace" when its progress trails the linear pace by more than this.
PACE_TOLERANCE = 0.10

LATE_OVERDUE = "overdue"
LATE_BEHIND = "behind"


# --- The formula (pure functions, no database) -------------------------------------------------


def objective_progress(*, baseline: Decimal, target: Decimal, value: Decimal | None) -> float:
    """clamp((value − baseline) / (target − baseline), 0, 1); 0 when nothing is measured yet.

    Works for decreasing targets (target < baseline): the denominator is negative, so a value
    that falls towards the target gives a positive ratio. ``target != baseline`` is a database
    constraint, so the division is always defined.
    """
    if value is None:
        return 0.0
    ratio = (Decimal(value) - Decimal(baseline)) / (Decimal(target) - Decimal(baseline))
    return float(min(max(ratio, Decimal(0)), Decimal(1)))


def expected_pace(*, start: datetime.date, due: datetime.date, today: datetime.date) -> float:
    """Share of the way a linear pace from ``start`` to ``due`` has reached by ``today``."""
    if today >= due:
        return 1.0
    if today <= start:
        return 0.0
    return (today - start).days / (due - start).days


def lateness(*, progress: float, expected: float, due: datetime.date, today: datetime.date) -> str:
    """``"overdue"`` (due date passed, target not reached), ``"behind"`` (slower than the linear
    pace by more than PACE_TOLERANCE) or ``""`` (on time or reached)."""
    if progress >= 1:
        return ""
    if today > due:
        return LATE_OVERDUE
    if progress + PACE_TOLERANCE < expected:
        return LATE_BEHIND
    return ""


def mean(values: Iterable[float]) -> float | None:
    values = list(values)
    return sum(values) / len(values) if values else None


def percent(ratio: float | None) -> int | None:
    """Whole percent, rounded down: 100 % is shown only when the target is really reached."""
    return None if ratio is None else math.floor(ratio * 100 + 1e-9)


@dataclass
class ObjectiveProgress:
    objective: Objective
    latest_value: Decimal | None
    latest_on: datetime.date | None
    progress: float
    expected: float
    late: str
    history: list[Measurement] | None = None

    @property
    def is_late(self) -> bool:
        return bool(self.late)

    @property
    def is_reached(self) -> bool:
        return self.progress >= 1

    @property
    def percent(self) -> int:
        return percent(self.progress)

    @property
    def expected_percent(self) -> int:
        return percent(self.expected)


@dataclass
class ActionProgress:
    action: Action
    objectives: list[ObjectiveProgress]
    progress: float | None  # None when the action has no measurable objective

    @property
    def is_abandoned(self) -> bool:
        return self.action.status == Action.Status.ABANDONED

    @property
    def is_late(self) -> bool:
        return not self.is_abandoned and any(o.is_late for o in self.objectives)

    @property
    def is_done(self) -> bool:
        if self.progress is None:
            return self.action.status == Action.Status.DONE
        return self.progress >= 1

    @property
    def bucket(self) -> str:
        """One of abandoned, done, late, on_time (the scorecard's columns)."""
        if self.is_abandoned:
            return "abandoned"
        if self.is_done:
            return "done"
        if self.is_late:
            return "late"
        return "on_time"

    @property
    def percent(self) -> int | None:
        return percent(self.progress)


@dataclass
class PlanProgress:
    plan: ActionPlan
    actions: list[ActionProgress]

    @property
    def progress(self) -> float | None:
        """Mean of the actions' progress; abandoned actions and actions without objectives are
        left out (they are listed, and counted apart in the scorecard)."""
        return mean(
            a.progress for a in self.actions if a.progress is not None and not a.is_abandoned
        )

    @property
    def percent(self) -> int | None:
        return percent(self.progress)


def _objective_progress(objective: Objective, today: datetime.date, with_history: bool):
    history = None
    if with_history:
        history = list(objective.measurements.all())  # prefetched, in date order
        latest = history[-1] if history else None
        latest_value = latest.value if latest else None
        latest_on = latest.measured_on if latest else None
    else:
        latest_value = objective.latest_value
        latest_on = objective.latest_on
    progress = objective_progress(
        baseline=objective.baseline, target=objective.target, value=latest_value
    )
    expected = expected_pace(start=objective.baseline_on, due=objective.due_date, today=today)
    return ObjectiveProgress(
        objective=objective,
        latest_value=latest_value,
        latest_on=latest_on,
        progress=progress,
        expected=expected,
        late=lateness(progress=progress, expected=expected, due=objective.due_date, today=today),
        history=history,
    )


def actions_progress(
    actions: Iterable[Action], *, today: datetime.date | None = None, with_history: bool = False
) -> list[ActionProgress]:
    """Progress of each action, from objectives prefetched by ``action_prefetch_objectives``.

    Runs no query of its own: with ``with_history`` the objectives must carry their prefetched
    measurements, otherwise their ``latest_value``/``latest_on`` annotations.
    """
    today = today or timezone.localdate()
    rows = []
    for action in actions:
        objectives = [_objective_progress(o, today, with_history) for o in action.objectives.all()]
        rows.append(
            ActionProgress(
                action=action,
                objectives=objectives,
                progress=mean(o.progress for o in objectives),
            )
        )
    return rows


def plans_progress(rows: list[ActionProgress]) -> list[PlanProgress]:
    """Group action rows by plan, keeping the order in which plans first appear."""
    plans: dict[int, PlanProgress] = {}
    for row in rows:
        plan = row.action.plan
        plans.setdefault(plan.pk, PlanProgress(plan=plan, actions=[])).actions.append(row)
    return list(plans.values())


def scorecard(rows: Iterable[ActionProgress]) -> dict:
    """Counts of actions per bucket and the mean progress of the actions still pursued."""
    rows = list(rows)
    counts = {"on_time": 0, "late": 0, "done": 0, "abandoned": 0}
    for row in rows:
        counts[row.bucket] += 1
    progress = mean(r.progress for r in rows if r.progress is not None and not r.is_abandoned)
    return {
        **counts,
        "total": len(rows),
        "mean_progress": progress,
        "mean_percent": percent(progress),
    }


# --- Querysets -----------------------------------------------------------------------------


def _latest(field: str) -> Subquery:
    latest = Measurement.objects.filter(objective=OuterRef("pk")).order_by(
        "-measured_on", "-created_at", "-pk"
    )
    return Subquery(latest.values(field)[:1])


def objective_list_with_latest() -> QuerySet[Objective]:
    """Objectives annotated with their latest measurement (by date, then entry): one query."""
    return Objective.objects.annotate(
        latest_value=_latest("value"), latest_on=_latest("measured_on")
    ).order_by("due_date", "pk")


def measurement_history() -> QuerySet[Measurement]:
    """Measurements in date order (ties: order of entry): an objective's history."""
    return Measurement.objects.select_related("entered_by").order_by(
        "measured_on", "created_at", "pk"
    )


def action_prefetch_objectives(qs: QuerySet[Action], *, with_history: bool = False):
    """Add objectives (with latest values, or with their whole history) in bounded queries."""
    if with_history:
        objectives = Objective.objects.order_by("due_date", "pk").prefetch_related(
            Prefetch("measurements", queryset=measurement_history())
        )
    else:
        objectives = objective_list_with_latest()
    return qs.prefetch_related(Prefetch("objectives", queryset=objectives))


def _public_proposals() -> QuerySet[Proposal]:
    return Proposal.objects.filter(status=Proposal.Status.ACCEPTED).select_related("consultation")


def action_public_list(*, user) -> QuerySet[Action]:
    """Actions anyone may see: not drafts, in a published (or closed) plan of a visible cause."""
    return (
        Action.objects.filter(
            plan__status__in=PUBLIC_PLAN_STATUSES,
            plan__cause__in=cause_visible_list(user=user).values("pk"),
        )
        .exclude(status=Action.Status.DRAFT)
        .select_related("plan", "plan__cause", "owner")
    )


def action_public_list_for_cause(*, cause, user) -> QuerySet[Action]:
    """The actions page of a cause: each action with owner, funders, linked proposals and
    objectives (latest values). A constant number of queries, whatever the number of actions."""
    qs = (
        action_public_list(user=user)
        .filter(plan__cause=cause)
        .order_by("plan__created_at", "plan_id", "created_at", "pk")
    )
    qs = qs.prefetch_related(
        "funders", Prefetch("proposals", queryset=_public_proposals().order_by("pk"))
    )
    return action_prefetch_objectives(qs)


def action_public_get(*, pk: int, user) -> Action:
    """A public action with everything its page shows (history included), or 404."""
    qs = (
        action_public_list(user=user)
        .filter(pk=pk)
        .prefetch_related(
            "funders",
            Prefetch(
                "ideas",
                queryset=Idea.objects.select_related("consultation")
                .defer("centroid")
                .order_by("-run_id", "-size", "pk"),
            ),
            Prefetch("proposals", queryset=_public_proposals().order_by("pk")),
            Prefetch("updates", queryset=ActionUpdate.objects.order_by("-created_at", "-pk")),
        )
    )
    action = action_prefetch_objectives(qs, with_history=True).first()
    if action is None:
        raise Http404("No such action.")
    action.shown_ideas = action_ideas_shown(action.ideas.all())
    return action


def action_ideas_shown(ideas: Iterable) -> list:
    """The ideas an action builds on, one run per consultation: the current run's, else the latest.

    Each engine run has its own Idea rows, and an action's links follow its ideas from run to
    run (consensus.services._carry_curation), so the same idea is linked once per run. Given
    ideas ordered by run, newest first.
    """
    by_consultation: dict[int, list] = {}
    for idea in ideas:
        by_consultation.setdefault(idea.consultation_id, []).append(idea)
    shown = []
    for group in by_consultation.values():
        current = group[0].consultation.current_run_id
        run_id = current if any(i.run_id == current for i in group) else group[0].run_id
        shown += [i for i in group if i.run_id == run_id]
    return shown


def partner_public_actions(*, partner, user) -> QuerySet[Action]:
    """Public actions owned by a partner, for its page and scorecard."""
    qs = action_public_list(user=user).filter(owner=partner).order_by("-created_at", "-pk")
    return action_prefetch_objectives(qs)


# --- Partner space: who sees and changes what ----------------------------------------------


def _partner_ids(*, user, editors_only: bool = False) -> list[int]:
    memberships = PartnerMembership.objects.filter(user=user)
    if editors_only:
        memberships = memberships.filter(role=PartnerMembership.Role.EDITOR)
    return list(memberships.values_list("partner_id", flat=True))


def user_has_space(*, user) -> bool:
    """Whether the user may open the partner space: staff, or an account of a partner."""
    if not user.is_authenticated:
        return False
    return user.is_staff or PartnerMembership.objects.filter(user=user).exists()


def action_space_list(*, user) -> QuerySet[Action]:
    """Actions shown in a user's partner space: those their partners own or fund (drafts
    included); staff see all. Other partners' actions never appear."""
    qs = Action.objects.select_related("plan", "plan__cause", "owner")
    if not user.is_staff:
        partner_ids = _partner_ids(user=user)
        ids = Action.objects.filter(
            Q(owner_id__in=partner_ids) | Q(funders__in=partner_ids)
        ).values("pk")
        qs = qs.filter(pk__in=ids)
    return qs.order_by("plan__cause__title", "plan__created_at", "plan_id", "created_at", "pk")


def action_editable_ids(*, user, action_ids: Iterable[int]) -> set[int]:
    """The subset of ``action_ids`` the user may change (post measurements, status updates)."""
    qs = Action.objects.filter(pk__in=list(action_ids))
    if not user.is_staff:
        qs = qs.filter(owner_id__in=_partner_ids(user=user, editors_only=True))
    return set(qs.values_list("pk", flat=True))


def action_get_for_viewer(*, pk: int, user) -> Action:
    """An action from the user's space (owned or funded, or any for staff), or 404."""
    action = action_space_list(user=user).filter(pk=pk).first()
    if action is None:
        raise Http404("No such action.")
    return action


def action_get_for_editor(*, pk: int, user) -> Action:
    """An action the user may change: staff, or an editor of the owner partner; else 404.

    A funder or a viewer account sees the action in its space but cannot change it.
    """
    qs = Action.objects.select_related("plan", "owner")
    if not user.is_staff:
        qs = qs.filter(owner_id__in=_partner_ids(user=user, editors_only=True))
    action = qs.filter(pk=pk).first()
    if action is None:
        raise Http404("No such action.")
    return action


def objective_get_for_editor(*, pk: int, user) -> Objective:
    """An objective of an action the user may change, or 404 (also for a forged id)."""
    qs = Objective.objects.select_related("action", "action__plan", "action__owner")
    if not user.is_staff:
        qs = qs.filter(action__owner_id__in=_partner_ids(user=user, editors_only=True))
    objective = qs.filter(pk=pk).first()
    if objective is None:
        raise Http404("No such objective.")
    return objective


# --- Follows -------------------------------------------------------------------------------


def action_followable_by(*, action: Action, user) -> bool:
    """Citizens who voted on a proposal the action builds on may follow it."""
    if not user.is_authenticated:
        return False
    return Vote.objects.filter(participant__user=user, proposal__actions=action).exists()


def follow_exists(*, action: Action, user) -> bool:
    return user.is_authenticated and Follow.objects.filter(action=action, user=user).exists()


def action_public_by_idea(*, consultation, idea_ids) -> dict[int, list[Action]]:
    """Public actions that build on the given ideas, by idea id: one query.

    For the consultation's results page: only actions of the consultation's own cause, in a
    published or closed plan and not drafts. Whoever may see the consultation may see its cause,
    so the answer is the same for every visitor of the page (and can be cached with it).
    """
    through = Action.ideas.through
    rows = (
        through.objects.filter(
            idea_id__in=list(idea_ids),
            action__plan__cause_id=consultation.cause_id,
            action__plan__status__in=PUBLIC_PLAN_STATUSES,
        )
        .exclude(action__status=Action.Status.DRAFT)
        .select_related("action", "action__owner")
        .order_by("action__created_at", "action_id")
    )
    out: dict[int, list[Action]] = {}
    for row in rows:
        out.setdefault(row.idea_id, []).append(row.action)
    return out
