"""Shared helpers of the personal-data tests: a citizen with a bit of everything, and a search of
every column of every table for what identifies them."""

from __future__ import annotations

from dataclasses import dataclass

from allauth.account.models import EmailAddress
from django.db import connection

from accounts.audit import audit_record, model_snapshot
from actions.models import Follow
from consultations.models import Participant, Proposal, ProposalCounter
from consultations.services import qualification_toggle, vote_cast
from partners.models import PartnerMembership
from tests.actions.factories import ActionFactory
from tests.factories import ConsultationFactory, PartnerFactory, ProposalFactory, UserFactory


@dataclass
class Citizen:
    user: object
    participant: Participant
    proposals: list
    voted: list
    own_proposal: Proposal
    needles: list  # strings that identify the person and must vanish


def make_citizen(*, tag: str = "A", staff=None) -> Citizen:
    """A citizen with an account, demographics, votes with qualifications, a proposal, a follow,
    a partner account, a verified e-mail address and a staff edit of each in the audit log."""
    email = f"zephyrine.quattrocchi{tag.lower()}@example.net"
    user = UserFactory(
        email=email,
        display_name=f"Zéphyrine{tag}",
        first_name=f"Philomène{tag}",
        last_name=f"Quattrocchi{tag}",
        age=34,
    )
    EmailAddress.objects.create(user=user, email=email, verified=True, primary=True)
    session_key = f"secret-session-key-of-{tag.lower()}-0123456789"
    participant = Participant.objects.create(
        user=user, session_key=session_key, age_range="25-34", gender="f", postal_area="75011"
    )
    consultation = ConsultationFactory()
    proposals = [ProposalFactory(consultation=consultation, author_name="Other") for _ in range(4)]
    voted = []
    for proposal, key, qualification in (
        (proposals[0], "agree", "like_it"),
        (proposals[1], "disagree", "no_way"),
        (proposals[2], "neutral", None),
    ):
        vote, _changed = vote_cast(participant=participant, proposal=proposal, key=key)
        if qualification:
            qualification_toggle(vote=vote, key=qualification)
        voted.append(proposal)
    own = ProposalFactory(
        consultation=consultation, author=user, author_name=user.display_name, author_age=34,
        content="Il faut des bancs dans le parc",
    )  # fmt: skip
    Follow.objects.create(user=user, action=ActionFactory())
    PartnerMembership.objects.create(user=user, partner=PartnerFactory())
    consultation.cause.members.add(user)  # member of a private consultation
    if staff is not None:
        before = model_snapshot(user)
        user.last_name = f"Quattrocchi{tag}"  # an edit that keeps the name in before/after
        audit_record(actor=staff, action="user.admin_change", target=user, before=before,
                     after=model_snapshot(user))  # fmt: skip
        audit_record(actor=staff, action="participant.admin_change", target=participant,
                     before=model_snapshot(participant), after=model_snapshot(participant))  # fmt: skip
        audit_record(actor=staff, action="proposal.accept", target=own,
                     before=model_snapshot(own), after=model_snapshot(own))  # fmt: skip
    return Citizen(
        user=user,
        participant=participant,
        proposals=proposals,
        voted=voted,
        own_proposal=own,
        needles=[email, f"Zéphyrine{tag}", f"Philomène{tag}", f"Quattrocchi{tag}", session_key],
    )


def counters_state(proposal_ids):
    counters = {
        (c.proposal_id, c.key, c.trust): c.count
        for c in ProposalCounter.objects.filter(proposal_id__in=proposal_ids)
    }
    totals = dict(Proposal.objects.filter(pk__in=proposal_ids).values_list("pk", "votes_total"))
    return counters, totals


def find_everywhere(needles) -> list[tuple[str, str, str]]:
    """(table, column, needle) for every column of every table whose text contains a needle."""
    hits = []
    qn = connection.ops.quote_name
    like = "ILIKE" if connection.vendor == "postgresql" else "LIKE"
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names(cursor):
            columns = [c.name for c in connection.introspection.get_table_description(cursor, table)]
            for needle in needles:
                where = " OR ".join(f"CAST({qn(c)} AS TEXT) {like} %s" for c in columns)
                cursor.execute(
                    f"SELECT * FROM {qn(table)} WHERE {where} LIMIT 5", [f"%{needle}%"] * len(columns)
                )
                for row in cursor.fetchall():
                    for column, value in zip(columns, row, strict=True):
                        if value is not None and needle.lower() in str(value).lower():
                            hits.append((table, column, needle))
    return hits
