from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.db.models import Prefetch
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.template.loader import render_to_string
from django.utils import timezone
from django.utils.cache import patch_vary_headers
from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST

from actions import selectors as action_selectors
from actions import services as action_services
from actions.charts import objective_chart
from actions.forms import MeasurementForm, StatusUpdateForm
from actions.models import ActionUpdate
from causes.selectors import cause_visible_list
from consultations.models import Proposal
from consultations.selectors import consultation_get_for_user

from . import selectors as partner_selectors
from . import services as partner_services
from .forms import PositionForm
from .models import Partner, PartnerMembership


def partner_detail(request, slug):
    """A partner's public page: who they are, their causes, their actions and scorecard, and
    the positions they took on proposals."""
    partner = get_object_or_404(Partner, slug=slug)
    causes = (
        cause_visible_list(user=request.user).filter(cause_partners__partner=partner).distinct()
    )
    actions = action_selectors.partner_public_actions(partner=partner, user=request.user)
    rows = action_selectors.actions_progress(actions)
    positions = partner_selectors.partner_positions(partner=partner, user=request.user)
    return render(
        request,
        "partners/partner_detail.html",
        {
            "partner": partner,
            "causes": causes,
            "rows": rows,
            "scorecard": action_selectors.scorecard(rows),
            "positions": positions[: partner_selectors.PARTNER_PAGE_POSITIONS],
            "positions_count": positions.count(),
            "is_member": request.user.is_authenticated
            and partner.memberships.filter(user=request.user).exists(),
        },
    )


# --- Partner and sponsor space --------------------------------------------------------------


def _no_space(request):
    return render(request, "partners/space_forbidden.html", status=403)


@login_required
def space(request):
    """The actions the user's partners own or fund; staff see every action."""
    if not action_selectors.user_has_space(user=request.user):
        return _no_space(request)
    actions = action_selectors.action_prefetch_objectives(
        action_selectors.action_space_list(user=request.user)
    )
    rows = action_selectors.actions_progress(actions)
    editable = action_selectors.action_editable_ids(
        user=request.user, action_ids=[r.action.pk for r in rows]
    )
    memberships = PartnerMembership.objects.filter(user=request.user).select_related("partner")
    return render(
        request,
        "partners/space.html",
        {"rows": rows, "editable": editable, "memberships": memberships},
    )


def _space_action_context(request, action, *, measurement_forms=None, status_form=None):
    today = timezone.localdate()
    action = (
        action_selectors.action_prefetch_objectives(
            action_selectors.action_space_list(user=request.user).filter(pk=action.pk),
            with_history=True,
        )
        .prefetch_related(
            "funders",
            Prefetch(
                "updates",
                queryset=ActionUpdate.objects.select_related("author").order_by("-created_at"),
            ),
        )
        .get()
    )
    row = action_selectors.actions_progress([action], today=today, with_history=True)[0]
    can_edit = bool(action_selectors.action_editable_ids(user=request.user, action_ids=[action.pk]))
    measurement_forms = measurement_forms or {}
    objectives = []
    for o in row.objectives:
        form = None
        if can_edit:
            form = measurement_forms.get(o.objective.pk) or MeasurementForm(objective=o.objective)
        objectives.append({"row": o, "chart": objective_chart(o, today=today), "form": form})
    return {
        "action": action,
        "row": row,
        "objectives": objectives,
        "can_edit": can_edit,
        "status_form": (status_form or StatusUpdateForm(action=action)) if can_edit else None,
    }


@login_required
def space_action(request, pk):
    """One action of the user's space: its objectives, history and the forms to move it."""
    if not action_selectors.user_has_space(user=request.user):
        return _no_space(request)
    action = action_selectors.action_get_for_viewer(pk=pk, user=request.user)
    return render(request, "partners/space_action.html", _space_action_context(request, action))


