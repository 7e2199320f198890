"""Write side of the partners app: a partner's position on a proposal, set or withdrawn."""

from django.core.exceptions import PermissionDenied
from django.utils.translation import gettext as _

from consultations.models import Proposal

from .models import Partner, PartnerMembership, PartnerPosition


def check_editor(*, partner: Partner, user) -> None:
    """PermissionDenied unless ``user`` is an editor of ``partner``."""
    if not PartnerMembership.objects.filter(
        partner=partner, user=user, role=PartnerMembership.Role.EDITOR
    ).exists():
        raise PermissionDenied(
            _("Only an editor of %(partner)s may speak in its name.") % {"partner": partner.name}
        )


def position_set(
    *, partner: Partner, proposal: Proposal, user, stance: str, statement: str = ""
) -> PartnerPosition:
    """Take or change ``partner``'s position on an accepted ``proposal`` (one per partner and
    proposal). Raises PermissionDenied unless ``user`` is an editor of the partner, ValueError
    for a proposal that is not accepted or a stance that is not one."""
    check_editor(partner=partner, user=user)
    if proposal.status != Proposal.Status.ACCEPTED:
        raise ValueError(_("Positions are taken on accepted proposals only."))
    if stance not in PartnerPosition.Stance.values:
        raise ValueError(_("Choose agrees, disagrees or takes no side."))
    position, _created = PartnerPosition.objects.update_or_create(
        partner=partner,
        proposal=proposal,
        defaults={"stance": stance, "statement": statement.strip(), "author": user},
    )
    return position


def position_withdraw(*, partner: Partner, proposal: Proposal, user) -> bool:
    """Withdraw ``partner``'s position on ``proposal``; False when it had none."""
    check_editor(partner=partner, user=user)
    deleted, _rows = PartnerPosition.objects.filter(partner=partner, proposal=proposal).delete()
    return bool(deleted)
