from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.utils.translation import gettext as _
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from causes.selectors import cause_visible_list

from . import selectors, services
from .charts import objective_chart
from .models import Action, Follow


def cause_actions(request, slug):
    """Every public action of a cause, grouped by plan, with measured progress."""
    cause = get_object_or_404(cause_visible_list(user=request.user), slug=slug)
    actions = selectors.action_public_list_for_cause(cause=cause, user=request.user)
    rows = selectors.actions_progress(actions)
    return render(
        request,
        "actions/cause_actions.html",
        {
            "cause": cause,
            "plans": selectors.plans_progress(rows),
            "scorecard": selectors.scorecard(rows),
        },
    )


def action_detail(request, pk):
    action = selectors.action_public_get(pk=pk, user=request.user)
    today = timezone.localdate()
    row = selectors.actions_progress([action], today=today, with_history=True)[0]
    objectives = [(o, objective_chart(o, today=today)) for o in row.objectives]
    evidence = [m for o in row.objectives for m in o.history if m.evidence_url or m.evidence_file]
    evidence.sort(key=lambda m: (m.measured_on, m.created_at), reverse=True)
    following = selectors.follow_exists(action=action, user=request.user)
    return render(
        request,
        "actions/action_detail.html",
        {
            "action": action,
            "row": row,
            "objectives": objectives,
            "evidence": evidence,
            "following": following,
            "can_follow": not following
            and selectors.action_followable_by(action=action, user=request.user),
        },
    )


@login_required
@require_POST
def action_follow(request, pk):
    action = selectors.action_public_get(pk=pk, user=request.user)
    try:
        services.follow_create(action=action, user=request.user)
    except services.FollowError as error:
        messages.error(request, str(error))
    else:
        messages.success(request, _("You follow this action: we will email you when it moves."))
    return redirect(action)


@login_required
@require_POST
def action_unfollow(request, pk):
    services.follow_delete(action_id=pk, user_id=request.user.pk)
    messages.success(request, _("You no longer follow this action."))
    try:
        return redirect(selectors.action_public_get(pk=pk, user=request.user))
    except Http404:
        return redirect("home")


@csrf_exempt  # the signed token is the credential; mail clients' one-click POST has no CSRF token
def unfollow_from_email(request, token):
    """The opt-out link of follower emails: GET asks to confirm, POST unfollows (no login).

    A GET never unfollows, because mail scanners open links.
    """
    ids = services.unfollow_token_read(token)
    if ids is None:
        raise Http404("Bad token.")
    action_id, user_id = ids
    action = Action.objects.filter(pk=action_id).first()
    if request.method == "POST":
        services.follow_delete(action_id=action_id, user_id=user_id)
        done = True
    else:
        done = not Follow.objects.filter(action_id=action_id, user_id=user_id).exists()
    return render(
        request, "actions/unfollow.html", {"action": action, "done": done, "token": token}
    )
