"""Reads for consultations: visibility, proposal lists and live counters."""

import hashlib
import logging
import re

from django.conf import settings
from django.core.cache import cache
from django.db import connection, transaction
from django.db.models import Count, Q, QuerySet, Sum
from django.db.models.functions import Coalesce, Least
from django.http import Http404
from django.utils import timezone

from causes.models import Cause

from . import text as proposal_text
from .models import (
    SHUFFLE_KEY,
    SHUFFLE_SPAN,
    Consultation,
    Participant,
    Proposal,
    ProposalCounter,
    ProposalRank,
    Trust,
    Vote,
    VoteKey,
)
from .sequence import Candidate, SequenceSettings

logger = logging.getLogger(__name__)

SORTS = ("recent", "popular", "controversial", "random", "source_votes", "source_support")
# The orders by the votes an imported proposal received at the source: the proposals with such
# votes only, through proposal_source_votes_idx and proposal_source_support_idx.
SOURCE_SORTS = {"source_votes": "-source_votes", "source_support": "-source_support_low"}


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


def consultations_by_phase(*, user, limit: int = 12) -> dict[str, list[Consultation]]:
    """The consultations ``user`` may see, by phase: ``open`` (newest first), ``upcoming``
    (soonest first) and ``finished`` (most recently closed first), ``limit`` of each."""
    now = timezone.now()
    qs = consultation_visible_list(user=user)
    return {
        "open": list(
            qs.filter(Q(ends_at__isnull=True) | Q(ends_at__gt=now), starts_at__lte=now)[:limit]
        ),
        "upcoming": list(qs.filter(starts_at__gt=now).order_by("starts_at")[:limit]),
        "finished": list(qs.filter(ends_at__lte=now).order_by("-ends_at")[:limit]),
    }


def consultation_get_for_user(*, slug: str, user) -> Consultation:
    """The consultation, or 404 when it does not exist or the user may not see it."""
    consultation = consultation_visible_list(user=user).filter(slug=slug).first()
    if consultation is None:
        raise Http404("No such consultation.")
    return consultation


def content_saying(words: str, *, field: str = "content") -> Q:
    """Rows whose ``field`` (a proposal's content) contains ``words``, in any case.

    A case-insensitive regular expression of the escaped words: on PostgreSQL the trigram index
    on proposals' content answers it (``icontains`` compares ``UPPER(content)``, which that
    index cannot), on SQLite Python's ``re`` folds the case of every letter, not only ASCII's.
    """
    return Q(**{f"{field}__iregex": re.escape(words)})


def proposal_public_list(
    *, consultation: Consultation, query: str = "", sort: str = "recent", seed: str = ""
) -> "QuerySet[Proposal] | ShuffledProposals":
    """Accepted proposals, filtered by ``query`` and ordered by ``sort`` (``SORTS``); the orders
    by the votes at the source list only the proposals that have some.

    Every order reads an index, so a page costs the same at 2M proposals as at 20
    (``bench/word_search.py``). ``random`` is seeded per visitor (``ShuffledProposals``): paging
    through it never repeats or skips a proposal.
    """
    qs = Proposal.objects.filter(consultation=consultation, status=Proposal.Status.ACCEPTED)
    if query:
        qs = qs.filter(content_saying(query))
    if sort in ("popular", "controversial"):
        if not ProposalRank.objects.filter(consultation=consultation).exists():
            # Not ranked yet (its first ranking is on its way): the live figures, unindexed.
            return _live_order(qs, sort)
        # The ranks refreshed from the totals and counters (services.popular_rank_refresh),
        # read in the order of rank_popular_idx or rank_debated_idx; a proposal accepted since
        # the last refresh is not ranked yet.
        qs = qs.filter(rank__consultation=consultation)
        if sort == "popular":
            return qs.order_by("-rank__votes", "-rank__proposal_id")
        return qs.order_by("-rank__balance", "-rank__votes", "-rank__proposal_id")
    if sort in SOURCE_SORTS:
        return qs.filter(source_votes__gt=0).order_by(SOURCE_SORTS[sort], "-pk")
    if sort == "random":
        return ShuffledProposals(qs, seed)
    return qs.order_by("-created_at", "-pk")


