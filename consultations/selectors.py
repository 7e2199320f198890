"""Reads for consultations: visibility, proposal lists and live counters."""

import hashlib

from django.db.models import Count, Q, QuerySet, Sum
from django.db.models.functions import Coalesce, Least
from django.http import Http404

from causes.models import Cause

from .models import Consultation, Proposal, ProposalCounter, Vote, VoteKey

SORTS = ("recent", "popular", "controversial", "random")


def consultation_visible_list(*, user) -> QuerySet[Consultation]:
    """Consultations of causes the user may see; drafts and private causes stay hidden."""
    qs = Consultation.objects.select_related("cause")
    if user.is_authenticated and user.is_staff:
        return qs
    qs = qs.filter(cause__status__in=[Cause.Status.ACTIVE, Cause.Status.ARCHIVED])
    if user.is_authenticated:
        return qs.filter(
            ~Q(cause__kind=Cause.Kind.PRIVATE_CONSULTATION) | Q(cause__members=user)
        ).distinct()
    return qs.exclude(cause__kind=Cause.Kind.PRIVATE_CONSULTATION)


def consultation_get_for_user(*, slug: str, user) -> Consultation:
    """The consultation, or 404 when it does not exist or the user may not see it."""
    consultation = consultation_visible_list(user=user).filter(slug=slug).first()
    if consultation is None:
        raise Http404("No such consultation.")
    return consultation


def proposal_public_list(
    *, consultation: Consultation, query: str = "", sort: str = "recent", seed: str = ""
) -> QuerySet[Proposal]:
    """Accepted proposals, filtered by ``query`` and ordered by ``sort``.

    ``random`` is seeded per visitor: the order is a hash of (seed, id), so paging through it
    never repeats or skips a proposal.
    """
    qs = Proposal.objects.filter(consultation=consultation, status=Proposal.Status.ACCEPTED)
    if query:
        qs = qs.filter(content__icontains=query)
    if sort == "popular":
        return qs.order_by("-votes_total", "-pk")
    if sort == "controversial":
        agree = Sum("counters__count", filter=Q(counters__key=VoteKey.AGREE))
        disagree = Sum("counters__count", filter=Q(counters__key=VoteKey.DISAGREE))
        qs = qs.annotate(agree=agree, disagree=disagree)
        # The smaller of agree and disagree: large when both sides are numerous.
        return qs.annotate(
            balance=Least(Coalesce("agree", 0), Coalesce("disagree", 0))
        ).order_by("-balance", "-votes_total", "-pk")
    if sort == "random":
        ids = list(qs.values_list("pk", flat=True))
        ids.sort(key=lambda pk: hashlib.blake2b(f"{seed}:{pk}".encode(), digest_size=8).digest())
        return ids  # callers paginate the id list, then fetch the page
    return qs.order_by("-created_at", "-pk")


def proposal_vote_shares(*, proposal_ids) -> dict[int, dict]:
    """Counts per vote key (all trust levels) for the given proposals."""
    shares: dict[int, dict] = {pid: {k: 0 for k in VoteKey.values} for pid in proposal_ids}
    rows = (
        ProposalCounter.objects.filter(proposal_id__in=proposal_ids, key__in=VoteKey.values)
        .values("proposal_id", "key")
        .annotate(n=Sum("count"))
    )
    for row in rows:
        shares[row["proposal_id"]][row["key"]] = row["n"]
    for counts in shares.values():
        total = sum(counts.values())
        counts["total"] = total
        for key in VoteKey.values:
            counts[f"{key}_pct"] = round(100 * counts[key] / total) if total else 0
    return shares


def consultation_stats(*, consultation: Consultation) -> dict:
    """Live counters for a consultation's page: proposals, participants, votes, target."""
    proposals = Proposal.objects.filter(consultation=consultation).aggregate(
        accepted=Count("pk", filter=Q(status=Proposal.Status.ACCEPTED)),
        votes=Sum("votes_total", filter=Q(status=Proposal.Status.ACCEPTED)),
    )
    participants = (
        Vote.objects.filter(proposal__consultation=consultation).values("participant_id").distinct().count()
    )
    votes = proposals["votes"] or 0
    target = consultation.votes_target
    return {
        "proposals": proposals["accepted"],
        "participants": participants,
        "votes": votes,
        "votes_target": target,
        "target_pct": min(100, round(100 * votes / target)) if target else None,
    }

