"""Writes for consultations: participants, votes, sequences, proposals (moderation: moderation.py)."""

import logging
import secrets
import uuid
from collections import Counter
from dataclasses import dataclass

from django.conf import settings
from django.core.cache import cache
from django.db import IntegrityError, connection, transaction
from django.db.models import F
from django.utils import timezone
from django.utils.crypto import constant_time_compare, salted_hmac
from django.utils.translation import gettext as _
from django.utils.translation import ngettext

from . import text as proposal_text
from .models import (
    QUALIFICATIONS_BY_VOTE,
    Consultation,
    Exposure,
    Participant,
    Proposal,
    ProposalCounter,
    ProposalRank,
    Qualification,
    Trust,
    Vote,
    VoteKey,
)
from .selectors import sequence_settings
from .sequence import select_sequence
from .sequence_cache import sequence_pool_get, sequence_pool_invalidate, sequence_pool_note_vote

logger = logging.getLogger(__name__)

# Session key holding an anonymous participant's random key (``Participant.session_key``).
# Our own key rather than Django's session key, which changes at login (``cycle_key``).
SESSION_PARTICIPANT = "concorde_participant"


class VoteError(ValueError):
    """A vote or qualification that breaks a rule; its message is safe to show."""


def counters_add(deltas: dict[tuple[int, str, str], int]) -> None:
    """Add ``deltas[(proposal_id, key, trust)]`` to the counters, inside the database.

    One upsert per changed counter: ``count = count + delta`` is computed by the database, so
    concurrent votes never overwrite each other's increments (no read-modify-write in Python).
    A new row copies its proposal's consultation (read by primary key in the same statement),
    which gives the counters of a consultation their own index (``counter_consultation_idx``).
    Call it in the transaction that writes the votes: votes and counters commit together.
    """
    table = ProposalCounter._meta.db_table
    proposals = Proposal._meta.db_table
    rows = [(key, trust, delta, pid) for (pid, key, trust), delta in sorted(deltas.items()) if delta]
    if not rows:
        return
    sql = (
        f"INSERT INTO {table} (proposal_id, consultation_id, key, trust, count) "
        f"SELECT p.id, p.consultation_id, %s, %s, %s FROM {proposals} p WHERE p.id = %s "
        f"ON CONFLICT (proposal_id, key, trust) DO UPDATE SET count = {table}.count + EXCLUDED.count"
    )
    with connection.cursor() as cursor:
        cursor.executemany(sql, rows)


def participant_for_user(*, user) -> Participant:
    participant, _created = Participant.objects.get_or_create(user=user)
    return participant


def participant_for_session(*, session_key: str) -> Participant:
    participant, _created = Participant.objects.get_or_create(session_key=session_key)
    return participant


@transaction.atomic
def participant_merge(*, source: Participant, target: Participant) -> int:
    """Move ``source``'s votes to ``target`` (an anonymous session that signs in) and delete it.

    A proposal both voted on keeps ``target``'s vote; the other vote is withdrawn with its
    counters. Returns the number of votes moved.
    """
    if source.pk == target.pk:
        return 0
    target_proposals = set(target.votes.values_list("proposal_id", flat=True))
    moved = 0
    for vote in source.votes.select_for_update().prefetch_related("qualifications"):
        if vote.proposal_id in target_proposals:
            _withdraw(vote)
            vote.delete()
        else:
            moved += Vote.objects.filter(pk=vote.pk).update(participant=target)
    for field in ("age_range", "gender", "postal_area", "demographics_asked_at"):
        if not getattr(target, field) and getattr(source, field):
            setattr(target, field, getattr(source, field))
    target.save()
    source.exposures.update(participant=target)
    source.delete()
    return moved


def _withdraw(vote: Vote, *, total: bool = True) -> None:
    """Take a vote and its qualifications out of the counters (the rows stay).

    ``total=False`` leaves the proposal's ``votes_total`` alone: the vote is replaced, not gone.
    """
    deltas = Counter({(vote.proposal_id, vote.key, vote.trust): -1})
    for qualification in vote.qualifications.all():
        deltas[(vote.proposal_id, qualification.key, vote.trust)] -= 1
    counters_add(deltas)
    if total:
        Proposal.objects.filter(pk=vote.proposal_id).update(votes_total=F("votes_total") - 1)


