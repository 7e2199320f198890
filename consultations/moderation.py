"""Moderation at scale: reads and writes of the moderation queue.

Who may moderate what: a superuser moderates every consultation; any other user needs the
``consultations.moderate_proposal`` permission *and* a ``ModeratorAssignment`` to a consultation,
and only ever sees, locks or decides that consultation's proposals (``moderation_scope``). Views
look proposals up through ``moderation_proposal_get``, which raises 404 outside the scope; the
services check the scope again, so a forged request cannot reach another consultation.

Every staff write here records an ``accounts.audit`` entry in the same transaction.
"""

from __future__ import annotations

import hashlib
import logging
import statistics
from dataclasses import dataclass, field
from datetime import timedelta

from django.conf import settings
from django.core.cache import cache
from django.core.mail import send_mail
from django.db import connection, transaction
from django.db.models import Count, F, OuterRef, Q, QuerySet, Subquery
from django.db.models.functions import Coalesce
from django.http import Http404
from django.utils import timezone, translation
from django.utils.translation import gettext as _

from accounts.audit import audit_record, model_snapshot

from .models import Consultation, Proposal, ProposalEdit
from .selectors import proposal_similar_words
from .sequence_cache import sequence_pool_invalidate

logger = logging.getLogger(__name__)

MODERATE_PERMISSION = "consultations.moderate_proposal"


class ModerationError(ValueError):
    """A moderation action that cannot be applied; its message is safe to show."""


DEFAULT_MODERATION_LOCK_MINUTES = 5
DEFAULT_SPELLING_MAX_RATIO = 0.15  # share of the characters a spelling fix may change
SPELLING_MIN_ALLOWANCE = 3  # ...but a short text may always have this many characters fixed
DEFAULT_STATS_CACHE_SECONDS = 300
ORDERS = ("oldest", "refusals")
AUDIT_FIELDS = ("content", "status", "refusal_reason", "moderated_by", "moderated_at")


def moderation_lock_duration() -> timedelta:
    minutes = getattr(settings, "CONCORDE_MODERATION_LOCK_MINUTES", DEFAULT_MODERATION_LOCK_MINUTES)
    return timedelta(minutes=minutes)


# Scope -------------------------------------------------------------------------------------


def moderator_allowed(user) -> bool:
    """May this user open the moderation pages at all (what they see is then scoped)."""
    return bool(user.is_authenticated and user.is_active and user.has_perm(MODERATE_PERMISSION))


def moderation_scope(*, moderator) -> QuerySet[Consultation]:
    """The consultations this moderator may moderate: all for a superuser, else the assigned ones."""
    if not moderator_allowed(moderator):
        return Consultation.objects.none()
    if moderator.is_superuser:
        return Consultation.objects.all()
    return Consultation.objects.filter(moderator_assignments__moderator=moderator)


def moderation_proposals(*, moderator) -> QuerySet[Proposal]:
    """Every proposal in the moderator's scope."""
    qs = Proposal.objects.all()
    if moderator.is_superuser and moderator_allowed(moderator):
        return qs
    return qs.filter(consultation__in=moderation_scope(moderator=moderator).values("pk"))


def moderation_in_scope(*, moderator, consultation_id: int) -> bool:
    return moderation_scope(moderator=moderator).filter(pk=consultation_id).exists()


def moderation_consultation_get(*, moderator, slug: str) -> Consultation:
    """The consultation of the filter, or 404 when it does not exist or is not assigned to them."""
    consultation = moderation_scope(moderator=moderator).filter(slug=slug).first()
    if consultation is None:
        raise Http404("No such consultation in your moderation scope.")
    return consultation


def moderation_proposal_get(*, moderator, pk: int) -> Proposal:
    """The proposal, or 404 when it does not exist or lies outside the moderator's scope."""
    proposal = (
        moderation_proposals(moderator=moderator)
        .select_related("consultation", "author", "locked_by")
        .filter(pk=pk)
        .first()
    )
    if proposal is None:
        raise Http404("No such proposal in your moderation scope.")
    return proposal


