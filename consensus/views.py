"""Staff pages of the consensus engine: runs of a consultation, start, live progress, publish.

Anonymous visitors are sent to the login page (an HTMX poll gets a client redirect); signed-in
users who are not staff get a 404, checked in every view, partials included.
"""

from functools import wraps

from django.contrib import messages
from django.contrib.auth.views import redirect_to_login
from django.core.paginator import Paginator
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils.cache import patch_vary_headers
from django.utils.http import url_has_allowed_host_and_scheme, urlencode
from django.utils.translation import gettext as _
from django.utils.translation import ngettext
from django.views.decorators.http import require_http_methods, require_POST
from django_htmx.http import HttpResponseClientRedirect, HttpResponseStopPolling, reswap, retarget

from consultations.alerts import alerts_waiting

from . import selectors, services, staff_selectors
from .forms import (
    IdeaLabelForm,
    IdeaMergeForm,
    ProposalPlaceForm,
    RunCompareForm,
    RunStartForm,
)
from .models import EngineRun, Idea
from .results_views import (
    PROPOSALS_PER_PAGE,
    filters_query,
    ideas_filtered_or_error,
    ideas_page_or_error,
    ideas_view_or_error,
    page_or_error,
    results_cache_forget,
    search_words_or_error,
)

IDEAS_PER_PAGE = 100  # on a run's staff page
# the start form's clustering settings, under "Advanced settings" with the opinion groups'
RUN_START_IDEA_FIELDS = (
    "chunk_size", "cluster_method", "min_cluster_size", "expected_ideas", "resolution",
    "neighbour_ideas", "near_threshold", "n_themes",
)  # fmt: skip


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
    runs = list(selectors.engine_run_list(consultation=consultation)[:50])
    advanced = (*RUN_START_IDEA_FIELDS, "max_groups")  # folded unless one of them is wrong
    context = {
        "consultation": consultation,
        "runs": runs,
        "any_active": any(run.is_active for run in runs),
        "form": form,
        "run_fields": ("kind", "model_name", "seed", "publish"),
        "idea_fields": RUN_START_IDEA_FIELDS,
        "advanced_open": any(name in form.errors for name in advanced),
        "compare_form": RunCompareForm(consultation=consultation, initial=_compare_initial(runs)),
        "rollback_target": services.engine_run_rollback_target(consultation=consultation),
        "can_compare": sum(run.status == EngineRun.Status.DONE for run in runs) >= 2,
        "alerts_waiting": alerts_waiting(consultation=consultation),
    }
    if request.htmx and request.method == "GET":
        html = render_to_string("consensus/run_list.html#runs-table", context, request=request)
        response = HttpResponse(html) if context["any_active"] else HttpResponseStopPolling(html)
    else:
        response = render(request, "consensus/run_list.html", context, status=status)
    patch_vary_headers(response, ("HX-Request",))
    return response


def _compare_initial(runs) -> dict:
    done = [run for run in runs if run.status == EngineRun.Status.DONE]
    return {"a": done[1].pk, "b": done[0].pk} if len(done) >= 2 else {}


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
        "model_label": selectors.model_label(run.model_name) if run.model_name else None,
        "exposure": selectors.exposure_summary(run=run),
        "min_shown": services.min_zone_votes(),
    }
    if context["exposure"]:
        context["unanswered"] = selectors.most_left_unanswered(run=run, min_shown=context["min_shown"])
    if not run.is_active:
        # every idea, a page at a time (at 2M answers a run finds some 260); ?theme=<number>:
        # a theme's; ?q=<words>: those whose proposals say them, the most first; ?view=list:
        # a line each instead of a card
        ideas, theme, words, error = ideas_filtered_or_error(
            request, run, selectors.run_ideas(run=run)
        )
        if error:
            return error
        compact, error = ideas_view_or_error(request)
        if error:
            return error
        page, error = ideas_page_or_error(request, ideas, IDEAS_PER_PAGE)
        if error:
            return error
        context["ideas"], context["ideas_page"] = page.object_list, page
        context["shown_theme"], context["words"], context["compact"] = theme, words, compact
        context["filters"] = filters_query(theme, words)  # what the switch of view keeps
        # what the pager's links keep
        context["query"] = "&".join(q for q in (context["filters"], compact and "view=list") if q)
        if compact:  # a column of agreement once votes put some ideas in a zone
            context["zoned"] = any((idea.scores or {}).get("zone") for idea in context["ideas"])
            # and one of the votes imported proposals received where they were made
            context["sourced"] = any(
                (idea.scores or {}).get("source_votes") for idea in context["ideas"]
            )
        else:
            for idea in context["ideas"]:
                idea.central_others = selectors.central_besides_label(idea, idea.central)
        context["themes"] = selectors.run_themes(run=run, ideas_each=0)
        context["groups"] = selectors.run_opinion_groups(run=run)
        context["rankings"] = staff_selectors.run_rankings(run=run, limit=10)
        context["top_scores"] = context["rankings"]["top_score"]
    if request.htmx:
        html = render_to_string("consensus/run_detail.html#run-body", context, request=request)
        # Done, failed or cancelled: swap in the final state and tell htmx to stop polling.
        response = HttpResponse(html) if run.is_active else HttpResponseStopPolling(html)
    else:
        response = render(request, "consensus/run_detail.html", context)
    patch_vary_headers(response, ("HX-Request",))
    return response


