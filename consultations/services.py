"""Writes for consultations: participants, votes, qualifications and their counters."""

from collections import Counter

from django.db import IntegrityError, connection, transaction
from django.db.models import F

from .models import (
    QUALIFICATIONS_BY_VOTE,
    Participant,
    Proposal,
    ProposalCounter,
    Qualification,
    Trust,
    Vote,
    VoteKey,
)


class VoteError(ValueError):
    """A vote or qualification that breaks a rule; its message is safe to show."""


def counters_add(deltas: dict[tuple[int, str, str], int]) -> None:
    """Add ``deltas[(proposal_id, key, trust)]`` to the counters, inside the database.

    One upsert per changed counter: ``count = count + delta`` is computed by the database, so
    concurrent votes never overwrite each other's increments (no read-modify-write in Python).
    """
    table = ProposalCounter._meta.db_table
    rows = [(pid, key, trust, delta) for (pid, key, trust), delta in sorted(deltas.items()) if delta]
    if not rows:
        return
    sql = (
        f"INSERT INTO {table} (proposal_id, key, trust, count) VALUES (%s, %s, %s, %s) "
        f"ON CONFLICT (proposal_id, key, trust) DO UPDATE SET count = {table}.count + EXCLUDED.count"
    )
    with connection.cursor() as cursor:
        cursor.executemany(sql, rows)


def participant_for_user(*, user) -> Participant:
    participant, _ = Participant.objects.get_or_create(user=user)
    return participant


def participant_for_session(*, session_key: str) -> Participant:
    participant, _ = Participant.objects.get_or_create(session_key=session_key)
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
    for field in ("age_range", "gender", "postal_area"):
        if not getattr(target, field) and getattr(source, field):
            setattr(target, field, getattr(source, field))
    target.save()
    source.exposures.update(participant=target)
    source.delete()
    return moved


def _withdraw(vote: Vote) -> None:
    """Take a vote and its qualifications out of the counters (the rows stay)."""
    deltas = Counter({(vote.proposal_id, vote.key, vote.trust): -1})
    for qualification in vote.qualifications.all():
        deltas[(vote.proposal_id, qualification.key, vote.trust)] -= 1
    counters_add(deltas)
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
        raise VoteError(f"Unknown vote key {key!r}.")
    if trust not in Trust.values:
        raise VoteError(f"Unknown trust level {trust!r}.")
    if proposal.status != Proposal.Status.ACCEPTED:
        raise VoteError("This proposal is not open to votes.")
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
                return vote, True
        if vote.key == key:
            return vote, False
        _withdraw(vote)
        vote.qualifications.all().delete()
        vote.key, vote.trust, vote.in_sequence = key, trust, in_sequence
        vote.save(update_fields=["key", "trust", "in_sequence", "updated_at"])
        counters_add({(proposal.pk, key, trust): 1})
        Proposal.objects.filter(pk=proposal.pk).update(votes_total=F("votes_total") + 1)
        return vote, True


def qualification_toggle(*, vote: Vote, key: str) -> bool:
    """Switch a qualification on or off on ``vote``; returns whether it is now on."""
    if key not in QUALIFICATIONS_BY_VOTE.get(vote.key, ()):
        raise VoteError(f"Qualification {key!r} does not go with a {vote.key!r} vote.")
    with transaction.atomic():
        vote = Vote.objects.select_for_update().get(pk=vote.pk)
        if key not in QUALIFICATIONS_BY_VOTE[vote.key]:
            raise VoteError(f"Qualification {key!r} does not go with a {vote.key!r} vote.")
        deleted, _ = Qualification.objects.filter(vote=vote, key=key).delete()
        if deleted:
            counters_add({(vote.proposal_id, key, vote.trust): -1})
            return False
        Qualification.objects.create(vote=vote, vote_key=vote.key, key=key)
        counters_add({(vote.proposal_id, key, vote.trust): 1})
        return True


def counters_recount(*, proposal_ids=None) -> dict:
    """Rebuild counters and vote totals from the votes table; returns the drift found.

    Used after a crash between writing votes and counters, and by the import commands.
    """
    votes = Vote.objects.all()
    qualifications = Qualification.objects.all()
    proposals = Proposal.objects.all()
    if proposal_ids is not None:
        proposal_ids = list(proposal_ids)
        votes = votes.filter(proposal_id__in=proposal_ids)
        qualifications = qualifications.filter(vote__proposal_id__in=proposal_ids)
        proposals = proposals.filter(pk__in=proposal_ids)
    truth: Counter = Counter()
    for pid, key, trust in votes.values_list("proposal_id", "key", "trust").iterator(chunk_size=10000):
        truth[(pid, key, trust)] += 1
    for pid, key, trust in qualifications.values_list(
        "vote__proposal_id", "key", "vote__trust"
    ).iterator(chunk_size=10000):
        truth[(pid, key, trust)] += 1
    counters = ProposalCounter.objects.all()
    if proposal_ids is not None:
        counters = counters.filter(proposal_id__in=proposal_ids)
    stored = {(c.proposal_id, c.key, c.trust): c.count for c in counters.iterator(chunk_size=10000)}
    drift = {k: truth.get(k, 0) - stored.get(k, 0) for k in set(truth) | set(stored)}
    drift = {k: d for k, d in drift.items() if d}
    totals: Counter = Counter()
    for (pid, key, _trust), n in truth.items():
        if key in VoteKey.values:
            totals[pid] += n
    with transaction.atomic():
        counters_add(drift)
        changed_totals = 0
        for proposal in proposals.only("pk", "votes_total").iterator(chunk_size=10000):
            if proposal.votes_total != totals.get(proposal.pk, 0):
                changed_totals += Proposal.objects.filter(pk=proposal.pk).update(
                    votes_total=totals.get(proposal.pk, 0)
                )
    return {"counters_fixed": len(drift), "totals_fixed": changed_totals}
