"""Results alerts: ask to be emailed a consultation's results, and stop (consultations/alerts.py)."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404
from django.shortcuts import redirect, render
from django.utils.translation import gettext as _
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods, require_POST

from . import alerts
from .models import Consultation, ResultsAlert
from .selectors import consultation_get_for_user


@login_required
@require_POST
def results_alert(request, slug):
    """POST: email me the results (``stop``: no longer); HTMX swaps the box, else redirects."""
    consultation = consultation_get_for_user(slug=slug, user=request.user)
    if request.POST.get("stop"):
        alerts.alert_delete(consultation_id=consultation.pk, user_id=request.user.pk)
        done = _("You will not be emailed the results of this consultation.")
    else:
        alerts.alert_create(consultation=consultation, user=request.user)
        done = _("We will email you when the results of this consultation are published.")
    if request.htmx:
        return render(
            request,
            "consultations/_results_alert.html",
            {
                "consultation": consultation,
                **alerts.alert_box(consultation=consultation, user=request.user),
            },
        )
    messages.success(request, done)
    return redirect(consultation)


@csrf_exempt  # the signed token is the credential; mail clients' one-click POST has no CSRF token
@require_http_methods(["GET", "POST"])
def results_alert_stop(request, token):
    """The opt-out link of the results emails: GET asks to confirm, POST stops (no login).

    A GET never stops anything, because mail scanners open links.
    """
    ids = alerts.stop_token_read(token)
    if ids is None:
        raise Http404("Bad token.")
    consultation_id, user_id = ids
    consultation = Consultation.objects.filter(pk=consultation_id).first()
    if request.method == "POST":
        alerts.alert_delete(consultation_id=consultation_id, user_id=user_id)
        done = True
    else:
        done = not ResultsAlert.objects.filter(
            consultation_id=consultation_id, user_id=user_id
        ).exists()
    return render(
        request,
        "consultations/results_alert_stop.html",
        {"consultation": consultation, "done": done, "token": token},
    )