def vote_cast(
    *,
    participant: Participant,
    proposal: Proposal,
    key: str,
    trust: str = Trust.TRUSTED,
    in_sequence: bool = False,
) -> tuple[Vote, bool]:
    """Record ``participant``'s vote on ``proposal``; returns (vote, changed).

    Voting the same key again changes nothing (a double click). Voting another key replaces the
    vote and drops its qualifications. The unique constraint on (participant, proposal) makes
    concurrent requests from one participant end with one vote.
    """
    if key not in VoteKey.values:
        raise VoteError(_("Unknown vote key %(key)r.") % {"key": key})
    if trust not in Trust.values:
        raise VoteError(_("Unknown trust level %(trust)r.") % {"trust": trust})
    if proposal.status != Proposal.Status.ACCEPTED:
        raise VoteError(_("This proposal is not open to votes."))
    with transaction.atomic():
        vote = Vote.objects.select_for_update().filter(participant=participant, proposal=proposal).first()
        if vote is None:
            try:
                with transaction.atomic():
                    vote = Vote.objects.create(
                        participant=participant,
                        proposal=proposal,
                        key=key,
                        trust=trust,
                        in_sequence=in_sequence,
                    )
            except IntegrityError:
                # A concurrent request of the same participant inserted it first.
                vote = Vote.objects.select_for_update().get(participant=participant, proposal=proposal)
            else:
                counters_add({(proposal.pk, key, trust): 1})
                Proposal.objects.filter(pk=proposal.pk).update(votes_total=F("votes_total") + 1)
                _note_vote_on_commit(proposal, {(key, trust): 1})
                return vote, True
        if vote.key == key:
            return vote, False
        old = (vote.key, vote.trust)
        _withdraw(vote, total=False)
        vote.qualifications.all().delete()
        vote.key, vote.trust, vote.in_sequence = key, trust, in_sequence
        vote.save(update_fields=["key", "trust", "in_sequence", "updated_at"])
        counters_add({(proposal.pk, key, trust): 1})
        _note_vote_on_commit(proposal, {old: -1, (key, trust): 1})
        return vote, True


def _note_vote_on_commit(proposal: Proposal, changes: dict[tuple[str, str], int]) -> None:
    """Tell the sequence pool cache about a vote once it is committed (never fails the vote)."""
    consultation_id, proposal_id = proposal.consultation_id, proposal.pk
    transaction.on_commit(
        lambda: sequence_pool_note_vote(
            consultation_id=consultation_id, proposal_id=proposal_id, changes=changes
        )
    )


def qualification_toggle(*, vote: Vote, key: str) -> bool:
    """Switch a qualification on or off on ``vote``; returns whether it is now on."""
    if key not in QUALIFICATIONS_BY_VOTE.get(vote.key, ()):
        raise _qualification_mismatch(key, vote.key)
    with transaction.atomic():
        vote = Vote.objects.select_for_update().get(pk=vote.pk)
        if key not in QUALIFICATIONS_BY_VOTE[vote.key]:
            raise _qualification_mismatch(key, vote.key)
        deleted, _rows = Qualification.objects.filter(vote=vote, key=key).delete()
        if deleted:
            counters_add({(vote.proposal_id, key, vote.trust): -1})
            return False
        Qualification.objects.create(vote=vote, vote_key=vote.key, key=key)
        counters_add({(vote.proposal_id, key, vote.trust): 1})
        return True


def _qualification_mismatch(key: str, vote_key: str) -> VoteError:
    return VoteError(
        _("Qualification %(key)r does not go with a %(vote)r vote.")
        % {"key": key, "vote": vote_key}
    )


