"""Moderation pages: the "next proposal" flow, the list with bulk accept, and public statistics.

Thin views over ``consultations.moderation``. Every lookup goes through the moderator's scope
(``moderation_proposal_get`` / ``moderation_consultation_get`` raise 404), for full pages and
HTMX partials alike.
"""

import functools
from urllib.parse import urlencode

from django import forms
from django.contrib import messages
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import Http404
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy, ngettext
from django.views.decorators.http import require_GET, require_POST

from .classifier import classifier_predict_missing, classifier_status
from .forms import ModerationForm
from .models import Consultation, Proposal
from .moderation import (
    ORDERS,
    ModerationError,
    moderation_assistance,
    moderation_bulk_accept,
    moderation_consultation_get,
    moderation_consultations,
    moderation_decide,
    moderation_edit,
    moderation_languages,
    moderation_lock_duration,
    moderation_next,
    moderation_pending_count,
    moderation_proposal_get,
    moderation_public_stats,
    moderation_queue_list,
    moderation_release,
    moderator_allowed,
    proposal_edit_history,
    spelling_allowance,
)
from .selectors import consultation_get_for_user
from .views import _bad_request, _render

TEMPLATE = "consultations/moderation.html"
SESSION_SKIPS = "moderation_skips"
MAX_SKIPS = 500
LIST_PAGE_SIZE = 50

# Keys of the refusal reasons in the "next proposal" flow: R opens the list, then one of these.
REASON_KEYS = "1234567890-"


def moderator_required(view):
    """Moderators only: anonymous visitors go to the login page, other users get a 403."""

    @functools.wraps(view)
    def wrapper(request, *args, **kwargs):
        if not request.user.is_authenticated:
            return redirect_to_login(request.get_full_path(), reverse("account_login"))
        if not moderator_allowed(request.user):
            raise PermissionDenied
        return view(request, *args, **kwargs)

    return wrapper


class EditForm(forms.Form):
    content = forms.CharField(label=gettext_lazy("Corrected text"), max_length=1000)


class Filters:
    """The queue's filters (consultation, language, order), read from GET or POST."""

    def __init__(self, request):
        data = request.POST if request.method == "POST" else request.GET
        slug = data.get("c") or ""
        self.consultation = (
            moderation_consultation_get(moderator=request.user, slug=slug) if slug else None
        )
        self.language = data.get("lang") or ""
        if self.language and self.language not in Consultation.Language.values:
            raise Http404("Unknown language.")
        self.order = data.get("order") if data.get("order") in ORDERS else "oldest"

    def params(self) -> dict:
        params = {}
        if self.consultation is not None:
            params["c"] = self.consultation.slug
        if self.language:
            params["lang"] = self.language
        if self.order != "oldest":
            params["order"] = self.order
        return params

    def query(self) -> str:
        params = self.params()
        return f"?{urlencode(params)}" if params else ""


def _skips(request) -> list[int]:
    return [int(pk) for pk in request.session.get(SESSION_SKIPS, []) if str(pk).isdigit()]


