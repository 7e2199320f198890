import secrets
from urllib.parse import urlencode

from django.conf import settings
from django.contrib import messages
from django.core.paginator import Paginator
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.cache import patch_vary_headers
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.http import HttpResponseClientRedirect

from causes.selectors import cause_visible_list
from config.ratelimit import rate_limited
from consensus import charts
from consensus import selectors as consensus_selectors
from partners.views import positions_context

from . import abuse, alerts
from . import text as proposal_text
from .forms import DemographicsForm, ProposalForm
from .models import QUALIFICATIONS_BY_VOTE, Proposal, Vote, VoteKey
from .selectors import (
    SORTS,
    SOURCE_SORTS,
    consultation_get_for_user,
    consultation_stats,
    consultations_by_phase,
    participant_votes,
    proposal_public_list,
    proposal_similar,
    proposal_vote_shares,
)
from .services import (
    ProposalError,
    VoteError,
    exposure_shown,
    participant_demographics_set,
    participant_from_request,
    participant_peek,
    popular_rank_refresh_soon,
    proposal_submit,
    qualification_toggle,
    sequence_start,
)

PAGE_SIZE = 20
DEFAULT_SHARES_MIN_VOTES = 10


def _shares_min_votes() -> int:
    return getattr(settings, "CONCORDE_SHARES_MIN_VOTES", DEFAULT_SHARES_MIN_VOTES)


def _render(request, template, context, *, partial=None, status=200):
    """Render the page, or only ``partial`` of it for an HTMX request (Vary: HX-Request)."""
    name = f"{template}#{partial}" if (partial and request.htmx) else template
    response = render(request, name, context, status=status)
    patch_vary_headers(response, ["HX-Request"])
    return response


def _bad_request(request, message, *, back_url=None, status=400):
    """A clear error: a page for a plain request, an alert fragment for an HTMX one.

    HTMX requests get the alert swapped into the page's ``#htmx-alerts`` region, so the card or
    form the user was on stays where it was.
    """
    if back_url is None:
        referer = request.META.get("HTTP_REFERER", "")
        safe = url_has_allowed_host_and_scheme(
            referer, allowed_hosts={request.get_host()}, require_https=request.is_secure()
        )
        back_url = referer if safe else "/"
    context = {"message": message, "back_url": back_url}
    if request.htmx:
        response = render(request, "consultations/error.html#alert", context, status=status)
        response["HX-Retarget"] = "#htmx-alerts"
        response["HX-Reswap"] = "innerHTML"
    else:
        response = render(request, "consultations/error.html", context, status=status)
    patch_vary_headers(response, ["HX-Request"])
    return response


def _login_redirect(request, next_url):
    url = f"{reverse('account_login')}?{urlencode({'next': next_url})}"
    if request.htmx:
        return HttpResponseClientRedirect(url)
    return redirect(url)


def home(request):
    causes = cause_visible_list(user=request.user).filter(status="active")[:12]
    phases = consultations_by_phase(user=request.user)
    with_stats = {
        phase: [(c, consultation_stats(consultation=c)) for c in phases[phase]]
        for phase in ("open", "finished")
    }
    return render(
        request,
        "home.html",
        {
            "causes": causes,
            "consultations": with_stats["open"],
            "upcoming": phases["upcoming"],
            "finished": with_stats["finished"],
        },
    )


def _visitor_seed(request) -> str:
    """A per-visitor seed so that a random order is stable while they page through it."""
    seed = request.session.get("list_seed")
    if not seed:
        seed = secrets.token_hex(8)
        request.session["list_seed"] = seed
    return seed


def _draft_key(consultation) -> str:
    return f"concorde_draft:{consultation.pk}"