def counters_drift(*, proposal_ids=None) -> dict:
    """What the counters and vote totals should be changed by, from a recount of the votes.

    Returns ``{"counters": {(proposal_id, key, trust): recount - stored}, "totals":
    {proposal_id: recount - stored votes_total}}``, only the entries that differ. Reads only;
    ``manage.py counters_recount --check`` prints it.
    """
    votes = Vote.objects.all()
    qualifications = Qualification.objects.all()
    proposals = Proposal.objects.all()
    counters = ProposalCounter.objects.all()
    if proposal_ids is not None:
        proposal_ids = list(proposal_ids)
        votes = votes.filter(proposal_id__in=proposal_ids)
        qualifications = qualifications.filter(vote__proposal_id__in=proposal_ids)
        proposals = proposals.filter(pk__in=proposal_ids)
        counters = counters.filter(proposal_id__in=proposal_ids)
    truth: Counter = Counter()
    for pid, key, trust in votes.values_list("proposal_id", "key", "trust").iterator(chunk_size=10000):
        truth[(pid, key, trust)] += 1
    for pid, key, trust in qualifications.values_list(
        "vote__proposal_id", "key", "vote__trust"
    ).iterator(chunk_size=10000):
        truth[(pid, key, trust)] += 1
    stored = {
        (pid, key, trust): count
        for pid, key, trust, count in counters.values_list(
            "proposal_id", "key", "trust", "count"
        ).iterator(chunk_size=10000)
    }
    drift = {k: truth.get(k, 0) - stored.get(k, 0) for k in set(truth) | set(stored)}
    totals: Counter = Counter()
    for (pid, key, _trust), n in truth.items():
        if key in VoteKey.values:
            totals[pid] += n
    totals_drift = {
        pk: totals.get(pk, 0) - stored_total
        for pk, stored_total in proposals.values_list("pk", "votes_total").iterator(chunk_size=10000)
        if stored_total != totals.get(pk, 0)
    }
    return {"counters": {k: d for k, d in drift.items() if d}, "totals": totals_drift}


def counters_recount(*, proposal_ids=None) -> dict:
    """Rebuild counters and vote totals from the votes table; returns the drift found.

    Used after a crash or a manual change of the votes table (``manage.py counters_recount``)
    and by the import commands. The fixes are added as deltas (``count + d``), so votes cast
    while it runs keep their own increments; the drift itself comes from one read of the
    votes, so run it on a quiet consultation for an exact answer. Counters written without
    their consultation get it back.
    """
    if proposal_ids is not None:
        proposal_ids = list(proposal_ids)
    found = counters_drift(proposal_ids=proposal_ids)
    with transaction.atomic():
        counters_add(found["counters"])
        for pk, delta in found["totals"].items():
            Proposal.objects.filter(pk=pk).update(votes_total=F("votes_total") + delta)
        orphans = ProposalCounter.objects.filter(consultation__isnull=True)
        if proposal_ids is not None:
            orphans = orphans.filter(proposal_id__in=proposal_ids)
        if orphans.exists():
            table, proposals = ProposalCounter._meta.db_table, Proposal._meta.db_table
            with connection.cursor() as cursor:
                cursor.execute(
                    f"UPDATE {table} SET consultation_id = (SELECT p.consultation_id FROM "
                    f"{proposals} p WHERE p.id = {table}.proposal_id) WHERE consultation_id IS NULL"
                )
    return {"counters_fixed": len(found["counters"]), "totals_fixed": len(found["totals"])}


