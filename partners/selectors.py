"""Read side of the partners app: the positions partners take on proposals."""

from django.db.models import Count, F, Q, QuerySet

from consultations.models import Proposal
from consultations.selectors import consultation_visible_list

from .models import Partner, PartnerMembership, PartnerPosition

PARTNER_PAGE_POSITIONS = 50


def proposal_positions(*, proposal: Proposal) -> list[PartnerPosition]:
    """The partners' positions on ``proposal``, in the partners' display order."""
    return list(
        PartnerPosition.objects.filter(proposal=proposal)
        .select_related("partner")
        .order_by("partner__weight", "partner__name")
    )


def partner_positions(*, partner: Partner, user) -> QuerySet[PartnerPosition]:
    """``partner``'s positions on accepted proposals of consultations ``user`` may see, the
    latest first (a proposal refused later, or in a private consultation, is left out)."""
    return (
        PartnerPosition.objects.filter(
            partner=partner,
            proposal__status=Proposal.Status.ACCEPTED,
            proposal__consultation__in=consultation_visible_list(user=user),
        )
        .select_related("proposal__consultation")
        .order_by("-updated_at", "-pk")
    )


def partners_speaking_for(*, user) -> list[Partner]:
    """The partners ``user`` may take positions for: those they are an editor of."""
    if not user.is_authenticated:
        return []
    return list(
        Partner.objects.filter(
            memberships__user=user, memberships__role=PartnerMembership.Role.EDITOR
        ).order_by("weight", "name")
    )


def idea_positions(*, idea) -> list[dict]:
    """Per partner, how many of ``idea``'s accepted proposals it took each stance on, in one
    query: ``{"name", "slug", "agree", "disagree", "neutral"}``, in the partners' display
    order."""
    stance = PartnerPosition.Stance
    return list(
        PartnerPosition.objects.filter(
            proposal__idea_memberships__idea=idea, proposal__status=Proposal.Status.ACCEPTED
        )
        .values(name=F("partner__name"), slug=F("partner__slug"), weight=F("partner__weight"))
        .annotate(
            agree=Count("pk", filter=Q(stance=stance.AGREE)),
            disagree=Count("pk", filter=Q(stance=stance.DISAGREE)),
            neutral=Count("pk", filter=Q(stance=stance.NEUTRAL)),
        )
        .order_by("weight", "name")
    )