# Queue reads -------------------------------------------------------------------------------


def _pending(*, moderator, consultation=None, language: str = "") -> QuerySet[Proposal]:
    qs = moderation_proposals(moderator=moderator).filter(status=Proposal.Status.PENDING)
    if consultation is not None:
        qs = qs.filter(consultation=consultation)
    if language:
        qs = qs.filter(consultation__language=language)
    return qs


def _ordered(qs: QuerySet[Proposal], order: str) -> QuerySet[Proposal]:
    if order == "refusals":
        # Likely refusals first (the classifier's guess); unscored ones after, oldest first.
        return qs.order_by(
            F("prediction__refuse_probability").desc(nulls_last=True), "created_at", "pk"
        )
    return qs.order_by("created_at", "pk")


def moderation_pending_count(*, moderator, consultation=None, language: str = "") -> int:
    return _pending(moderator=moderator, consultation=consultation, language=language).count()


def moderation_consultations(*, moderator) -> QuerySet[Consultation]:
    """The moderator's consultations with their number of pending proposals, for the filter.

    Each count reads the consultation's pending rows in ``proposal_queue_idx``: a join on all
    proposals (``Count`` with a filter) read every proposal, 0.63 s per page at 2M accepted ones.
    """
    pending = (
        Proposal.objects.filter(consultation=OuterRef("pk"), status=Proposal.Status.PENDING)
        .order_by()
        .values("consultation")
        .annotate(n=Count("pk"))
        .values("n")
    )
    return (
        moderation_scope(moderator=moderator)
        .annotate(pending=Coalesce(Subquery(pending), 0))
        .order_by("question")
    )


def moderation_languages(*, moderator) -> list[tuple[str, str]]:
    """(code, label) of the languages of the moderator's consultations."""
    codes = set(moderation_scope(moderator=moderator).values_list("language", flat=True).distinct())
    return [(code, label) for code, label in Consultation.Language.choices if code in codes]


def moderation_queue_list(
    *, moderator, consultation=None, language: str = "", order: str = "oldest"
) -> QuerySet[Proposal]:
    """Pending proposals in scope, for the list page (bulk accept), with their prediction."""
    qs = _pending(moderator=moderator, consultation=consultation, language=language)
    return _ordered(qs, order).select_related("consultation", "prediction", "locked_by")


def proposal_edit_history(*, proposal: Proposal) -> QuerySet[ProposalEdit]:
    return ProposalEdit.objects.filter(proposal=proposal).select_related("editor")


# The "next proposal" flow ------------------------------------------------------------------


def moderation_next(
    *,
    moderator,
    consultation: Consultation | None = None,
    language: str = "",
    order: str = "oldest",
    skip=(),
) -> Proposal | None:
    """Lock and return the next pending proposal of the moderator's scope that nobody else holds.

    ``order`` is "oldest" (oldest first) or "refusals" (likely refusals first); ``skip`` are ids
    the moderator passed over. The lock is taken by a conditional UPDATE (``locked_until`` empty
    or past, or already ours), so two moderators asking at the same time never get the same
    proposal: the database serialises the two updates of a row and the second finds the
    condition false. A moderator who asks again gets back the proposal they hold, with a fresh lock.
    """
    now = timezone.now()
    free = Q(locked_until__isnull=True) | Q(locked_until__lt=now) | Q(locked_by=moderator)
    queue = _pending(moderator=moderator, consultation=consultation, language=language)
    if skip:
        queue = queue.exclude(pk__in=list(skip))
    # One already held by this moderator comes back first (a reload must not take a second one).
    held = queue.filter(locked_by=moderator, locked_until__gte=now).order_by("created_at", "pk")
    candidates = [held.values_list("pk", flat=True).first()]
    for _attempt in range(5):
        ids = [pk for pk in candidates if pk is not None] or list(
            _ordered(queue.filter(free), order).values_list("pk", flat=True)[:20]
        )
        candidates = []
        if not ids:
            return None
        for pk in ids:
            locked = Proposal.objects.filter(free, pk=pk, status=Proposal.Status.PENDING).update(
                locked_by=moderator, locked_until=now + moderation_lock_duration()
            )
            if locked:
                return Proposal.objects.select_related(
                    "consultation", "author", "locked_by", "prediction"
                ).get(pk=pk)
    return None