def counters_rebuild(*, consultation: Consultation) -> dict:
    """Set every counter and vote total of ``consultation`` from its votes, in the database.

    Set-based (GROUP BY) statements rather than a loop in Python, so that the importers can
    call it after writing 100,000s of votes. The result is exact for the votes committed when
    it runs: call it when no votes are being cast on the consultation (an import, a repair),
    because a vote counted by ``counters_add`` between the statements would be lost.
    """
    qn = connection.ops.quote_name
    counter, vote = qn(ProposalCounter._meta.db_table), qn(Vote._meta.db_table)
    qualification, proposal = qn(Qualification._meta.db_table), qn(Proposal._meta.db_table)
    key, count = qn("key"), qn("count")
    of_consultation = f"SELECT id FROM {proposal} WHERE consultation_id = %s"
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            f"DELETE FROM {counter} WHERE proposal_id IN ({of_consultation})", [consultation.pk]
        )
        cursor.execute(
            f"INSERT INTO {counter} (proposal_id, consultation_id, {key}, trust, {count}) "
            f"SELECT v.proposal_id, %s, v.{key}, v.trust, COUNT(*) FROM {vote} v "
            f"WHERE v.proposal_id IN ({of_consultation}) GROUP BY v.proposal_id, v.{key}, v.trust",
            [consultation.pk, consultation.pk],
        )
        counters = cursor.rowcount
        cursor.execute(
            f"INSERT INTO {counter} (proposal_id, consultation_id, {key}, trust, {count}) "
            f"SELECT v.proposal_id, %s, q.{key}, v.trust, COUNT(*) FROM {qualification} q "
            f"INNER JOIN {vote} v ON v.id = q.vote_id "
            f"WHERE v.proposal_id IN ({of_consultation}) GROUP BY v.proposal_id, q.{key}, v.trust",
            [consultation.pk, consultation.pk],
        )
        counters += cursor.rowcount
        total = f"(SELECT COUNT(*) FROM {vote} v WHERE v.proposal_id = {proposal}.id)"
        cursor.execute(
            f"UPDATE {proposal} SET votes_total = {total} "
            f"WHERE consultation_id = %s AND votes_total <> {total}",
            [consultation.pk],
        )
        totals = cursor.rowcount
    popular_rank_refresh(consultation_id=consultation.pk)
    return {"counters": counters, "totals_changed": totals}


# The "Most voted" order -----------------------------------------------------------------------


def popular_rank_refresh(*, consultation_id: int) -> int:
    """Rank ``consultation_id``'s proposals by their current votes; returns how many moved.

    The "Most voted" order sorts on ``ProposalRank.votes`` through ``rank_popular_idx``, the
    "Most controversial" one on ``ProposalRank.balance`` (the smaller of the agree and disagree
    counts) through ``rank_debated_idx``. A vote only increments ``Proposal.votes_total``, which
    no index holds, so its update of the proposal row is HOT (no index entry written); this one
    statement copies the totals and balances that changed since the last refresh, and ranks the
    proposals that have no rank yet, into that narrow table, whose indexes are all it writes. A
    changed vote moves the balance, not the total: the balances are read from the counters of
    the consultation (``counter_consultation_idx``). Idempotent.
    """
    qn = connection.ops.quote_name
    proposal, rank = qn(Proposal._meta.db_table), qn(ProposalRank._meta.db_table)
    counter = qn(ProposalCounter._meta.db_table)
    balance = "COALESCE(CASE WHEN b.agree < b.disagree THEN b.agree ELSE b.disagree END, 0)"
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {rank} (proposal_id, consultation_id, votes, balance) "
            f"SELECT p.id, p.consultation_id, p.votes_total, {balance} FROM {proposal} p "
            "LEFT JOIN (SELECT proposal_id, "
            "SUM(CASE WHEN key = %s THEN count ELSE 0 END) AS agree, "
            "SUM(CASE WHEN key = %s THEN count ELSE 0 END) AS disagree "
            f"FROM {counter} WHERE consultation_id = %s AND key IN (%s, %s) "
            "GROUP BY proposal_id) b ON b.proposal_id = p.id "
            f"LEFT JOIN {rank} r ON r.proposal_id = p.id "
            "WHERE p.consultation_id = %s AND (r.proposal_id IS NULL "
            f"OR r.votes <> p.votes_total OR r.balance <> {balance}) "
            "ON CONFLICT (proposal_id) DO UPDATE "
            "SET votes = excluded.votes, balance = excluded.balance",
            [VoteKey.AGREE, VoteKey.DISAGREE, consultation_id, VoteKey.AGREE, VoteKey.DISAGREE,
             consultation_id],
        )  # fmt: skip
        return cursor.rowcount


