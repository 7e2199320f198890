"""Staff pages of the consensus engine: runs of a consultation, start, live progress, publish.

Anonymous visitors are sent to the login page (an HTMX poll gets a client redirect); signed-in
users who are not staff get a 404, checked in every view, partials included.
"""

from functools import wraps

from django.contrib import messages
from django.contrib.auth.views import redirect_to_login
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils.cache import patch_vary_headers
from django.utils.translation import gettext as _
from django.views.decorators.http import require_http_methods, require_POST
from django_htmx.http import HttpResponseClientRedirect, HttpResponseStopPolling

from . import selectors, services
from .forms import RunStartForm


def staff_required(view):
    @wraps(view)
    def wrapper(request, *args, **kwargs):
        if not request.user.is_authenticated:
            if getattr(request, "htmx", False):
                return HttpResponseClientRedirect(f"{reverse('account_login')}?next={request.path}")
            return redirect_to_login(request.get_full_path())
        return view(request, *args, **kwargs)

    return wrapper


@staff_required
@require_http_methods(["GET", "POST"])
def run_list(request, slug):
    consultation = selectors.engine_consultation_get_for_staff(slug=slug, user=request.user)
    status = 200
    if request.method == "POST":
        form = RunStartForm(request.POST)
        if form.is_valid():
            try:
                run = services.engine_run_start(
                    consultation=consultation,
                    kind=form.cleaned_data["kind"],
                    parameters=form.parameters(),
                    model_name=form.cleaned_data["model_name"],
                    seed=form.cleaned_data["seed"],
                    user=request.user,
                )
            except services.EngineBusy as exc:
                form.add_error(None, str(exc))
                status = 409
            except services.EngineInputError as exc:
                for field, message in exc.errors.items():
                    form.add_error(field if field in form.fields else None, message)
                if not exc.errors:
                    form.add_error(None, str(exc))
                status = 400
            else:
                messages.success(request, _("Engine run #%(id)s started.") % {"id": run.pk})
                return redirect("consensus:run", slug=consultation.slug, pk=run.pk)
        else:
            status = 400
    else:
        form = RunStartForm()
    context = {
        "consultation": consultation,
        "runs": selectors.engine_run_list(consultation=consultation)[:50],
        "form": form,
    }
    return render(request, "consensus/run_list.html", context, status=status)


@staff_required
@require_http_methods(["GET"])
def run_detail(request, slug, pk):
    consultation = selectors.engine_consultation_get_for_staff(slug=slug, user=request.user)
    run = selectors.engine_run_get(consultation=consultation, pk=pk)
    context = {
        "consultation": consultation,
        "run": run,
        "metric_rows": selectors.run_metric_rows(run=run),
        "timing_rows": selectors.run_timing_rows(run=run),
    }
    if not run.is_active:
        context["ideas"] = selectors.run_ideas(run=run, limit=100)
        context["groups"] = selectors.run_opinion_groups(run=run)
        context["top_scores"] = selectors.run_proposal_scores(run=run, limit=10)
    if request.htmx:
        html = render_to_string("consensus/run_detail.html#run-body", context, request=request)
        # Done, failed or cancelled: swap in the final state and tell htmx to stop polling.
        response = HttpResponse(html) if run.is_active else HttpResponseStopPolling(html)
    else:
        response = render(request, "consensus/run_detail.html", context)
    patch_vary_headers(response, ("HX-Request",))
    return response


def _run_action(request, slug, pk, action):
    consultation = selectors.engine_consultation_get_for_staff(slug=slug, user=request.user)
    run = selectors.engine_run_get(consultation=consultation, pk=pk)
    try:
        message = action(run)
    except services.EngineError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, message)
    return redirect("consensus:run", slug=consultation.slug, pk=run.pk)


@staff_required
@require_POST
def run_make_current(request, slug, pk):
    def action(run):
        services.engine_run_make_current(run=run)
        return _("Run #%(id)s now provides the published results.") % {"id": run.pk}

    return _run_action(request, slug, pk, action)


@staff_required
@require_POST
def run_resume(request, slug, pk):
    def action(run):
        services.engine_run_resume(run=run)
        return _("Run #%(id)s resumed: only its missing chunks are redone.") % {"id": run.pk}

    return _run_action(request, slug, pk, action)


@staff_required
@require_POST
def run_cancel(request, slug, pk):
    def action(run):
        if not services.engine_run_cancel(run=run):
            raise services.EngineStateError(_("Only a pending or running run can be cancelled."))
        return _("Run #%(id)s cancelled.") % {"id": run.pk}

    return _run_action(request, slug, pk, action)