@staff_required
@require_POST
def idea_label(request, slug, pk, number):
    """Rename one of a run's ideas (HTMX: the card's title comes back; else back to the page
    it was renamed from, the run's by default)."""
    consultation = selectors.engine_consultation_get_for_staff(slug=slug, user=request.user)
    run = selectors.engine_run_get(consultation=consultation, pk=pk)
    idea = get_object_or_404(Idea.objects.defer("centroid"), run=run, number=number)
    return _rename(
        request,
        consultation,
        run,
        idea,
        set_label=lambda label: services.idea_label_set(idea=idea, label=label, actor=request.user),
        kind="idea",
        done=_("Idea renamed: later runs keep this label for the same idea."),
    )


@staff_required
@require_POST
def theme_label(request, slug, pk, number):
    """Rename one of a run's themes (HTMX: its title comes back; else back to the run's page)."""
    consultation = selectors.engine_consultation_get_for_staff(slug=slug, user=request.user)
    run = selectors.engine_run_get(consultation=consultation, pk=pk)
    theme = selectors.run_theme_get(run=run, number=number)
    return _rename(
        request,
        consultation,
        run,
        theme,
        set_label=lambda label: services.theme_label_set(
            theme=theme, label=label, actor=request.user
        ),
        kind="theme",
        done=_("Theme renamed: later runs keep this name for the same theme."),
    )


def _rename(request, consultation, run, obj, *, set_label, kind, done):
    """The label form posted for ``obj``, an idea or a theme (``kind``) of ``run``: ``set_label``
    it, then its "<kind>-title" partial of run_detail.html for HTMX (422 with the error, swapped
    in by static/js/concorde.js) or back to the page it came from."""
    back = request.POST.get("back", "")
    if not url_has_allowed_host_and_scheme(back, allowed_hosts={request.get_host()}):
        back = reverse("consensus:run", args=[consultation.slug, run.pk])
    form = IdeaLabelForm(request.POST)
    if form.is_valid():
        try:
            set_label(form.cleaned_data["label"])
        except services.EngineInputError as exc:
            form.add_error("label", str(exc))
        else:
            results_cache_forget(consultation_id=consultation.pk, run_id=run.pk)
    if request.htmx:
        context = {"consultation": consultation, "run": run, kind: obj, "label_form": form}
        html = render_to_string(f"consensus/run_detail.html#{kind}-title", context, request=request)
        if not form.errors:
            return HttpResponse(html)
        return reswap(
            retarget(HttpResponse(html, status=422), f"#{kind}-title-{obj.number}"), "outerHTML"
        )
    if form.errors:
        messages.error(request, " ".join(form.errors["label"]))
    else:
        messages.success(request, done)
    return redirect(back)