def popular_rank_refresh_soon(*, consultation: Consultation) -> bool:
    """Ask for ``popular_rank_refresh`` once per ``CONCORDE_POPULAR_RANK_SECONDS`` per consultation.

    Called when someone reads the "Most voted" or "Most controversial" order: a consultation nobody
    sorts those ways costs nothing. The refresh runs as a task (inline without a broker, in the
    outbox when the broker is down); returns whether one was asked for. Ranking a consultation
    from scratch takes a minute at 2M proposals, never a request's time: until its first ranking
    is in, the orders are sorted on the live figures (``selectors.proposal_public_list``). A
    cache outage asks for none (the orders stay as last refreshed) and never fails the page.
    """
    from config.outbox import send_or_spool

    from .tasks import popular_rank_refresh as task

    try:
        due = cache.add(
            f"popular-rank:{consultation.pk}", 1, timeout=settings.CONCORDE_POPULAR_RANK_SECONDS
        )
    except Exception:  # noqa: BLE001 - Redis down: keep the last ranking
        logger.warning("popular rank: cache unavailable, not refreshed", exc_info=True)
        return False
    if due:
        send_or_spool(task, (consultation.pk,))
    return due


# Participants of a request -------------------------------------------------------------------


def participant_peek(request) -> Participant | None:
    """The request's participant when it already exists; creates nothing (for GET pages)."""
    if request.user.is_authenticated:
        return Participant.objects.filter(user=request.user).first()
    key = request.session.get(SESSION_PARTICIPANT)
    if not key:
        return None
    return Participant.objects.filter(session_key=key, user__isnull=True).first()


def participant_from_request(request) -> Participant:
    """The logged-in user's participant, or the anonymous participant of this browser session.

    An anonymous visitor gets a random key in their session (which creates the session). It
    survives login, where ``participant_login`` hands its votes to the user.
    """
    if request.user.is_authenticated:
        return participant_for_user(user=request.user)
    key = request.session.get(SESSION_PARTICIPANT)
    if not key:
        key = secrets.token_urlsafe(24)
        request.session[SESSION_PARTICIPANT] = key
    return participant_for_session(session_key=key)


def participant_login(*, session, user) -> Participant | None:
    """Give the session's anonymous participant to ``user`` who just logged in or signed up.

    A user without a participant adopts the anonymous one (same id, so the sequence tokens
    already handed out stay valid); otherwise its votes are merged with ``participant_merge``.
    Returns the user's participant, or None when the session had none.
    """
    key = session.pop(SESSION_PARTICIPANT, None)
    if not key:
        return None
    source = Participant.objects.filter(session_key=key, user__isnull=True).first()
    if source is None:
        return None
    with transaction.atomic():
        target = Participant.objects.select_for_update().filter(user=user).first()
        if target is None:
            try:
                with transaction.atomic():
                    Participant.objects.filter(pk=source.pk).update(user=user, session_key=None)
            except IntegrityError:
                # The user's participant was created by a concurrent request: merge instead.
                target = Participant.objects.get(user=user)
            else:
                source.refresh_from_db()
                return source
    participant_merge(source=source, target=target)
    return target


def _on_user_logged_in(sender, request, user, **kwargs):
    """``user_logged_in`` receiver (Django's signal, which allauth's logins send too)."""
    session = getattr(request, "session", None)
    if session is not None:
        participant_login(session=session, user=user)


# Votes in and out of sequences ---------------------------------------------------------------

TOKEN_SALT = "concorde.consultations.exposure"


def exposure_token(*, proposal_id: int, participant_id: int, sequence_id) -> str:
    """The proposal key sent with a sequence card: ``<sequence>.<participant>.<HMAC>``.

    The HMAC (SECRET_KEY, SHA-256) binds proposal, participant and sequence, so a token
    cannot be forged, nor reused by another participant or for another proposal.
    """
    mac = salted_hmac(
        TOKEN_SALT, f"{proposal_id}:{participant_id}:{sequence_id}", algorithm="sha256"
    ).hexdigest()[:40]
    return f"{sequence_id}.{participant_id}.{mac}"


def exposure_token_valid(*, token: str, proposal: Proposal, participant: Participant) -> bool:
    try:
        sequence_id, participant_id, mac = token.split(".")
        sequence_id = str(uuid.UUID(sequence_id))
        participant_id = int(participant_id)
    except (ValueError, AttributeError):
        return False
    expected = exposure_token(
        proposal_id=proposal.pk, participant_id=participant_id, sequence_id=sequence_id
    )
    if not constant_time_compare(token, expected):
        return False
    if participant_id == participant.pk:
        return True
    # A participant merged into this one at login handed its exposures over with its votes.
    return Exposure.objects.filter(
        participant=participant, proposal=proposal, sequence_id=sequence_id
    ).exists()