def moderation_release(*, moderator, proposal: Proposal) -> None:
    """Give back this moderator's lock on the proposal (the "next" key), so others can take it.

    Audited as "proposal.skip" when a lock was actually released (nothing else changes).
    """
    with transaction.atomic():
        released = Proposal.objects.filter(pk=proposal.pk, locked_by=moderator).update(
            locked_by=None, locked_until=None
        )
        if released:
            audit_record(
                actor=moderator,
                action="proposal.skip",
                target=proposal,
                before={"locked_by": moderator.pk},
                after={"locked_by": None},
            )


# Decisions ---------------------------------------------------------------------------------


class Decision:
    ACCEPT = "accept"
    REFUSE = "refuse"
    POSTPONE = "postpone"
    ALL = (ACCEPT, REFUSE, POSTPONE)


def _proposal_locked(pk: int) -> Proposal:
    """The proposal row, locked until the end of the transaction (call inside atomic)."""
    return Proposal.objects.select_for_update(of=("self",)).select_related("consultation").get(pk=pk)


def _check_scope(moderator, proposal: Proposal) -> None:
    if not moderation_in_scope(moderator=moderator, consultation_id=proposal.consultation_id):
        raise ModerationError(_("You do not moderate this consultation."))


def _apply_decision(*, moderator, proposal: Proposal, decision: str, reason: str, now, note: str):
    """Call inside ``transaction.atomic`` with the proposal row locked (``select_for_update``)."""
    if (
        proposal.locked_by_id not in (None, moderator.pk)
        and proposal.locked_until
        and (proposal.locked_until > now)
    ):
        raise ModerationError(_("Another moderator is working on this proposal."))
    if proposal.status == Proposal.Status.ARCHIVED:
        raise ModerationError(_("An archived proposal cannot be moderated."))
    if decision == Decision.ACCEPT and proposal.status == Proposal.Status.ACCEPTED:
        raise ModerationError(_("This proposal is already accepted."))
    if decision == Decision.REFUSE and proposal.status == Proposal.Status.REFUSED:
        raise ModerationError(_("This proposal is already refused."))
    before = model_snapshot(proposal, fields=AUDIT_FIELDS)
    proposal.status = {
        Decision.ACCEPT: Proposal.Status.ACCEPTED,
        Decision.REFUSE: Proposal.Status.REFUSED,
        Decision.POSTPONE: Proposal.Status.POSTPONED,
    }[decision]
    proposal.refusal_reason = reason if decision == Decision.REFUSE else ""
    proposal.moderated_by = moderator
    proposal.moderated_at = now
    proposal.locked_by = None
    proposal.locked_until = None
    proposal.save(
        update_fields=[
            "status",
            "refusal_reason",
            "moderated_by",
            "moderated_at",
            "locked_by",
            "locked_until",
            "updated_at",
        ]
    )
    audit_record(
        actor=moderator,
        action=f"proposal.{decision}",
        target=proposal,
        before=before,
        after=model_snapshot(proposal, fields=AUDIT_FIELDS),
        note=note,
    )


def _after_decision(proposal: Proposal, decision: str, base_url: str) -> None:
    proposal_id, consultation_id = proposal.pk, proposal.consultation_id
    transaction.on_commit(lambda: moderation_stats_cache_delete(consultation_id))
    # The accepted set changed (or may have): sequence pools rebuild (consultations/sequence_cache.py).
    transaction.on_commit(lambda: sequence_pool_invalidate(consultation_id))
    if decision in (Decision.ACCEPT, Decision.REFUSE):
        transaction.on_commit(lambda: _moderation_notify(proposal_id, base_url))
    if decision == Decision.ACCEPT and proposal.consultation.current_run_id:
        from consensus.tasks import assign_new_proposal

        assign_new_proposal.delay_on_commit(proposal_id)
    if decision == Decision.REFUSE and proposal.consultation.current_run_id:
        from consensus.services import ideas_after_refusal

        # a proposal refused after a run: its text leaves the published ideas' labels
        transaction.on_commit(lambda: ideas_after_refusal(proposal_id=proposal_id))