def _detail_context(request, consultation, *, form=None, similar=None):
    query = request.GET.get("q", "").strip()[:100]
    stats = consultation_stats(consultation=consultation)
    sort = request.GET.get("sort", "recent")
    if sort not in SORTS or (sort in SOURCE_SORTS and not stats["source_votes"]):
        sort = "recent"
    seed = _visitor_seed(request) if sort == "random" else ""
    if sort in ("popular", "controversial"):
        popular_rank_refresh_soon(consultation=consultation)
    proposals = proposal_public_list(consultation=consultation, query=query, sort=sort, seed=seed)
    paginator = Paginator(proposals, PAGE_SIZE)
    if not query:
        # Every accepted proposal is listed (those with votes at the source, in their orders):
        # the live counters' count (cached) spares the pager a count of them all (1.2 s at 2M,
        # bench/word_search.py).
        paginator.count = stats["source_proposals" if sort in SOURCE_SORTS else "proposals"]
    page = paginator.get_page(request.GET.get("page"))
    items = list(page.object_list)
    shares = proposal_vote_shares(proposal_ids=[p.pk for p in items])
    if form is None:
        # A draft written before the login redirect comes back in the form.
        form = ProposalForm(initial={"content": request.session.get(_draft_key(consultation), "")})
    return {
        "consultation": consultation,
        "stats": stats,
        "page": page,
        "rows": [(p, shares[p.pk]) for p in items],
        "query": query,
        "sort": sort,
        "sorts": SORTS,
        "source_sort": sort in SOURCE_SORTS,
        # not for the list alone, which a search or a sort swaps in by HTMX
        **(
            {}
            if request.htmx and request.method == "GET"
            else alerts.alert_box(consultation=consultation, user=request.user)
        ),
        "form": form,
        "similar": similar,
        # Room for the prefix too, in case the user types it; the service counts exactly.
        "content_maxlength": consultation.proposal_max_length
        + len(consultation.proposal_prefix)
        + 1,
    }


@require_GET
def consultation_detail(request, slug):
    consultation = consultation_get_for_user(slug=slug, user=request.user)
    return _render(
        request,
        "consultations/consultation_detail.html",
        _detail_context(request, consultation),
        partial="proposal-list",
    )


# Proposing -----------------------------------------------------------------------------------


@require_http_methods(["GET", "POST"])
@rate_limited("propose")
def proposal_create(request, slug):
    """POST a proposal. Anonymous visitors keep their draft in the session and log in first.

    Rate-limited per hashed IP and per account (429), and refused with a clear message when the
    bot protection (honeypot, signed form timestamp) trips: nothing is stored then, not even
    the anonymous draft (consultations/abuse.py).
    """
    consultation = consultation_get_for_user(slug=slug, user=request.user)
    back = f"{consultation.get_absolute_url()}#propose"
    if request.method == "GET":
        return redirect(back)
    if not consultation.accepts_proposals:
        return _bad_request(
            request,
            _("This consultation does not accept proposals at the moment."),
            back_url=consultation.get_absolute_url(),
        )
    form = ProposalForm(request.POST)
    if not form.is_valid():
        return _render(
            request,
            "consultations/consultation_detail.html",
            _detail_context(request, consultation, form=form),
            status=400,
        )
    bot_error = abuse.proposal_bot_check(request.POST)
    if bot_error:
        form.add_error("content", bot_error)
        return _render(
            request,
            "consultations/consultation_detail.html",
            _detail_context(request, consultation, form=form),
            status=400,
        )
    text = form.cleaned_data["content"]
    if not request.user.is_authenticated:
        request.session[_draft_key(consultation)] = text
        messages.info(
            request, _("Log in or sign up to send your proposal: we kept what you wrote.")
        )
        return _login_redirect(request, back)
    try:
        proposal = proposal_submit(consultation=consultation, user=request.user, text=text)
    except ProposalError as error:
        form.add_error("content", str(error))
        return _render(
            request,
            "consultations/consultation_detail.html",
            _detail_context(request, consultation, form=form),
        )
    request.session.pop(_draft_key(consultation), None)
    back = consultation.get_absolute_url()  # the message shows at the top of the page
    if proposal.status == Proposal.Status.ACCEPTED:
        messages.success(request, _("Thank you! Your proposal is published."))
    else:
        messages.success(
            request,
            _(
                "Thank you! Moderators will read your proposal within 48 hours; "
                "we will e-mail you when it is published."
            ),
        )
    return redirect(back)