def _live_order(qs: QuerySet[Proposal], sort: str) -> QuerySet[Proposal]:
    if sort == "popular":
        return qs.order_by("-votes_total", "-pk")
    agree = Sum("counters__count", filter=Q(counters__key=VoteKey.AGREE))
    disagree = Sum("counters__count", filter=Q(counters__key=VoteKey.DISAGREE))
    qs = qs.annotate(agree=agree, disagree=disagree)
    # The smaller of agree and disagree: large when both sides are numerous.
    return qs.annotate(balance=Least(Coalesce("agree", 0), Coalesce("disagree", 0))).order_by(
        "-balance", "-votes_total", "-pk"
    )


class ShuffledProposals:
    """Proposals shuffled, read from a place of the visitor's own, a page at a time by index.

    The order is one fixed shuffle of the ids (``SHUFFLE_KEY``, through proposal_shuffle_idx)
    read from a start drawn from the visitor's ``seed`` and wrapping around: every visitor meets
    the proposals in another place of it. A proposal's chance to be on a visitor's first page
    is its share of the shuffle's span up to the 20th proposal before it: within 8 % of the
    mean for consecutive ids, from 0.3 to 2.3 times it (99 % under 1.6 times) where other
    consultations' ids fall between (docs/scaling.md, item 8). A page is one index range (two at
    the wrap), never the whole list: hashing every id per request took 2.9 s at 2M proposals.
    Slicing gives a list, as ``Paginator`` expects.
    """

    def __init__(self, qs: QuerySet[Proposal], seed: str):
        digest = hashlib.blake2b(seed.encode(), digest_size=8).digest()
        self.start = int.from_bytes(digest, "big") % SHUFFLE_SPAN
        rows = qs.annotate(shuffle=SHUFFLE_KEY).order_by("shuffle")
        self.qs = qs
        self.head = rows.filter(shuffle__gte=self.start)  # from the start to the end
        self.tail = rows.filter(shuffle__lt=self.start)  # then from the beginning to the start

    def count(self) -> int:
        return self.qs.count()

    def __getitem__(self, page: slice) -> list[Proposal]:
        if not isinstance(page, slice) or page.step is not None:
            raise TypeError("ShuffledProposals reads pages: slices without a step")
        lo, hi = page.start or 0, page.stop
        if hi is None or hi <= lo:
            return []
        rows = list(self.head[lo:hi])
        if len(rows) == hi - lo:
            return rows
        # The head ran out within this page (its length is then known) or before it.
        in_head = lo + len(rows) if rows else self.head.count()
        return rows + list(self.tail[max(0, lo - in_head) : hi - in_head])


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


# Changed when the stats gain or lose a key, so that a deployment never reads the old shape.
STATS_CACHE_PREFIX = "consultation-stats:2"


def stats_cache_key(consultation: Consultation) -> str:
    """The cache key of ``consultation_stats``: it changes when a run becomes current."""
    return f"{STATS_CACHE_PREFIX}:{consultation.pk}:{consultation.current_run_id or 0}"


def stats_cache_delete(consultation_id: int, *run_ids) -> None:
    """Forget cached stats of a consultation (for the given current-run ids); never raises."""
    keys = [
        f"{STATS_CACHE_PREFIX}:{consultation_id}:{run_id or 0}" for run_id in run_ids or (None,)
    ]
    try:
        cache.delete_many(keys)
    except Exception:  # noqa: BLE001 - a cache outage must not break the caller
        logger.warning("stats cache delete failed", exc_info=True)