@staff_required
@require_http_methods(["GET"])
def run_idea(request, slug, pk, number=None):
    """One idea of a run (or the proposals in none: ``number`` None) with every proposal, a page
    at a time; on the published run, staff tick proposals and move them to another idea."""
    consultation = selectors.engine_consultation_get_for_staff(slug=slug, user=request.user)
    run = selectors.engine_run_get(consultation=consultation, pk=pk)
    idea = None if number is None else selectors.run_idea_get(run=run, number=number)
    words, error = search_words_or_error(request)  # ?q=: only the proposals that say them
    if error:
        return error
    every = selectors.run_unassigned(run=run) if idea is None else selectors.idea_members(idea=idea)
    rows = every
    if words:
        field = "content" if idea is None else "proposal__content"
        rows = selectors.rows_saying(every, field=field, words=words)
    kept = {"q": words} if words else {}  # what the pager's links and the redirect keep
    paginator = Paginator(rows, PROPOSALS_PER_PAGE)
    asked = request.GET.get("page", "")
    if asked.isdigit() and int(asked) > paginator.num_pages:
        # moves emptied the last page: show the page that is last now
        return redirect(f"{request.path}?{urlencode({**kept, 'page': paginator.num_pages})}")
    page, error = page_or_error(
        request, paginator, _("There is no page %(page)s: the proposals fill %(pages)d.")
    )
    if error:
        return error
    shown = selectors.rows_by_id(every, page.object_list) if words else page.object_list
    items = [
        {"id": row.pk, "content": row.content}
        if idea is None
        else {
            "id": row.proposal_id,
            "content": row.proposal.content,
            "similarity": row.similarity,
            "is_central": row.is_central,
        }
        for row in shown
    ]
    placed = selectors.placed_proposal_ids(run=run, proposal_ids=[item["id"] for item in items])
    for item in items:
        item["placed"] = item["id"] in placed
    editable = run.status == EngineRun.Status.DONE and consultation.current_run_id == run.pk
    choices = selectors.run_idea_choices(run=run) if editable else []
    context = {
        "consultation": consultation,
        "run": run,
        "idea": idea,
        "page": page,
        "items": items,
        "words": words,
        "query": urlencode(kept),
        "total": every.count() if words else paginator.count,
        "editable": editable,
        "place_form": ProposalPlaceForm(ideas=choices) if editable else None,
        "merge_form": IdeaMergeForm(ideas=choices, number=idea.number)
        if editable and idea is not None
        else None,
    }
    return render(request, "consensus/run_idea.html", context)


@staff_required
@require_POST
def proposals_place(request, slug, pk):
    """Move the ticked proposals of the published run to one idea, or to none; back to the page."""
    consultation = selectors.engine_consultation_get_for_staff(slug=slug, user=request.user)
    run = selectors.engine_run_get(consultation=consultation, pk=pk)
    back = request.POST.get("back", "")
    if not url_has_allowed_host_and_scheme(back, allowed_hosts={request.get_host()}):
        back = reverse("consensus:run", args=[consultation.slug, run.pk])
    form = ProposalPlaceForm(request.POST, ideas=selectors.run_idea_choices(run=run))
    if not form.is_valid():
        messages.error(request, " ".join(e for errors in form.errors.values() for e in errors))
        return redirect(back)
    if form.new_idea:
        return _split(request, consultation, run, form.cleaned_data["proposals"], back)
    try:
        moved = services.proposals_place(
            run=run,
            proposal_ids=form.cleaned_data["proposals"],
            number=form.number,
            actor=request.user,
        )
    except services.EngineError as exc:
        messages.error(request, str(exc))
        return redirect(back)
    if not moved:
        messages.info(request, _("The ticked proposals were already there: nothing moved."))
        return redirect(back)
    results_cache_forget(consultation_id=consultation.pk, run_id=run.pk)
    target = dict(form.fields["idea"].choices)[form.cleaned_data["idea"]]
    messages.success(
        request,
        ngettext(
            "%(n)s proposal moved to: %(idea)s. The next runs keep it there while that idea lasts.",
            "%(n)s proposals moved to: %(idea)s. The next runs keep them there while that idea "
            "lasts.",
            moved,
        )
        % {"n": moved, "idea": target},
    )
    return redirect(back)


def _split(request, consultation, run, proposal_ids, back):
    """``proposals_place`` with "a new idea": on to the new idea's page, where staff name it."""
    try:
        idea, moved = services.idea_split(run=run, proposal_ids=proposal_ids, actor=request.user)
    except services.EngineError as exc:
        messages.error(request, str(exc))
        return redirect(back)
    results_cache_forget(consultation_id=consultation.pk, run_id=run.pk)
    messages.success(
        request,
        ngettext(
            "%(n)s proposal split out into this new idea. Name it below; the next runs keep it "
            "as an idea of its own.",
            "%(n)s proposals split out into this new idea. Name it below; the next runs keep "
            "them together as an idea of their own.",
            moved,
        )
        % {"n": moved},
    )
    return redirect("consensus:run_idea", slug=consultation.slug, pk=run.pk, number=idea.number)


