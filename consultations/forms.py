from django import forms
from django.utils.translation import gettext_lazy as _

from .models import Proposal


class ProposalForm(forms.Form):
    """The text after the consultation's prefix; the rules live in ``proposal_clean_content``."""

    content = forms.CharField(
        label=_("Your proposal"),
        max_length=2000,
        required=False,
        widget=forms.Textarea(attrs={"rows": 3}),
    )


class ModerationForm(forms.Form):
    decision = forms.ChoiceField(
        choices=[("accept", _("Accept")), ("refuse", _("Refuse")), ("postpone", _("Postpone"))]
    )
    reason = forms.ChoiceField(
        label=_("Reason"),
        choices=[("", "—"), *Proposal.RefusalReason.choices],
        required=False,
    )