def _queue_context(request, filters: Filters, **extra) -> dict:
    moderator = request.user
    skips = _skips(request)
    proposal = moderation_next(
        moderator=moderator,
        consultation=filters.consultation,
        language=filters.language,
        order=filters.order,
        skip=skips,
    )
    context = {
        "proposal": proposal,
        "filters": filters,
        "filter": filters.consultation,
        "consultations": moderation_consultations(moderator=moderator),
        "languages": moderation_languages(moderator=moderator),
        "orders": [("oldest", _("Oldest first")), ("refusals", _("Likely refusals first"))],
        "pending": moderation_pending_count(
            moderator=moderator, consultation=filters.consultation, language=filters.language
        ),
        "skipped": len(skips),
        "lock_minutes": int(moderation_lock_duration().total_seconds() // 60),
        "reasons": [
            (value, label, REASON_KEYS[i] if i < len(REASON_KEYS) else "")
            for i, (value, label) in enumerate(Proposal.RefusalReason.choices)
        ],
        "classifier": classifier_status(consultation=filters.consultation),
        **extra,
    }
    if proposal is not None:
        classifier_predict_missing(proposals=[proposal])
        context.update(
            assistance=moderation_assistance(proposal=proposal),
            edits=list(proposal_edit_history(proposal=proposal)[:10]),
            spelling_allowance=spelling_allowance(proposal.content),
            prediction=getattr(proposal, "prediction", None),
        )
    return context


def _queue_response(request, filters: Filters, **extra):
    if request.htmx or request.method == "GET":
        return _render(
            request, TEMPLATE, _queue_context(request, filters, **extra), partial="queue"
        )
    if extra.get("done"):
        messages.success(request, extra["done"])
    return redirect(reverse("moderation:queue") + filters.query())


@require_GET
@moderator_required
def moderation_queue(request):
    """The next pending proposal of the moderator's scope, locked for them, with the tools."""
    filters = Filters(request)
    if request.GET.get("reset_skips"):
        request.session[SESSION_SKIPS] = []
    return _render(request, TEMPLATE, _queue_context(request, filters), partial="queue")


@require_POST
@moderator_required
def moderation_decision(request, pk):
    filters = Filters(request)
    proposal = moderation_proposal_get(moderator=request.user, pk=pk)
    form = ModerationForm(request.POST)
    if not form.is_valid():
        return _bad_request(request, _("Choose accept, refuse or postpone, and a known reason."))
    try:
        moderation_decide(
            moderator=request.user,
            proposal=proposal,
            decision=form.cleaned_data["decision"],
            reason=form.cleaned_data["reason"],
        )
    except ModerationError as error:
        return _bad_request(request, str(error))
    labels = {"accept": _("Accepted"), "refuse": _("Refused"), "postpone": _("Postponed")}
    done = f"{labels[form.cleaned_data['decision']]}: {proposal.content}"
    return _queue_response(request, filters, done=done)


@require_POST
@moderator_required
def moderation_skip(request, pk):
    """Pass over this proposal for now ("next"): its lock is released for the other moderators."""
    filters = Filters(request)
    proposal = moderation_proposal_get(moderator=request.user, pk=pk)
    moderation_release(moderator=request.user, proposal=proposal)
    skips = [p for p in _skips(request) if p != proposal.pk][-(MAX_SKIPS - 1) :]
    request.session[SESSION_SKIPS] = [*skips, proposal.pk]
    return _queue_response(
        request, filters, done=_("Skipped: %(content)s") % {"content": proposal.content}
    )


@require_POST
@moderator_required
def moderation_edit_view(request, pk):
    """Correct the spelling of the proposal (history kept); larger changes are refused."""
    filters = Filters(request)
    proposal = moderation_proposal_get(moderator=request.user, pk=pk)
    form = EditForm(request.POST)
    if not form.is_valid():
        return _bad_request(request, _("Write the corrected text."))
    try:
        edit = moderation_edit(
            moderator=request.user, proposal=proposal, content=form.cleaned_data["content"]
        )
    except ModerationError as error:
        return _bad_request(request, str(error))
    done = _("Spelling corrected: %(after)s") % {"after": edit.after}
    return _queue_response(request, filters, done=done)


@require_GET
@moderator_required
def moderation_list(request):
    """Pending proposals of the moderator's scope, with the classifier's guess, for bulk accept."""
    filters = Filters(request)
    queryset = moderation_queue_list(
        moderator=request.user,
        consultation=filters.consultation,
        language=filters.language,
        order=filters.order,
    )
    page = Paginator(queryset, LIST_PAGE_SIZE).get_page(request.GET.get("page"))
    proposals = list(page.object_list)
    classifier_predict_missing(proposals=proposals)
    return render(
        request,
        "consultations/moderation_list.html",
        {
            "page": page,
            "proposals": proposals,
            "filters": filters,
            "filter": filters.consultation,
            "consultations": moderation_consultations(moderator=request.user),
            "languages": moderation_languages(moderator=request.user),
            "orders": [("oldest", _("Oldest first")), ("refusals", _("Likely refusals first"))],
            "classifier": classifier_status(consultation=filters.consultation),
        },
    )


@require_POST
@moderator_required
def moderation_bulk(request):
    """Accept the ticked proposals; each is checked against the scope and gets its audit entry."""
    filters = Filters(request)
    try:
        result = moderation_bulk_accept(
            moderator=request.user,
            proposal_ids=request.POST.getlist("ids"),
        )
    except ModerationError as error:
        return _bad_request(request, str(error))
    if result.accepted:
        messages.success(
            request,
            ngettext("%(n)d proposal accepted.", "%(n)d proposals accepted.", len(result.accepted))
            % {"n": len(result.accepted)},
        )
    for pk, message in result.errors:
        messages.error(request, _("Proposal #%(pk)s: %(message)s") % {"pk": pk, "message": message})
    if not result.accepted:
        return _bad_request(
            request,
            _("No proposal was accepted."),
            back_url=reverse("moderation:list") + filters.query(),
        )
    return redirect(reverse("moderation:list") + filters.query())


@require_GET
def moderation_stats(request, slug):
    """Public moderation statistics of a consultation (cached)."""
    consultation = consultation_get_for_user(slug=slug, user=request.user)
    stats = moderation_public_stats(consultation=consultation)
    return render(
        request,
        "consultations/moderation_stats.html",
        {"consultation": consultation, "stats": stats},
    )