def moderation_decide(
    *, moderator, proposal: Proposal, decision: str, reason: str = "", base_url: str = ""
) -> Proposal:
    """Accept, refuse (``reason`` from ``Proposal.RefusalReason``, required) or postpone.

    Releases the lock. Proposals outside the moderator's scope, archived ones, an accepted one
    accepted again, a refused one refused again and one locked by another moderator are left
    alone (``ModerationError``). On accept or refuse the author is e-mailed (after the commit;
    a mail failure is logged, the decision stays). The e-mail's links start with ``base_url``
    ("https://host"), by default ``settings.CONCORDE_SITE_URL``.
    """
    if decision not in Decision.ALL:
        raise ModerationError(_("Unknown decision."))
    if decision == Decision.REFUSE and reason not in Proposal.RefusalReason.values:
        raise ModerationError(_("Choose a reason to refuse a proposal."))
    _check_scope(moderator, proposal)
    now = timezone.now()
    with transaction.atomic():
        proposal = _proposal_locked(proposal.pk)
        _apply_decision(
            moderator=moderator,
            proposal=proposal,
            decision=decision,
            reason=reason,
            now=now,
            note="",
        )
        _after_decision(proposal, decision, base_url)
    return proposal


@dataclass
class BulkResult:
    accepted: list[Proposal] = field(default_factory=list)
    errors: list[tuple[int, str]] = field(default_factory=list)  # (proposal id, message)


def moderation_bulk_accept(*, moderator, proposal_ids, base_url: str = "") -> BulkResult:
    """Accept the selected proposals, each checked against the scope, the locks and its status.

    One transaction and one audit entry per proposal: a proposal that cannot be accepted is
    reported in ``errors`` and the others still go through. Ids outside the scope are reported
    as unknown (they are indistinguishable from missing ones, as on the pages).
    """
    result = BulkResult()
    try:
        wanted = sorted({int(pk) for pk in proposal_ids})
    except (TypeError, ValueError) as error:
        raise ModerationError(_("Select proposals to accept.")) from error
    if not wanted:
        raise ModerationError(_("Select proposals to accept."))
    limit = getattr(settings, "CONCORDE_MODERATION_BULK_MAX", 200)
    if len(wanted) > limit:
        raise ModerationError(_("Select at most %(limit)d proposals at once.") % {"limit": limit})
    in_scope = set(
        moderation_proposals(moderator=moderator).filter(pk__in=wanted).values_list("pk", flat=True)
    )
    for pk in wanted:
        if pk not in in_scope:
            result.errors.append((pk, _("No such proposal in your moderation scope.")))
            continue
        now = timezone.now()
        try:
            with transaction.atomic():
                proposal = _proposal_locked(pk)
                if proposal.status != Proposal.Status.PENDING:
                    raise ModerationError(_("This proposal is no longer pending."))
                _apply_decision(
                    moderator=moderator,
                    proposal=proposal,
                    decision=Decision.ACCEPT,
                    reason="",
                    now=now,
                    note="bulk",
                )
                _after_decision(proposal, Decision.ACCEPT, base_url)
        except ModerationError as error:
            result.errors.append((pk, str(error)))
        else:
            result.accepted.append(proposal)
    return result


# Spelling edits ----------------------------------------------------------------------------


def edit_distance(a: str, b: str, *, limit: int | None = None) -> int:
    """Levenshtein distance between two strings; stops early (returns limit + 1) past ``limit``."""
    if a == b:
        return 0
    if limit is not None and abs(len(a) - len(b)) > limit:
        return limit + 1
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        if limit is not None and min(current) > limit:
            return limit + 1
        previous = current
    return previous[-1]