@login_required
@require_POST
def space_measurement_create(request, objective_pk):
    """Post a measurement. Someone who may not change the objective gets a 404."""
    objective = action_selectors.objective_get_for_editor(pk=objective_pk, user=request.user)
    action = objective.action
    form = MeasurementForm(request.POST, request.FILES, objective=objective)
    if form.is_valid():
        try:
            action_services.measurement_create(
                objective=objective,
                user=request.user,
                value=form.cleaned_data["value"],
                measured_on=form.cleaned_data["measured_on"],
                evidence_url=form.cleaned_data["evidence_url"],
                evidence_file=form.cleaned_data["evidence_file"],
                note=form.cleaned_data["note"],
            )
        except ValidationError as error:
            form.add_error(None, error)
    saved = form.is_valid()
    if saved and not request.htmx:
        messages.success(
            request,
            _("Measurement of “%(indicator)s” recorded.") % {"indicator": objective.indicator},
        )
        return redirect("partners:space_action", pk=action.pk)
    forms = {} if saved else {objective.pk: form}
    context = _space_action_context(request, action, measurement_forms=forms)
    if request.htmx:
        # Swap only this objective's card (htmx swaps 2xx answers, so errors come back as 200).
        item = next(o for o in context["objectives"] if o["row"].objective.pk == objective.pk)
        # The action's summary (progress, late flag) moves too: swapped out of band.
        html = render_to_string(
            "partners/space_action.html#objective",
            {**context, "item": item, "saved": saved},
            request=request,
        ) + render_to_string(
            "partners/space_action.html#summary", {**context, "oob": True}, request=request
        )
        response = HttpResponse(html)
        patch_vary_headers(response, ["HX-Request"])
        return response
    return render(request, "partners/space_action.html", context, status=400)


@login_required
@require_POST
def space_status_update(request, pk):
    """Post a status update (a new status, a note, or both)."""
    action = action_selectors.action_get_for_editor(pk=pk, user=request.user)
    form = StatusUpdateForm(request.POST, action=action)
    if form.is_valid():
        action_services.action_status_update(
            action=action,
            user=request.user,
            status=form.cleaned_data["status"],
            note=form.cleaned_data["note"],
        )
        messages.success(request, _("Status update posted."))
        return redirect("partners:space_action", pk=action.pk)
    context = _space_action_context(request, action, status_form=form)
    return render(request, "partners/space_action.html", context, status=400)


# --- Positions on proposals -----------------------------------------------------------------


def positions_context(*, proposal, user, forms=None) -> dict:
    """The proposal page's partner positions: the public list, and a form per partner ``user``
    speaks for (``forms``: partner pk -> a bound form to show again with its errors)."""
    positions = partner_selectors.proposal_positions(proposal=proposal)
    mine = {p.partner_id: p for p in positions}
    boxes = []
    for partner in partner_selectors.partners_speaking_for(user=user):
        position = mine.get(partner.pk)
        form = (forms or {}).get(partner.pk) or PositionForm(
            prefix=partner.slug,
            initial={"stance": position.stance, "statement": position.statement}
            if position
            else None,
        )
        boxes.append({"partner": partner, "position": position, "form": form})
    return {"proposal": proposal, "positions": positions, "position_boxes": boxes}


@require_POST
@login_required
def position_save(request, slug, proposal_pk):
    """Take, change or (``withdraw``) withdraw a partner's position on an accepted proposal of a
    consultation the user may see. HTMX gets the positions box back; a plain form, the page."""
    partner = get_object_or_404(Partner, slug=slug)
    proposal = get_object_or_404(
        Proposal.objects.select_related("consultation"),
        pk=proposal_pk,
        status=Proposal.Status.ACCEPTED,
    )
    consultation_get_for_user(slug=proposal.consultation.slug, user=request.user)  # or 404
    status = 200
    forms = {}
    if request.POST.get("withdraw"):
        partner_services.position_withdraw(partner=partner, proposal=proposal, user=request.user)
        message = _("The position of %(partner)s is withdrawn.")
    else:
        form = PositionForm(request.POST, prefix=partner.slug)
        if form.is_valid():
            partner_services.position_set(
                partner=partner, proposal=proposal, user=request.user, **form.cleaned_data
            )
            message = _("The position of %(partner)s is published.")
        else:
            partner_services.check_editor(partner=partner, user=request.user)
            forms[partner.pk], status, message = form, 400, None
    if not request.htmx:
        if message:
            messages.success(request, message % {"partner": partner.name})
        else:
            messages.error(request, " ".join(e for errors in form.errors.values() for e in errors))
        return redirect(proposal.get_absolute_url())
    context = positions_context(proposal=proposal, user=request.user, forms=forms)
    return render(request, "partners/_positions.html", context, status=status)
