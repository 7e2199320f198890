import re

from django import forms
from django.core.exceptions import ValidationError
from django.utils.translation import gettext_lazy as _

from .models import Participant, Proposal

_FIVE_DIGITS = re.compile(r"^\d{5}$")
_AREA = re.compile(r"^[A-Z0-9]{1,4}$")


def postal_area_clean(text: str) -> str:
    """The postal area kept of what a participant typed, never a whole postcode: a five-digit
    postcode gives its French département ("69003" → "69"; overseas three digits, "97411" →
    "974"), a postcode with a space its first part (a British outward code: "SW1A 1AA" →
    "SW1A"); otherwise one to four letters and digits ("2A"). Blank stays blank; anything else
    raises ``ValidationError``."""
    text = " ".join((text or "").upper().split())
    if not text:
        return ""
    if _FIVE_DIGITS.match(text):
        return text[:3] if text.startswith(("97", "98")) else text[:2]
    area = text.split(" ", 1)[0]
    if not _AREA.match(area):
        raise ValidationError(
            _("Write the first two digits of your postcode, or the first part of it (“SW1A”)."),
            code="postal_area",
        )
    return area


class ProposalForm(forms.Form):
    """The text after the consultation's prefix; the rules live in ``proposal_clean_content``."""

    content = forms.CharField(
        label=_("Your proposal"),
        max_length=2000,
        required=False,
        widget=forms.Textarea(attrs={"rows": 3}),
    )


class DemographicsForm(forms.Form):
    """Who takes part: each answer optional (the sequence's demographics card)."""

    age_range = forms.ChoiceField(
        label=_("Your age"),
        choices=[("", _("I prefer not to say")), *Participant.AgeRange.choices],
        required=False,
    )
    gender = forms.ChoiceField(
        label=_("You are"),
        choices=[("", _("I prefer not to say")), *Participant.Gender.choices],
        required=False,
        widget=forms.RadioSelect,
    )
    postal_area = forms.CharField(
        label=_("Where you live"),
        help_text=_("The first two digits of your postcode, or the first part of it."),
        max_length=20,
        required=False,
    )

    def clean_postal_area(self):
        return postal_area_clean(self.cleaned_data["postal_area"])


class ModerationForm(forms.Form):
    decision = forms.ChoiceField(
        choices=[("accept", _("Accept")), ("refuse", _("Refuse")), ("postpone", _("Postpone"))]
    )
    reason = forms.ChoiceField(
        label=_("Reason"),
        choices=[("", "—"), *Proposal.RefusalReason.choices],
        required=False,
    )