def spelling_allowance(text: str) -> int:
    """How many characters a spelling fix of ``text`` may change."""
    ratio = getattr(settings, "CONCORDE_SPELLING_MAX_RATIO", DEFAULT_SPELLING_MAX_RATIO)
    return max(SPELLING_MIN_ALLOWANCE, int(len(text) * ratio))


def moderation_edit(*, moderator, proposal: Proposal, content: str) -> ProposalEdit:
    """Correct the spelling of a proposal, keeping the history (who, when, before, after).

    Refuses (``ModerationError``) an edit outside the scope, of an archived proposal, of one
    locked by another moderator, an empty or unchanged text, and any change larger than a
    spelling fix: more than ``spelling_allowance`` characters (edit distance), so that a
    moderator never puts words in a citizen's mouth.
    """
    content = " ".join((content or "").split())
    if not content:
        raise ModerationError(_("The corrected text is empty."))
    _check_scope(moderator, proposal)
    now = timezone.now()
    with transaction.atomic():
        proposal = _proposal_locked(proposal.pk)
        if (
            proposal.locked_by_id not in (None, moderator.pk)
            and proposal.locked_until
            and proposal.locked_until > now
        ):
            raise ModerationError(_("Another moderator is working on this proposal."))
        if proposal.status == Proposal.Status.ARCHIVED:
            raise ModerationError(_("An archived proposal cannot be edited."))
        before = proposal.content
        if content == before:
            raise ModerationError(_("Nothing was changed."))
        if len(content) > Proposal._meta.get_field("content").max_length:
            raise ModerationError(_("The corrected text is too long."))
        allowance = spelling_allowance(before)
        distance = edit_distance(before, content, limit=allowance)
        if distance > allowance:
            raise ModerationError(
                _(
                    "Only spelling may be corrected: this edit changes more than %(n)d characters. "
                    "Refuse the proposal instead if its meaning is unclear."
                )
                % {"n": allowance}
            )
        snapshot = model_snapshot(proposal, fields=("content",))
        proposal.content = content
        proposal.save(update_fields=["content", "updated_at"])
        edit = ProposalEdit.objects.create(
            proposal=proposal,
            editor=moderator,
            before=before,
            after=content,
            distance=distance,
            created_at=now,
        )
        audit_record(
            actor=moderator,
            action="proposal.edit",
            target=proposal,
            before=snapshot,
            after=model_snapshot(proposal, fields=("content",)),
            note=_("Spelling: %(n)d characters changed") % {"n": distance},
        )
    return edit


# Engine assistance -------------------------------------------------------------------------


@dataclass
class Assistance:
    method: str  # "embeddings", "trigram" or "" (nothing to compare with)
    neighbours: list[tuple[Proposal, float]] = field(default_factory=list)
    idea: object | None = None  # consensus.models.Idea
    idea_similarity: float | None = None
    idea_via: str = ""  # "centroid" or "neighbour"


NEIGHBOUR_CANDIDATES_MAX = 50_000  # vectors compared per request (consensus.similar)
NEIGHBOUR_MIN_SIMILARITY = 0.5  # near-duplicates: a stricter bar than the proposal form's


def moderation_assistance(*, proposal: Proposal, limit: int = 5) -> Assistance:
    """Near-duplicates of the proposal and the idea it would join, from the engine when it can.

    With a current engine run that has ideas: ``consensus.similar.text_neighbours`` embeds the
    proposal with the run's model, finds the nearest idea centres and its nearest neighbours
    among the stored vectors of the run (all of them up to ``NEIGHBOUR_CANDIDATES_MAX``, else the
    members of the nearest ideas up to that many, so a request stays bounded). It would join the
    nearest idea whose centre passes the run's ``assign_threshold``, else the idea of its nearest
    neighbour. Without a run (or when embedding fails): trigram similarity and the idea of the
    most similar proposal. Cached per proposal text and run.
    """
    consultation = proposal.consultation
    digest = hashlib.blake2b(proposal.content.encode(), digest_size=8).hexdigest()
    key = f"moderation:assist:{proposal.pk}:{consultation.current_run_id}:{digest}:{limit}"
    cached = cache.get(key)
    if cached is not None:
        return cached
    assistance = None
    if consultation.current_run_id:
        try:
            assistance = _assistance_embeddings(proposal, limit)
        except Exception:  # a missing model must not block moderation: fall back to trigrams
            logger.exception("moderation assistance by embeddings failed for %s", proposal.pk)
    if assistance is None:
        assistance = _assistance_trigram(proposal, limit)
    cache.set(key, assistance, 600)
    return assistance