def consultation_stats(*, consultation: Consultation) -> dict:
    """Counters for a consultation's page: proposals, participants, votes, target, and the
    votes its imported proposals received at the source (and how many proposals have some).

    Cached for ``CONCORDE_STATS_CACHE_SECONDS`` (0: not cached) because counting distinct
    participants reads every vote. Any cache error falls back to computing.
    """
    ttl = getattr(settings, "CONCORDE_STATS_CACHE_SECONDS", 30)
    if not ttl:
        return _consultation_stats(consultation)
    key = stats_cache_key(consultation)
    try:
        cached = cache.get(key)
    except Exception:  # noqa: BLE001 - Redis down: compute
        logger.warning("stats cache get failed", exc_info=True)
        cached = None
    if cached is not None:
        return cached
    stats = _consultation_stats(consultation)
    try:
        cache.set(key, stats, ttl)
    except Exception:  # noqa: BLE001
        logger.warning("stats cache set failed", exc_info=True)
    return stats


def _consultation_stats(consultation: Consultation) -> dict:
    proposals = Proposal.objects.filter(consultation=consultation).aggregate(
        accepted=Count("pk", filter=Q(status=Proposal.Status.ACCEPTED)),
        votes=Sum("votes_total", filter=Q(status=Proposal.Status.ACCEPTED)),
        at_source=Sum("source_votes", filter=Q(status=Proposal.Status.ACCEPTED)),
        with_source=Count("pk", filter=Q(status=Proposal.Status.ACCEPTED, source_votes__gt=0)),
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
        "source_votes": proposals["at_source"] or 0,
        "source_proposals": proposals["with_source"],
        "votes_target": target,
        "target_pct": min(100, round(100 * votes / target)) if target else None,
    }


def sequence_settings(consultation: Consultation) -> SequenceSettings:
    return SequenceSettings(
        size=consultation.sequence_size,
        new_ratio=consultation.sequence_new_ratio,
        controversy_ratio=consultation.sequence_controversy_ratio,
        new_votes_threshold=consultation.sequence_new_votes_threshold,
        tested_max_votes=consultation.sequence_tested_max_votes,
        non_sequence_votes_weight=consultation.non_sequence_votes_weight,
    )


def sequence_candidates(
    *, consultation: Consultation, exclude_ids=frozenset(), newest: int | None = None
) -> list[Candidate]:
    """The accepted proposals of ``consultation`` as sequence candidates (two queries).

    ``sequence`` counts are the votes and qualifications cast in sequences; ``verified`` adds
    the trusted ones (Make.org's ``countVerified``). Untrusted votes count in neither. An
    author's proposals share an author key; imported proposals without an account each have
    their own. Keywords are the dominant words of the text, for de-duplication. ``newest``
    keeps only the N most recent accepted proposals (read through ``proposal_queue_idx``, their
    counters by proposal): a bounded read whatever the size of the consultation.
    """
    prefix = consultation.proposal_prefix
    rows = Proposal.objects.filter(
        consultation=consultation, status=Proposal.Status.ACCEPTED
    ).values_list("pk", "author_id", "created_at", "content")
    rows = rows.order_by("-created_at")[:newest] if newest is not None else rows.order_by()
    proposals = [row for row in rows if row[0] not in exclude_ids]
    sequence: dict[int, dict[str, int]] = {pk: {} for pk, *_rest in proposals}
    verified: dict[int, dict[str, int]] = {pk: {} for pk, *_rest in proposals}
    counters = ProposalCounter.objects.filter(trust__in=[Trust.TRUSTED, Trust.SEQUENCE])
    if newest is not None:
        counters = counters.filter(proposal_id__in=list(verified))
    else:
        # counter_consultation_idx: counters of one consultation without a join on proposals
        # (the counters of proposals that are not accepted are skipped below).
        counters = counters.filter(consultation=consultation)
    counters = counters.values_list("proposal_id", "key", "trust", "count")
    for pid, key, trust, count in counters:
        if pid not in verified or count <= 0:
            continue
        verified[pid][key] = verified[pid].get(key, 0) + count
        if trust == Trust.SEQUENCE:
            sequence[pid][key] = sequence[pid].get(key, 0) + count
    return [
        Candidate(
            id=pk,
            author_key=f"u{author_id}" if author_id else f"p{pk}",
            created_at=created_at,
            keywords=proposal_text.dominant_keywords(proposal_text.strip_prefix(content, prefix)),
            verified=verified[pk],
            sequence=sequence[pk],
        )
        for pk, author_id, created_at, content in proposals
    ]