@require_GET
def proposal_similar_list(request, slug):
    """Accepted proposals like the text being typed (HTMX), or the page with them (no JS)."""
    consultation = consultation_get_for_user(slug=slug, user=request.user)
    text = request.GET.get("content", "")[:2000]
    rest = proposal_text.strip_prefix(text, consultation.proposal_prefix)
    # Nothing to compare yet (a few letters typed): show nothing rather than "no match".
    similar = (
        proposal_similar(consultation=consultation, text=text)
        if proposal_text.significant_words(rest)
        else None
    )
    if request.htmx:
        return _render(
            request,
            "consultations/consultation_detail.html",
            {"consultation": consultation, "similar": similar},
            partial="similar",
        )
    form = ProposalForm(initial={"content": text})
    return _render(
        request,
        "consultations/consultation_detail.html",
        _detail_context(request, consultation, form=form, similar=similar),
    )


# The sequence --------------------------------------------------------------------------------


def _sequence_key(consultation) -> str:
    return f"concorde_sequence:{consultation.pk}"


VOTE_SHORTCUTS = {VoteKey.AGREE: "A", VoteKey.DISAGREE: "D", VoteKey.NEUTRAL: "N"}


def _vote_choices(vote=None):
    return [
        {
            "key": key.value,
            "label": key.label,
            "shortcut": VOTE_SHORTCUTS[key],
            "on": bool(vote and vote.key == key),
        }
        for key in VoteKey
    ]


def _qualification_choices(vote):
    on = {q.key for q in vote.qualifications.all()}
    return [
        {"key": key.value, "label": key.label, "shortcut": str(i), "on": key.value in on}
        for i, key in enumerate(QUALIFICATIONS_BY_VOTE[VoteKey(vote.key)], start=1)
    ]


# Cards a participant goes through before the card that asks who they are (Make.org: after the
# second or the third), when the consultation asks it
DEMOGRAPHICS_AFTER = 2


def _asks_demographics(consultation, participant, position: int) -> bool:
    return (
        consultation.ask_demographics
        and participant.demographics_asked_at is None
        and position >= DEMOGRAPHICS_AFTER
    )


def _sequence_card(request, consultation, participant, *, demographics_form=None):
    """The context of the sequence's current card, from the session's sequence state.

    States: ``intro`` (no sequence yet), ``vote``, ``qualify`` (voted, qualifications and
    "next"), ``demographics`` (who takes part, once per participant, before the card it comes
    before is shown), ``end``, ``empty`` (nothing left to vote on) and ``closed``.
    """
    context = {"consultation": consultation, "size": consultation.sequence_size}
    if not consultation.is_open:
        return {**context, "card": "closed"}
    state = request.session.get(_sequence_key(consultation))
    if not state or participant is None:
        return {**context, "card": "intro"}
    items = state["items"]
    if not items:
        return {**context, "card": "empty"}
    position = state["pos"]
    while position < len(items):
        proposal_id, token, _pool = items[position]
        proposal = Proposal.objects.filter(
            pk=proposal_id, consultation=consultation, status=Proposal.Status.ACCEPTED
        ).first()
        if proposal is not None:
            break
        position += 1  # refused or archived since the sequence started: skip it
    if position != state["pos"]:
        state["pos"] = position
        request.session.modified = True
    if position >= len(items):
        box = alerts.alert_box(consultation=consultation, user=request.user)
        return {**context, **box, "card": "end", "total": len(items)}
    if _asks_demographics(consultation, participant, position):
        return {
            **context,
            "card": "demographics",
            "form": demographics_form or DemographicsForm(),
            # the results' smallest group shown (k-anonymity of the segment tables)
            "min_segment": max(1, int(getattr(settings, "CONSENSUS_MIN_SEGMENT_SIZE", 10))),
        }
    if state.get("shown", 0) <= position:
        # One write per card, at its first display (the results count the cards shown).
        exposure_shown(sequence_id=state["id"], position=position + 1)
        state["shown"] = position + 1
        request.session.modified = True
    vote = participant_votes(participant=participant, proposal_ids=[proposal.pk]).get(proposal.pk)
    context.update(
        proposal=proposal,
        token=token,
        position=position + 1,
        total=len(items),
        vote=vote,
        votes=_vote_choices(vote),
    )
    if vote is None:
        return {**context, "card": "vote"}
    # Once voted, how people voted: never before the vote, which it would sway.
    return {
        **context,
        "card": "qualify",
        "qualifications": _qualification_choices(vote),
        "shares": proposal_vote_shares(proposal_ids=[proposal.pk])[proposal.pk],
        "shares_min_votes": _shares_min_votes(),
    }