def _assistance_trigram(proposal: Proposal, limit: int) -> Assistance:
    from consensus.models import IdeaMembership

    similar = [
        p
        for p in proposal_similar_words(
            consultation=proposal.consultation, text=proposal.content, limit=limit + 1
        )
        if p.pk != proposal.pk
    ][:limit]
    assistance = Assistance(
        method="trigram" if similar else "",
        neighbours=[(p, float(getattr(p, "similarity", 0.0))) for p in similar],
    )
    run_id = proposal.consultation.current_run_id
    if similar and run_id:
        membership = (
            IdeaMembership.objects.filter(run_id=run_id, proposal=similar[0])
            .select_related("idea")
            .first()
        )
        if membership is not None:
            assistance.idea = membership.idea
            assistance.idea_similarity = assistance.neighbours[0][1]
            assistance.idea_via = "neighbour"
    return assistance


def _assistance_embeddings(proposal: Proposal, limit: int) -> Assistance | None:
    from consensus.models import IdeaMembership
    from consensus.services import PARAMETERS
    from consensus.similar import text_neighbours

    found = text_neighbours(
        consultation=proposal.consultation,
        text=proposal.content,
        limit=limit,
        exclude=(proposal.pk,),
        min_similarity=NEIGHBOUR_MIN_SIMILARITY,
        candidates_max=NEIGHBOUR_CANDIDATES_MAX,
    )
    if found is None:
        return None
    assistance = Assistance(method="embeddings", neighbours=found.proposals)
    threshold = (found.run.parameters or {}).get(
        "assign_threshold", PARAMETERS["assign_threshold"].default
    )
    if found.ideas and found.ideas[0][1] >= threshold:
        assistance.idea, assistance.idea_similarity = found.ideas[0]
        assistance.idea_via = "centroid"
    elif assistance.neighbours:
        membership = (
            IdeaMembership.objects.filter(run=found.run, proposal=assistance.neighbours[0][0])
            .select_related("idea")
            .first()
        )
        if membership is not None:
            assistance.idea = membership.idea
            assistance.idea_similarity = assistance.neighbours[0][1]
            assistance.idea_via = "neighbour"
    return assistance


# Public statistics -------------------------------------------------------------------------


def moderation_stats_cache_key(consultation_id: int) -> str:
    return f"moderation:stats:{consultation_id}"


def moderation_stats_cache_delete(consultation_id: int) -> None:
    cache.delete(moderation_stats_cache_key(consultation_id))


def moderation_public_stats(*, consultation: Consultation) -> dict:
    """Counts per status and per refusal reason, and the median delay from submission to decision.

    Cached (``CONCORDE_MODERATION_STATS_CACHE_SECONDS``); a decision clears the consultation's entry.
    """
    key = moderation_stats_cache_key(consultation.pk)
    stats = cache.get(key)
    if stats is None:
        stats = _moderation_public_stats(consultation)
        seconds = getattr(
            settings, "CONCORDE_MODERATION_STATS_CACHE_SECONDS", DEFAULT_STATS_CACHE_SECONDS
        )
        if seconds:
            cache.set(key, stats, seconds)
    return stats


