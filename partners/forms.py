from django import forms
from django.utils.translation import gettext_lazy as _

from .models import PartnerPosition


class PositionForm(forms.Form):
    """A partner's position on a proposal: its stance and, if it likes, why."""

    stance = forms.ChoiceField(
        label=_("Position"),
        choices=PartnerPosition.Stance.choices,
        widget=forms.RadioSelect,
        error_messages={"required": _("Choose agrees, disagrees or takes no side.")},
    )
    statement = forms.CharField(
        label=_("Why (optional, published with the position)"),
        required=False,
        max_length=500,
        widget=forms.Textarea(attrs={"rows": 3}),
    )