def _sequence_response(request, consultation, participant, *, status=200):
    return _render(
        request,
        "consultations/sequence.html",
        _sequence_card(request, consultation, participant),
        partial="card",
        status=status,
    )


@require_http_methods(["GET", "POST"])
@rate_limited("sequence")
def sequence(request, slug):
    """GET: the current card (or the intro). POST: start a new sequence."""
    consultation = consultation_get_for_user(slug=slug, user=request.user)
    if request.method == "GET":
        return _sequence_response(request, consultation, participant_peek(request))
    if not consultation.is_open:
        return _bad_request(request, _("This consultation is not open to votes."))
    participant = participant_from_request(request)
    started = sequence_start(consultation=consultation, participant=participant)
    request.session[_sequence_key(consultation)] = {
        "id": str(started.id),
        "items": [[item.proposal_id, item.token, item.pool] for item in started.items],
        "pos": 0,
    }
    if not request.htmx:
        return redirect("consultations:sequence", slug=consultation.slug)
    return _sequence_response(request, consultation, participant)


@require_POST
def sequence_next(request, slug):
    """Move to the next card. ``position`` (1-based) makes a double submit move only once."""
    consultation = consultation_get_for_user(slug=slug, user=request.user)
    state = request.session.get(_sequence_key(consultation))
    try:
        position = int(request.POST.get("position", ""))
    except ValueError:
        return _bad_request(request, _("Bad card position."))
    if state and state["pos"] == position - 1 and state["pos"] < len(state["items"]):
        state["pos"] += 1
        request.session.modified = True
    if not request.htmx:
        return redirect("consultations:sequence", slug=consultation.slug)
    return _sequence_response(request, consultation, participant_peek(request))


@require_POST
@rate_limited("sequence")
def sequence_demographics(request, slug):
    """The demographics card: ``decline`` (no answer), or the answers, each optional. Either
    way the participant is not asked again, and the sequence goes on."""
    consultation = consultation_get_for_user(slug=slug, user=request.user)
    participant = participant_peek(request)
    if participant is None or not consultation.ask_demographics:
        return _bad_request(request, _("There is no question to answer here."))
    if not consultation.is_open:
        return _bad_request(request, _("This consultation is not open to votes."))
    if "decline" in request.POST:
        participant_demographics_set(participant=participant)
    else:
        form = DemographicsForm(request.POST)
        if not form.is_valid():  # the card again, with what was typed and why it is refused
            return _render(
                request,
                "consultations/sequence.html",
                _sequence_card(request, consultation, participant, demographics_form=form),
                partial="card",
                status=200 if request.htmx else 400,
            )
        participant_demographics_set(participant=participant, **form.cleaned_data)
    if not request.htmx:
        return redirect("consultations:sequence", slug=consultation.slug)
    participant.refresh_from_db(fields=["demographics_asked_at"])
    return _sequence_response(request, consultation, participant)