def _moderation_public_stats(consultation: Consultation) -> dict:
    qs = Proposal.objects.filter(consultation=consultation)
    by_status = dict(qs.values_list("status").annotate(n=Count("pk")).order_by())
    by_reason = dict(
        qs.filter(status=Proposal.Status.REFUSED)
        .values_list("refusal_reason")
        .annotate(n=Count("pk"))
        .order_by()
    )
    total = sum(by_status.values())
    refused = by_status.get(Proposal.Status.REFUSED, 0)
    decided = qs.filter(
        status__in=[Proposal.Status.ACCEPTED, Proposal.Status.REFUSED],
        moderated_at__isnull=False,
        moderated_at__gte=F("created_at"),
    )
    median, decided_count = _median_delay_seconds(decided)
    return {
        "total": total,
        "statuses": [
            {"value": value, "label": str(label), "count": by_status.get(value, 0)}
            for value, label in Proposal.Status.choices
        ],
        "reasons": sorted(
            (
                {
                    "value": value,
                    "label": str(label),
                    "count": by_reason.get(value, 0),
                    "share": by_reason.get(value, 0) / refused if refused else 0.0,
                }
                for value, label in Proposal.RefusalReason.choices
                if by_reason.get(value)
            ),
            key=lambda row: -row["count"],
        ),
        "refused": refused,
        "decided": decided_count,
        "median_delay_seconds": median,
        "median_delay_hours": round(median / 3600, 1) if median is not None else None,
        "computed_at": timezone.now(),
    }


def _median_delay_seconds(decided: QuerySet[Proposal]) -> tuple[float | None, int]:
    if connection.vendor == "postgresql":
        sql, params = decided.values("pk").query.sql_with_params()
        table = Proposal._meta.db_table
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT percentile_cont(0.5) WITHIN GROUP "
                "(ORDER BY EXTRACT(EPOCH FROM (p.moderated_at - p.created_at))), COUNT(*) "
                f"FROM {table} p WHERE p.id IN ({sql})",
                params,
            )
            median, count = cursor.fetchone()
        return (float(median) if median is not None else None), int(count)
    delays = [
        (moderated - created).total_seconds()
        for created, moderated in decided.values_list("created_at", "moderated_at").iterator()
    ]
    return (statistics.median(delays) if delays else None), len(delays)


# E-mail to the author ----------------------------------------------------------------------


def _moderation_notify(proposal_id: int, base_url: str = "") -> None:
    """E-mail the author the decision, in the consultation's language when we have it."""
    proposal = Proposal.objects.select_related("author", "consultation").get(pk=proposal_id)
    base_url = (base_url or getattr(settings, "CONCORDE_SITE_URL", "")).rstrip("/")
    author = proposal.author
    if author is None or not author.email:
        return
    consultation = proposal.consultation
    languages = {code for code, _name in settings.LANGUAGES}
    language = (
        consultation.language if consultation.language in languages else settings.LANGUAGE_CODE
    )
    with translation.override(language):
        values = {
            "name": author.display_name or author.first_name or _("citizen"),
            "content": proposal.content,
            "question": consultation.question,
            "url": f"{base_url}{proposal.get_absolute_url()}",
            "consultation_url": f"{base_url}{consultation.get_absolute_url()}",
        }
        if proposal.status == Proposal.Status.ACCEPTED:
            subject = _("Your proposal is published")
            body = (
                _(
                    "Hello %(name)s,\n\n"
                    "Your proposal “%(content)s” to the consultation “%(question)s” has been "
                    "accepted by the moderators. Other citizens can now vote on it:\n%(url)s\n\n"
                    "Thank you for taking part.\nConcorde"
                )
                % values
            )
        elif proposal.status == Proposal.Status.REFUSED:
            values["reason"] = Proposal.RefusalReason(proposal.refusal_reason).label
            subject = _("Your proposal was not published")
            body = (
                _(
                    "Hello %(name)s,\n\n"
                    "Your proposal “%(content)s” to the consultation “%(question)s” was not "
                    "published. Reason: %(reason)s.\n\n"
                    "Our moderation charter accepts one concrete idea per proposal, without insults, "
                    "advertising or partisan content. You are welcome to write a new one:\n"
                    "%(consultation_url)s\n\nConcorde"
                )
                % values
            )
        else:  # changed again before the commit callback ran
            return
    try:
        send_mail(str(subject), str(body), None, [author.email])
    except Exception:  # the decision is made; a mail server outage must not undo it
        logger.exception("could not e-mail the author of proposal %s", proposal.pk)
