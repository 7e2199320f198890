"""Reads of a person's own data (the "my data" page and its JSON download)."""

from __future__ import annotations

from django.core.serializers.json import DjangoJSONEncoder
from django.utils import timezone

from actions.models import ActionUpdate, Follow, Measurement
from causes.models import Cause
from consultations.models import Participant, Proposal, Qualification, ResultsAlert, Vote
from partners.models import PartnerMembership, PartnerPosition

EXPORT_FORMAT = "concorde.personal-data/1"


def account_data_summary(*, user) -> dict:
    """Counts shown on the "my data" page (what a download holds and what an erasure keeps)."""
    participant = Participant.objects.filter(user=user).first()
    return {
        "votes": participant.votes.count() if participant else 0,
        "proposals": Proposal.objects.filter(author=user).count(),
        "follows": Follow.objects.filter(user=user).count(),
        "results_alerts": ResultsAlert.objects.filter(user=user).count(),
        "memberships": PartnerMembership.objects.filter(user=user).count(),
    }


def account_data_export(*, user) -> dict:
    """Everything Concorde holds about `user`, as JSON-ready data (GDPR articles 15 and 20).

    One participant's votes are at most a few thousand rows, so the document is built in memory;
    rows are read as tuples (values_list) in a fixed number of queries.
    """
    from allauth.account.models import EmailAddress

    participant = Participant.objects.filter(user=user).first()
    data = {
        "format": EXPORT_FORMAT,
        "exported_at": timezone.now(),
        "account": {
            "id": user.pk,
            "email": user.email,
            "display_name": user.display_name,
            "first_name": user.first_name,
            "last_name": user.last_name,
            "age": user.age,
            "date_joined": user.date_joined,
            "last_login": user.last_login,
            "is_staff": user.is_staff,
            "email_addresses": [
                {"email": a.email, "verified": a.verified, "primary": a.primary}
                for a in EmailAddress.objects.filter(user=user).order_by("pk")
            ],
        },
        "participant": None,
        "votes": [],
        "proposals": [],
        "follows": [],
        "partner_memberships": [],
        "private_consultation_memberships": [],
        "partner_contributions": {"status_updates": [], "measurements": []},
    }
    if participant is not None:
        data["participant"] = {
            "id": participant.pk,
            "age_range": participant.age_range,
            "gender": participant.gender,
            "postal_area": participant.postal_area,
            "demographics_asked_at": participant.demographics_asked_at,
            "created_at": participant.created_at,
            "cards_shown": participant.exposures.count(),
        }
        qualifications: dict[int, list[str]] = {}
        for vote_id, key in (
            Qualification.objects.filter(vote__participant=participant)
            .order_by("vote_id", "key")
            .values_list("vote_id", "key")
            .iterator(chunk_size=5000)
        ):
            qualifications.setdefault(vote_id, []).append(key)
        columns = (
            "pk", "proposal__consultation__slug", "proposal_id", "proposal__content", "key",
            "trust", "in_sequence", "created_at", "updated_at",
        )  # fmt: skip
        votes = (
            Vote.objects.filter(participant=participant)
            .order_by("created_at", "pk")
            .values_list(*columns)
        )
        data["votes"] = [
            {
                "consultation": slug,
                "proposal_id": proposal_id,
                "proposal": content,
                "vote": key,
                "trust": trust,
                "in_sequence": in_sequence,
                "qualifications": qualifications.get(pk, []),
                "created_at": created_at,
                "updated_at": updated_at,
            }
            for pk, slug, proposal_id, content, key, trust, in_sequence, created_at, updated_at in (
                votes.iterator(chunk_size=5000)
            )
        ]
    data["proposals"] = [
        {
            "id": p.pk,
            "consultation": p.consultation.slug,
            "content": p.content,
            "status": p.status,
            "refusal_reason": p.refusal_reason,
            "author_name": p.author_name,
            "author_age": p.author_age,
            "votes": p.votes_total,
            "created_at": p.created_at,
        }
        for p in Proposal.objects.filter(author=user).select_related("consultation").order_by("pk")
    ]
    data["follows"] = [
        {"action_id": f.action_id, "action": f.action.title, "created_at": f.created_at}
        for f in Follow.objects.filter(user=user).select_related("action").order_by("pk")
    ]
    data["results_alerts"] = [
        {
            "consultation": a.consultation.slug,
            "created_at": a.created_at,
            "first_sent_at": a.first_sent_at,
            "final_sent_at": a.final_sent_at,
        }
        for a in ResultsAlert.objects.filter(user=user)
        .select_related("consultation")
        .order_by("pk")
    ]
    data["partner_memberships"] = [
        {"partner": m.partner.name, "role": m.role}
        for m in PartnerMembership.objects.filter(user=user).select_related("partner").order_by("pk")
    ]
    data["private_consultation_memberships"] = [
        {"cause": c.title, "slug": c.slug} for c in Cause.objects.filter(members=user).order_by("pk")
    ]
    data["partner_contributions"]["status_updates"] = [
        {"action_id": u.action_id, "status": u.status, "note": u.note, "created_at": u.created_at}
        for u in ActionUpdate.objects.filter(author=user).order_by("pk")
    ]
    data["partner_contributions"]["measurements"] = [
        {
            "objective_id": m.objective_id,
            "measured_on": m.measured_on,
            "value": m.value,
            "note": m.note,
            "created_at": m.created_at,
        }
        for m in Measurement.objects.filter(entered_by=user).order_by("pk")
    ]
    data["partner_contributions"]["positions"] = [
        {
            "partner": p.partner.name,
            "proposal_id": p.proposal_id,
            "stance": p.stance,
            "statement": p.statement,
            "updated_at": p.updated_at,
        }
        for p in PartnerPosition.objects.filter(author=user).select_related("partner").order_by("pk")
    ]
    return data


class ExportEncoder(DjangoJSONEncoder):
    """Dates as ISO 8601, decimals as strings (DjangoJSONEncoder)."""