def vote_trust(
    *, participant: Participant, proposal: Proposal, token: str = ""
) -> tuple[str, bool]:
    """The trust of a vote, and whether it was cast in a sequence (Make.org's ``proposalKey``).

    - a valid sequence token for this participant and proposal: ``sequence`` (scored in both
      the general and the sequence scores);
    - no token (the proposal page, a shared link): ``trusted``, the voter being a logged-in user
      or a browser session (scored in the general score only);
    - a token that does not check (forged, another participant's, another proposal's):
      ``untrusted``; the vote counts in the displayed totals, never in the scores.
    """
    token = (token or "").strip()
    if not token:
        return Trust.TRUSTED, False
    if exposure_token_valid(token=token, proposal=proposal, participant=participant):
        return Trust.SEQUENCE, True
    logger.warning("untrusted vote: bad token for proposal %s", proposal.pk)
    return Trust.UNTRUSTED, False


def vote_submit(
    *, participant: Participant, proposal: Proposal, key: str, token: str = ""
) -> tuple[Vote, bool]:
    """A vote from the web: checks that the consultation is open, resolves the trust, casts it."""
    if key not in VoteKey.values:
        raise VoteError(_("Unknown vote key %(key)r.") % {"key": key})
    if not proposal.consultation.is_open:
        raise VoteError(_("This consultation is not open to votes."))
    trust, in_sequence = vote_trust(participant=participant, proposal=proposal, token=token)
    return vote_cast(
        participant=participant, proposal=proposal, key=key, trust=trust, in_sequence=in_sequence
    )


@dataclass(frozen=True, slots=True)
class SequenceItem:
    proposal_id: int
    position: int  # from 1
    pool: str  # why it was chosen: new, top, controversy, included, fallback
    token: str


@dataclass(frozen=True, slots=True)
class StartedSequence:
    id: uuid.UUID
    items: list[SequenceItem]


def sequence_start(
    *,
    consultation: Consultation,
    participant: Participant,
    included_ids=(),
    rng=None,
) -> StartedSequence:
    """Choose the cards of a new sequence, log them as exposures and sign a token per card.

    Proposals the participant already voted on are never chosen. The candidates come from the
    consultation's cached pool (``sequence_cache``): with a warm pool, two queries (the
    participant's votes, the exposures' bulk insert); a cold one adds the two of the build.
    """
    if not consultation.is_open:
        raise VoteError(_("This consultation is not open to votes."))
    voted = set(
        Vote.objects.filter(
            participant=participant, proposal__consultation=consultation
        ).values_list("proposal_id", flat=True)
    )
    cards = select_sequence(
        candidates=sequence_pool_get(consultation),
        voted_ids=voted,
        included_ids=[pk for pk in included_ids if pk not in voted],
        settings=sequence_settings(consultation),
        rng=rng,
    )
    sequence_id = uuid.uuid4()
    now = timezone.now()
    Exposure.objects.bulk_create(
        [
            Exposure(
                participant=participant,
                proposal_id=card.id,
                sequence_id=sequence_id,
                position=position,
                pool=card.reason,
                created_at=now,
            )
            for position, card in enumerate(cards, start=1)
        ]
    )
    items = [
        SequenceItem(
            proposal_id=card.id,
            position=position,
            pool=card.reason,
            token=exposure_token(
                proposal_id=card.id, participant_id=participant.pk, sequence_id=sequence_id
            ),
        )
        for position, card in enumerate(cards, start=1)
    ]
    return StartedSequence(id=sequence_id, items=items)


def participant_demographics_set(
    *, participant: Participant, age_range: str = "", gender: str = "", postal_area: str = ""
) -> None:
    """Keep what a participant said of themselves on the demographics card (each answer
    optional: a blank one changes nothing), and that they were asked, so that the card never
    comes back. Nothing given: they declined."""
    given = {
        field: value
        for field, value in (
            ("age_range", age_range),
            ("gender", gender),
            ("postal_area", postal_area),
        )
        if value
    }
    Participant.objects.filter(pk=participant.pk).update(
        **given, demographics_asked_at=timezone.now()
    )