def _after_vote(request, consultation, proposal, participant):
    """Back to where the vote came from (``from``): the sequence or the proposal's page."""
    if request.POST.get("from") == "sequence":
        if not request.htmx:
            return redirect("consultations:sequence", slug=consultation.slug)
        return _sequence_response(request, consultation, participant)
    if not request.htmx:
        return redirect(proposal.get_absolute_url())
    return _render(
        request,
        "consultations/proposal_detail.html",
        _proposal_context(proposal, participant),
        partial="vote-box",
    )


def _voting_proposal(request, slug, pk):
    consultation = consultation_get_for_user(slug=slug, user=request.user)
    proposal = get_object_or_404(
        Proposal.objects.select_related("consultation"),
        pk=pk,
        consultation=consultation,
        status=Proposal.Status.ACCEPTED,
    )
    return consultation, proposal


@require_POST
@rate_limited("vote")
def proposal_vote(request, slug, pk):
    """POST key (agree/disagree/neutral) and, from a sequence, the card's token.

    Rate-limited per hashed IP and per account or session (429); bursts are flagged for
    moderators and a flagged participant's votes are untrusted (consultations/abuse.py).
    """
    consultation, proposal = _voting_proposal(request, slug, pk)
    key = request.POST.get("key", "")
    if key not in VoteKey.values:
        return _bad_request(request, _("Choose agree, disagree or neutral."))
    if not consultation.is_open:
        return _bad_request(request, _("This consultation is not open to votes."))
    participant = participant_from_request(request)
    try:
        abuse.vote_submit_watched(
            request=request,
            participant=participant,
            proposal=proposal,
            key=key,
            token=request.POST.get("token", "")[:200],
        )
    except VoteError as error:
        return _bad_request(request, str(error))
    return _after_vote(request, consultation, proposal, participant)


@require_POST
@rate_limited("qualify")
def proposal_qualify(request, slug, pk):
    """Toggle a qualification on the participant's vote on this proposal."""
    consultation, proposal = _voting_proposal(request, slug, pk)
    if not consultation.is_open:
        return _bad_request(request, _("This consultation is not open to votes."))
    participant = participant_peek(request)
    vote = (
        Vote.objects.filter(participant=participant, proposal=proposal).first()
        if participant
        else None
    )
    if vote is None:
        return _bad_request(request, _("Vote on the proposal before qualifying your vote."))
    try:
        qualification_toggle(vote=vote, key=request.POST.get("key", ""))
    except VoteError:
        return _bad_request(request, _("This qualification does not go with your vote."))
    return _after_vote(request, consultation, proposal, participant)


def _proposal_context(proposal, participant):
    shares = proposal_vote_shares(proposal_ids=[proposal.pk])[proposal.pk]
    vote = participant_votes(participant=participant, proposal_ids=[proposal.pk]).get(proposal.pk)
    return {
        "consultation": proposal.consultation,
        "proposal": proposal,
        "shares": shares,
        "shares_min_votes": _shares_min_votes(),
        "vote": vote,
        "votes": _vote_choices(vote),
        "qualifications": _qualification_choices(vote) if vote else [],
    }


@require_GET
def proposal_detail(request, slug, pk):
    consultation, proposal = _voting_proposal(request, slug, pk)
    context = _proposal_context(proposal, participant_peek(request))
    if not request.htmx:
        context["idea"] = idea = consensus_selectors.proposal_idea(proposal=proposal)
        if idea is not None:
            context["idea_others"] = consensus_selectors.idea_others(idea=idea, proposal=proposal)
            context["also_close"] = consensus_selectors.proposal_also_close(
                proposal=proposal, idea=idea
            )
        context["analysis"] = analysis = consensus_selectors.proposal_analysis(proposal=proposal)
        if analysis:
            charts.group_vote_bars(analysis["groups"])
        context.update(positions_context(proposal=proposal, user=request.user))
    return _render(request, "consultations/proposal_detail.html", context, partial="vote-box")