@staff_required
@require_POST
def idea_merge(request, slug, pk, number):
    """Merge one idea of the published run into another: its proposals move there in a task;
    on to the idea they join."""
    consultation = selectors.engine_consultation_get_for_staff(slug=slug, user=request.user)
    run = selectors.engine_run_get(consultation=consultation, pk=pk)
    idea = selectors.run_idea_get(run=run, number=number)
    back = reverse("consensus:run_idea", args=[consultation.slug, run.pk, idea.number])
    form = IdeaMergeForm(request.POST, ideas=selectors.run_idea_choices(run=run), number=number)
    if not form.is_valid():
        messages.error(request, " ".join(form.errors["into"]))
        return redirect(back)
    try:
        target, n_moving = services.idea_merge_start(
            run=run, number=idea.number, into=form.cleaned_data["into"], actor=request.user
        )
    except services.EngineError as exc:
        messages.error(request, str(exc))
        return redirect(back)
    results_cache_forget(consultation_id=consultation.pk, run_id=run.pk)
    messages.success(
        request,
        ngettext(
            "The %(n)s proposal of “%(idea)s” is moving into this idea. The next runs keep it "
            "here while this idea lasts.",
            "The %(n)s proposals of “%(idea)s” are moving into this idea. The next runs keep "
            "them here while this idea lasts.",
            n_moving,
        )
        % {"n": n_moving, "idea": idea.label},
    )
    return redirect("consensus:run_idea", slug=consultation.slug, pk=run.pk, number=target.number)


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
        services.engine_run_make_current(run=run, actor=request.user)
        return _("Run #%(id)s now provides the published results.") % {"id": run.pk}

    return _run_action(request, slug, pk, action)


@staff_required
@require_POST
def run_resume(request, slug, pk):
    def action(run):
        services.engine_run_resume(run=run, actor=request.user)
        return _("Run #%(id)s resumed: only its missing chunks are redone.") % {"id": run.pk}

    return _run_action(request, slug, pk, action)


@staff_required
@require_POST
def run_cancel(request, slug, pk):
    def action(run):
        if not services.engine_run_cancel(run=run, actor=request.user):
            raise services.EngineStateError(_("Only a pending or running run can be cancelled."))
        return _("Run #%(id)s cancelled.") % {"id": run.pk}

    return _run_action(request, slug, pk, action)


@staff_required
@require_POST
def run_rollback(request, slug):
    """Publish again the run that the published run replaced."""
    consultation = selectors.engine_consultation_get_for_staff(slug=slug, user=request.user)
    current_id = consultation.current_run_id
    try:
        target = services.engine_run_rollback(consultation=consultation, actor=request.user)
    except services.EngineError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(
            request,
            _(
                "Rolled back: run #%(to)s provides the published results again (instead of #%(from)s)."
            )
            % {"to": target.pk, "from": current_id},
        )
    return redirect("consensus:runs", slug=consultation.slug)


@staff_required
@require_http_methods(["GET"])
def run_compare(request, slug):
    """Which ideas of run A split, merged, appeared or disappeared in run B; metrics side by side."""
    consultation = selectors.engine_consultation_get_for_staff(slug=slug, user=request.user)
    data = None
    if request.GET:
        data = request.GET.copy()
        data.setdefault("min_share", "0.2")
    form = RunCompareForm(data, consultation=consultation)
    comparison = None
    status = 200
    if form.is_bound:
        if form.is_valid():
            comparison = staff_selectors.run_comparison(
                run_a=form.cleaned_data["a"],
                run_b=form.cleaned_data["b"],
                min_share=form.cleaned_data["min_share"],
            )
        else:
            status = 400
    sections, group_sections = [], []
    if comparison is not None:
        titles = (
            ("split", _("Ideas that split")),
            ("merged", _("Ideas that merged")),
            ("appeared", _("New ideas")),
            ("disappeared", _("Ideas that disappeared")),
            ("kept", _("Ideas kept")),
        )
        sections = [(kind, title, comparison.changes(kind)) for kind, title in titles]
        if comparison.groups is not None:
            group_titles = (
                ("split", _("Groups that split")),
                ("merged", _("Groups that merged")),
                ("appeared", _("New groups")),
                ("disappeared", _("Groups that disappeared")),
                ("kept", _("Groups kept")),
            )
            group_sections = [
                (kind, title, comparison.group_changes(kind)) for kind, title in group_titles
            ]
    context = {
        "consultation": consultation,
        "form": form,
        "comparison": comparison,
        "sections": sections,
        "group_sections": group_sections,
    }
    if request.htmx:
        html = render_to_string(
            "consensus/run_compare.html#compare-result", context, request=request
        )
        response = HttpResponse(html, status=status)
    else:
        response = render(request, "consensus/run_compare.html", context, status=status)
    patch_vary_headers(response, ("HX-Request",))
    return response
