import secrets

from django.core.paginator import Paginator
from django.shortcuts import get_object_or_404, render
from django.utils.cache import patch_vary_headers

from causes.selectors import cause_visible_list

from .models import Proposal
from .selectors import (
    SORTS,
    consultation_get_for_user,
    consultation_stats,
    consultation_visible_list,
    proposal_public_list,
    proposal_vote_shares,
)

PAGE_SIZE = 20


def home(request):
    causes = cause_visible_list(user=request.user).filter(status="active")[:12]
    consultations = list(consultation_visible_list(user=request.user)[:12])
    stats = {c.pk: consultation_stats(consultation=c) for c in consultations}
    return render(
        request,
        "home.html",
        {"causes": causes, "consultations": [(c, stats[c.pk]) for c in consultations]},
    )


def _visitor_seed(request) -> str:
    """A per-visitor seed so that a random order is stable while they page through it."""
    seed = request.session.get("list_seed")
    if not seed:
        seed = secrets.token_hex(8)
        request.session["list_seed"] = seed
    return seed


def consultation_detail(request, slug):
    consultation = consultation_get_for_user(slug=slug, user=request.user)
    query = request.GET.get("q", "").strip()[:100]
    sort = request.GET.get("sort", "recent")
    if sort not in SORTS:
        sort = "recent"
    seed = _visitor_seed(request) if sort == "random" else ""
    proposals = proposal_public_list(consultation=consultation, query=query, sort=sort, seed=seed)
    page = Paginator(proposals, PAGE_SIZE).get_page(request.GET.get("page"))
    if sort == "random":
        by_id = Proposal.objects.in_bulk(list(page.object_list))
        items = [by_id[pk] for pk in page.object_list if pk in by_id]
    else:
        items = list(page.object_list)
    shares = proposal_vote_shares(proposal_ids=[p.pk for p in items])
    context = {
        "consultation": consultation,
        "stats": consultation_stats(consultation=consultation),
        "page": page,
        "rows": [(p, shares[p.pk]) for p in items],
        "query": query,
        "sort": sort,
        "sorts": SORTS,
    }
    template = "consultations/consultation_detail.html"
    if request.htmx:
        template += "#proposal-list"
    response = render(request, template, context)
    patch_vary_headers(response, ["HX-Request"])
    return response


def proposal_detail(request, slug, pk):
    consultation = consultation_get_for_user(slug=slug, user=request.user)
    proposal = get_object_or_404(
        Proposal, pk=pk, consultation=consultation, status=Proposal.Status.ACCEPTED
    )
    shares = proposal_vote_shares(proposal_ids=[proposal.pk])[proposal.pk]
    return render(
        request,
        "consultations/proposal_detail.html",
        {"consultation": consultation, "proposal": proposal, "shares": shares},
    )