def exposure_shown(*, sequence_id: str, position: int) -> None:
    """Note that a sequence's card (``position`` from 1) is displayed: its first display only."""
    Exposure.objects.filter(
        sequence_id=sequence_id, position=position, shown_at__isnull=True
    ).update(shown_at=timezone.now())


# Proposals -----------------------------------------------------------------------------------


class ProposalError(ValueError):
    """A proposal that cannot be accepted as written; its message is safe to show."""


DEFAULT_PROPOSALS_PER_HOUR = 10


def proposal_clean_content(*, consultation: Consultation, text: str) -> str:
    """The content to store: the consultation's prefix, a space, then what the user wrote.

    The prefix is added back when the user removed it. Raises ``ProposalError`` when the text
    is blank, holds HTML, or is too short or too long (counted after the prefix).
    """
    text = text or ""
    if proposal_text.contains_html(text):
        raise ProposalError(_("Write plain text: HTML tags are not allowed."))
    prefix = consultation.proposal_prefix.strip()
    rest = proposal_text.strip_prefix(text, prefix)
    if not rest:
        raise ProposalError(_("Write your proposal."))
    low, high = consultation.proposal_min_length, consultation.proposal_max_length
    if len(rest) < low:
        raise ProposalError(
            ngettext(
                "Your proposal is too short: write at least %(n)d character after “%(prefix)s”.",
                "Your proposal is too short: write at least %(n)d characters after “%(prefix)s”.",
                low,
            )
            % {"n": low, "prefix": prefix}
        )
    content = proposal_text.with_prefix(rest, prefix)
    if len(rest) > high or len(content) > Proposal._meta.get_field("content").max_length:
        raise ProposalError(
            ngettext(
                "Your proposal is too long: write at most %(n)d character after “%(prefix)s”.",
                "Your proposal is too long: write at most %(n)d characters after “%(prefix)s”.",
                high,
            )
            % {"n": high, "prefix": prefix}
        )
    return content


def _proposal_rate_hit(user) -> int:
    """Count one proposal in the user's current one-hour window; returns the count."""
    key = f"concorde:proposals-per-hour:{user.pk}"
    cache.add(key, 0, timeout=3600)
    try:
        return cache.incr(key)
    except ValueError:  # the window expired between add and incr
        cache.set(key, 1, timeout=3600)
        return 1


def proposal_submit(*, consultation: Consultation, user, text: str) -> Proposal:
    """Create ``user``'s proposal: pending, or accepted when the consultation auto-accepts.

    Validation as ``proposal_clean_content``; the consultation must be open to proposals and
    ``user`` logged in. At most ``settings.CONCORDE_PROPOSALS_PER_HOUR`` (default 10)
    proposals per account and hour, counted in the cache.
    """
    if user is None or not user.is_authenticated:
        raise ProposalError(_("Log in to propose."))
    if not consultation.accepts_proposals:
        raise ProposalError(_("This consultation does not accept proposals at the moment."))
    content = proposal_clean_content(consultation=consultation, text=text)
    limit = getattr(settings, "CONCORDE_PROPOSALS_PER_HOUR", DEFAULT_PROPOSALS_PER_HOUR)
    if _proposal_rate_hit(user) > limit:
        raise ProposalError(
            ngettext(
                "You have sent %(n)d proposal in the last hour, the most we accept. "
                "Please come back a little later.",
                "You have sent %(n)d proposals in the last hour, the most we accept. "
                "Please come back a little later.",
                limit,
            )
            % {"n": limit}
        )
    status = Proposal.Status.ACCEPTED if consultation.auto_accept else Proposal.Status.PENDING
    if status == Proposal.Status.ACCEPTED:  # a new sequence candidate (sequence_cache)
        transaction.on_commit(lambda: sequence_pool_invalidate(consultation.pk))
    return Proposal.objects.create(
        consultation=consultation,
        content=content,
        author=user,
        author_name=(user.display_name or user.first_name or "")[:60],
        author_age=user.age,
        status=status,
        origin=Proposal.Origin.WEB,
    )
