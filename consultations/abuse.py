"""Abuse: bot protection of the proposal form and vote bursts flagged for moderators.

Bot protection needs no external service (no captcha):

- a honeypot field (``website``), hidden from people (off-screen, ``aria-hidden``, no tab stop)
  but filled by form-stuffing bots;
- a signed timestamp (``form_stamp``, HMAC of SECRET_KEY): a form sent sooner than
  ``CONCORDE_PROPOSE_MIN_SECONDS`` after it was shown (a script), later than
  ``CONCORDE_PROPOSE_MAX_SECONDS`` (a replayed page), without a stamp or with a forged one is
  refused with a clear message, and nothing is stored (not even the anonymous draft).

Vote bursts: every vote that changes something counts, in the cache, in a fixed window of M
seconds per participant and per hashed IP. Past N (``CONCORDE_VOTE_BURST="N/M"``, and
``CONCORDE_VOTE_BURST_IP``), a ``VoteBurstFlag`` row is written once per source and window, its
count kept up to date while the burst lasts. A participant with an open or confirmed flag casts
untrusted votes (``Trust.UNTRUSTED``: shown in the totals, never in the scores). Moderators
confirm a flag (the burst's earlier votes become untrusted too, counters moved in the same
transaction) or dismiss it (later votes are trusted again), from the admin; both are audited.
IP flags inform only: votes do not keep the IP hash, so they cannot be traced back to it.

A cache outage fails open (nothing flagged, the vote recorded): abuse checks never cost a vote.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from datetime import UTC, datetime

from django.conf import settings
from django.core import signing
from django.core.cache import cache
from django.db import IntegrityError, transaction
from django.db.models import F
from django.db.models.functions import Greatest
from django.utils import timezone
from django.utils.translation import gettext as _

from accounts.audit import audit_record, model_snapshot
from config.ratelimit import client_network_hash

from .models import Participant, Proposal, Qualification, Trust, Vote, VoteBurstFlag, VoteKey
from .services import VoteError, counters_add, vote_cast, vote_submit, vote_trust

logger = logging.getLogger(__name__)

# Bot protection -------------------------------------------------------------------------------

STAMP_FIELD = "form_stamp"
HONEYPOT_FIELD = "website"
STAMP_SALT = "concorde.consultations.abuse.form_stamp"


def form_stamp(*, now: float | None = None) -> str:
    """A signed "form shown at" timestamp for the proposal form."""
    return signing.dumps({"t": round(now if now is not None else time.time(), 3)}, salt=STAMP_SALT)


def proposal_bot_check(data) -> str | None:
    """None when the POSTed proposal form looks human, else the message to show.

    ``data`` is ``request.POST``. Call before anything is stored.
    """
    if (data.get(HONEYPOT_FIELD) or "").strip():
        logger.info("proposal refused: honeypot filled")
        return _("We could not accept this form. Please reload the page and try again.")
    raw = data.get(STAMP_FIELD) or ""
    max_age = getattr(settings, "CONCORDE_PROPOSE_MAX_SECONDS", 6 * 3600)
    try:
        shown = float(signing.loads(raw[:200], salt=STAMP_SALT, max_age=max_age)["t"])
    except signing.SignatureExpired:
        return _("This form has expired. Please reload the page and send your proposal again.")
    except (signing.BadSignature, KeyError, TypeError, ValueError):
        logger.info("proposal refused: missing or bad form stamp")
        return _("This form is incomplete or out of date. Please reload the page and try again.")
    age = time.time() - shown
    if age > max_age:
        return _("This form has expired. Please reload the page and send your proposal again.")
    if age < getattr(settings, "CONCORDE_PROPOSE_MIN_SECONDS", 3):
        logger.info("proposal refused: sent %.1f s after the form was shown", age)
        return _(
            "That was very fast: please take a moment to read your proposal again, then send it."
        )
    return None


# Vote bursts ----------------------------------------------------------------------------------


def _parse_burst(value: str) -> tuple[int, int] | None:
    """``"N/M"`` (N votes in M seconds) → (N, M); None when empty or off."""
    try:
        count, seconds = (int(part) for part in str(value or "").split("/"))
    except ValueError:
        return None
    return (count, seconds) if count > 0 and seconds > 0 else None


def burst_limits() -> dict[str, tuple[int, int]]:
    limits = {
        VoteBurstFlag.Scope.PARTICIPANT: _parse_burst(getattr(settings, "CONCORDE_VOTE_BURST", "")),
        VoteBurstFlag.Scope.IP: _parse_burst(getattr(settings, "CONCORDE_VOTE_BURST_IP", "")),
    }
    return {scope: limit for scope, limit in limits.items() if limit}


FLAGGED_SET_KEY = "concorde:burst:flagged-participants"
FLAGGED_SET_SECONDS = 300


def _flag_marker(participant_id: int) -> str:
    return f"concorde:burst:flagged:{participant_id}"


def _flagged_participants() -> frozenset[int]:
    """Ids of the participants with an open or confirmed flag: one query per 5 minutes for
    the whole site (flags are rare), then a cache read per vote."""
    ids = frozenset(
        VoteBurstFlag.objects.exclude(status=VoteBurstFlag.Status.DISMISSED)
        .exclude(participant=None)
        .values_list("participant_id", flat=True)
    )
    try:
        cache.set(FLAGGED_SET_KEY, ids, timeout=FLAGGED_SET_SECONDS)
    except Exception:
        pass
    return ids


def participant_is_flagged(participant: Participant) -> bool:
    """Whether the participant has an open or confirmed burst flag.

    One cache round trip per vote: the site-wide set of flagged ids (rebuilt from the database
    when missing) and this participant's marker, set the moment a flag is written so that a
    set built just before is not trusted for them.
    """
    marker = _flag_marker(participant.pk)
    try:
        cached = cache.get_many([FLAGGED_SET_KEY, marker])
    except Exception:  # the cache is down: ask the database
        cached = {}
    if cached.get(marker):
        return True
    ids = cached.get(FLAGGED_SET_KEY)
    if ids is None:
        ids = _flagged_participants()
    return participant.pk in ids


def _count_in_window(scope: str, source_key: str, seconds: int, now: float) -> tuple[int, int]:
    """Add one to the source's current window; returns (count, window start as a timestamp)."""
    start = int(now // seconds) * seconds
    key = f"concorde:burst:{scope}:{source_key}:{start}"
    cache.add(key, 0, timeout=seconds * 2)
    try:
        return cache.incr(key), start
    except ValueError:  # the key expired between add and incr
        cache.set(key, 1, timeout=seconds * 2)
        return 1, start


def vote_burst_record(
    *, participant: Participant, ip: str, consultation=None, now: float | None = None
) -> list[VoteBurstFlag]:
    """Count one vote of ``participant`` from the hashed IP ``ip``; flag the sources past N.

    Returns the flags written or updated by this vote (usually none).
    """
    now = time.time() if now is None else now
    sources = {VoteBurstFlag.Scope.PARTICIPANT: str(participant.pk)}
    if ip:
        sources[VoteBurstFlag.Scope.IP] = ip
    flags = []
    for scope, (threshold, seconds) in burst_limits().items():
        source_key = sources.get(scope)
        if not source_key:
            continue
        try:
            count, start = _count_in_window(scope, source_key, seconds, now)
        except Exception:  # fail open when the cache is down
            logger.warning("vote burst not counted: cache unavailable")
            return flags
        if count <= threshold:
            continue
        window_start = datetime.fromtimestamp(start, tz=UTC)
        flag = _flag_write(
            scope=scope,
            source_key=source_key,
            participant=participant,
            ip=ip,
            consultation=consultation,
            window_start=window_start,
            seconds=seconds,
            threshold=threshold,
            count=count,
        )
        if flag is not None:
            flags.append(flag)
    return flags


def _flag_write(
    *, scope, source_key, participant, ip, consultation, window_start, seconds, threshold, count
):
    lookup = {"scope": scope, "source_key": source_key, "window_start": window_start}
    updated = VoteBurstFlag.objects.filter(**lookup).update(count=Greatest(F("count"), count))
    if updated:
        return VoteBurstFlag.objects.filter(**lookup).first()
    try:
        with transaction.atomic():
            flag = VoteBurstFlag.objects.create(
                **lookup,
                participant=participant,
                ip_hash=ip,
                consultation=consultation,
                window_seconds=seconds,
                threshold=threshold,
                count=count,
            )
    except IntegrityError:  # another process flagged the same window first
        VoteBurstFlag.objects.filter(**lookup).update(count=Greatest(F("count"), count))
        return VoteBurstFlag.objects.filter(**lookup).first()
    logger.warning(
        "vote burst flagged: %s %s, %d votes in %d s", scope, source_key[:12], count, seconds
    )
    if scope == VoteBurstFlag.Scope.PARTICIPANT:
        try:
            cache.set(_flag_marker(participant.pk), 1, timeout=FLAGGED_SET_SECONDS * 2)
            cache.delete(FLAGGED_SET_KEY)
        except Exception:
            pass
    return flag


def vote_submit_watched(
    *, request, participant: Participant, proposal: Proposal, key: str, token: str = ""
) -> tuple[Vote, bool]:
    """``services.vote_submit``, untrusted for a flagged participant, then counted for bursts."""
    if participant_is_flagged(participant):
        if key not in VoteKey.values:
            raise VoteError(_("Unknown vote key %(key)r.") % {"key": key})
        if not proposal.consultation.is_open:
            raise VoteError(_("This consultation is not open to votes."))
        _trust, in_sequence = vote_trust(participant=participant, proposal=proposal, token=token)
        result = vote_cast(
            participant=participant,
            proposal=proposal,
            key=key,
            trust=Trust.UNTRUSTED,
            in_sequence=in_sequence,
        )
    else:
        result = vote_submit(participant=participant, proposal=proposal, key=key, token=token)
    if result[1]:
        vote_burst_record(
            participant=participant,
            ip=client_network_hash(request),
            consultation=proposal.consultation,
        )
    return result


def _distrust_votes(votes) -> int:
    """Move ``votes`` (locked, not yet untrusted) and their qualifications to untrusted."""
    deltas: Counter = Counter()
    ids = []
    for vote in votes:
        ids.append(vote.pk)
        deltas[(vote.proposal_id, vote.key, vote.trust)] -= 1
        deltas[(vote.proposal_id, vote.key, Trust.UNTRUSTED)] += 1
    for proposal_id, qkey, trust in Qualification.objects.filter(
        vote_id__in=ids
    ).values_list("vote__proposal_id", "key", "vote__trust"):
        deltas[(proposal_id, qkey, trust)] -= 1
        deltas[(proposal_id, qkey, Trust.UNTRUSTED)] += 1
    counters_add(dict(deltas))
    Vote.objects.filter(pk__in=ids).update(trust=Trust.UNTRUSTED, updated_at=timezone.now())
    return len(ids)


def burst_flag_confirm(*, flag: VoteBurstFlag, actor) -> VoteBurstFlag:
    """A moderator confirms a burst: the participant's votes since the window opened become
    untrusted (their counters moved), and later votes stay untrusted. Audited."""
    with transaction.atomic():
        flag = VoteBurstFlag.objects.select_for_update().get(pk=flag.pk)
        before = model_snapshot(flag)
        distrusted = 0
        if flag.participant_id:
            votes = list(
                Vote.objects.select_for_update()
                .filter(participant_id=flag.participant_id, created_at__gte=flag.window_start)
                .exclude(trust=Trust.UNTRUSTED)
                .order_by("pk")
            )
            distrusted = _distrust_votes(votes)
        flag.status = VoteBurstFlag.Status.CONFIRMED
        flag.votes_distrusted += distrusted
        flag.reviewed_by, flag.reviewed_at = actor, timezone.now()
        flag.save()
        audit_record(
            actor=actor,
            action="vote_burst.confirm",
            target=flag,
            before=before,
            after=model_snapshot(flag),
            note=f"{distrusted} votes distrusted",
        )
    _marker_reset(flag)
    return flag


def burst_flag_dismiss(*, flag: VoteBurstFlag, actor) -> VoteBurstFlag:
    """A moderator dismisses a flag (a fast but genuine voter): later votes are trusted again
    when the participant has no other flag. Votes already distrusted stay so. Audited."""
    with transaction.atomic():
        flag = VoteBurstFlag.objects.select_for_update().get(pk=flag.pk)
        before = model_snapshot(flag)
        flag.status = VoteBurstFlag.Status.DISMISSED
        flag.reviewed_by, flag.reviewed_at = actor, timezone.now()
        flag.save()
        audit_record(
            actor=actor,
            action="vote_burst.dismiss",
            target=flag,
            before=before,
            after=model_snapshot(flag),
        )
    _marker_reset(flag)
    return flag


def _marker_reset(flag: VoteBurstFlag) -> None:
    """After a review, the next vote reads the flags from the database again."""
    try:
        keys = [FLAGGED_SET_KEY]
        if flag.participant_id:
            keys.append(_flag_marker(flag.participant_id))
        cache.delete_many(keys)
    except Exception:
        pass