def participant_votes(*, participant: Participant | None, proposal_ids) -> dict[int, Vote]:
    """The participant's votes on these proposals, with their qualifications (two queries)."""
    if participant is None:
        return {}
    votes = Vote.objects.filter(participant=participant, proposal_id__in=list(proposal_ids))
    return {v.proposal_id: v for v in votes.prefetch_related("qualifications")}


SIMILARITY_THRESHOLD = 0.35


def proposal_similar(*, consultation: Consultation, text: str, limit: int = 5) -> list[Proposal]:
    """Accepted proposals like ``text`` (typed in the proposal form), best first.

    By meaning once the engine has run on the consultation: the nearest proposals by the
    current run's embeddings (``consensus.similar.text_neighbours``, above the run's bar for
    "similar"), with their cosine as ``similarity``. Before any run, or when its model cannot answer here,
    by wording (``proposal_similar_words``).
    """
    rest = proposal_text.strip_prefix(text or "", consultation.proposal_prefix)[:300]
    if not proposal_text.significant_words(rest):
        return []
    if consultation.current_run_id:
        from consensus.similar import text_neighbours

        try:
            found = text_neighbours(
                consultation=consultation,
                text=proposal_text.with_prefix(rest, consultation.proposal_prefix),
                limit=limit,
            )
        except Exception:  # noqa: BLE001 - a model that fails must not break the form
            logger.exception("similar proposals by meaning failed in %s", consultation.slug)
            found = None
        if found is not None:
            for proposal, similarity in found.proposals:
                proposal.similarity = similarity
            return [proposal for proposal, _ in found.proposals]
    return proposal_similar_words(consultation=consultation, text=text, limit=limit)


def proposal_similar_words(
    *, consultation: Consultation, text: str, limit: int = 5
) -> list[Proposal]:
    """Accepted proposals whose words look like ``text``'s, best first.

    On PostgreSQL: pg_trgm's ``word_similarity`` between what the user wrote (without the
    prefix) and each proposal. On SQLite: the share of the text's significant words that a
    proposal contains, computed in Python over the 2,000 most recent (word stems, accents ignored).
    """
    rest = proposal_text.strip_prefix(text or "", consultation.proposal_prefix)[:300]
    words = proposal_text.significant_words(rest)
    if not words:
        return []
    qs = Proposal.objects.filter(consultation=consultation, status=Proposal.Status.ACCEPTED)
    if connection.vendor == "postgresql":
        from django.contrib.postgres.search import TrigramWordSimilarity

        # ``content %> text`` is pg_trgm's indexable form of word_similarity(text, content) >=
        # threshold (set for this transaction only), which proposal_content_trgm_idx answers
        # (docs/scaling.md section 2, item 7).
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(
                "SELECT set_config('pg_trgm.word_similarity_threshold', %s, true)",
                [str(SIMILARITY_THRESHOLD)],
            )
            return list(
                qs.extra(where=["consultations_proposal.content %%> %s"], params=[rest])
                .annotate(similarity=TrigramWordSimilarity(rest, "content"))
                .filter(similarity__gte=SIMILARITY_THRESHOLD)
                .order_by("-similarity", "-votes_total", "-pk")[:limit]
            )
    wanted = {proposal_text.stem(w) for w in words}
    scored = []
    for proposal in qs.order_by("-created_at", "-pk")[:2000]:
        have = {proposal_text.stem(w) for w in proposal_text.significant_words(proposal.content)}
        overlap = len(wanted & have) / len(wanted)
        if overlap >= 0.5:
            proposal.similarity = overlap
            scored.append(proposal)
    scored.sort(key=lambda p: (-p.similarity, -p.votes_total, -p.pk))
    return scored[:limit]
