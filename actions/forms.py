from django import forms
from django.conf import settings
from django.template.defaultfilters import filesizeformat
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from .models import Action, Measurement

# Evidence uploads: small documents and pictures only. The content is checked too, not just the
# name, so that a renamed executable or HTML page is refused.
EVIDENCE_MAX_BYTES = getattr(settings, "CONCORDE_EVIDENCE_MAX_BYTES", 5 * 1024 * 1024)
EVIDENCE_SIGNATURES = {
    ".pdf": (b"%PDF-",),
    ".png": (b"\x89PNG\r\n\x1a\n",),
    ".jpg": (b"\xff\xd8\xff",),
    ".jpeg": (b"\xff\xd8\xff",),
    ".webp": (b"RIFF",),
    ".csv": None,  # plain text, checked below
}


def _looks_like(upload, suffix: str) -> bool:
    upload.seek(0)
    head = upload.read(2048)
    upload.seek(0)
    signatures = EVIDENCE_SIGNATURES[suffix]
    if signatures is None:  # CSV: plain text (no NUL byte) that does not open like markup
        return b"\x00" not in head and not head.lstrip().startswith(b"<")
    if suffix == ".webp":
        return head[:4] == b"RIFF" and head[8:12] == b"WEBP"
    return any(head.startswith(s) for s in signatures)


class MeasurementForm(forms.ModelForm):
    evidence_url = forms.URLField(
        label=_("Evidence link"), required=False, max_length=200, assume_scheme="https"
    )

    class Meta:
        model = Measurement
        fields = ["value", "measured_on", "evidence_url", "evidence_file", "note"]
        widgets = {
            "measured_on": forms.DateInput(attrs={"type": "date"}, format="%Y-%m-%d"),
            "note": forms.Textarea(attrs={"rows": 2}),
            "value": forms.NumberInput(attrs={"step": "any", "inputmode": "decimal"}),
        }

    def __init__(self, *args, objective=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.objective = objective
        if objective is not None:
            # Unique ids when a page shows one form per objective.
            self.prefix = f"o{objective.pk}"
            if objective.unit:
                self.fields["value"].label = _("Value (%(unit)s)") % {"unit": objective.unit}
        self.fields["measured_on"].initial = timezone.localdate
        self.fields["evidence_file"].widget.attrs["accept"] = ",".join(EVIDENCE_SIGNATURES)
        self.fields["evidence_file"].help_text = _(
            "PDF, PNG, JPEG, WebP or CSV, at most %(size)s."
        ) % {"size": filesizeformat(EVIDENCE_MAX_BYTES)}
        self.fields["evidence_url"].help_text = _("A public page or document that shows the value.")

    def clean_measured_on(self):
        measured_on = self.cleaned_data["measured_on"]
        if measured_on > timezone.localdate():
            raise forms.ValidationError(
                _("A measurement cannot be dated in the future."), code="future"
            )
        if measured_on.year < 1900:
            raise forms.ValidationError(_("Enter a date after 1900."))
        return measured_on

    def clean_evidence_file(self):
        upload = self.cleaned_data.get("evidence_file")
        if not upload:
            return upload
        if upload.size > EVIDENCE_MAX_BYTES:
            raise forms.ValidationError(
                _("The file is too large (%(size)s); the limit is %(limit)s."),
                code="too_large",
                params={
                    "size": filesizeformat(upload.size),
                    "limit": filesizeformat(EVIDENCE_MAX_BYTES),
                },
            )
        name = upload.name.lower()
        suffix = name[name.rfind(".") :] if "." in name else ""
        if suffix not in EVIDENCE_SIGNATURES or not _looks_like(upload, suffix):
            raise forms.ValidationError(
                _("This type of file is not accepted: send a PDF, PNG, JPEG, WebP or CSV file."),
                code="file_type",
            )
        return upload


class StatusUpdateForm(forms.Form):
    status = forms.ChoiceField(
        label=_("Status"),
        choices=[(v, label) for v, label in Action.Status.choices if v != Action.Status.DRAFT],
    )
    note = forms.CharField(
        label=_("What changed?"),
        required=False,
        max_length=2000,
        widget=forms.Textarea(attrs={"rows": 3}),
    )

    def __init__(self, *args, action, **kwargs):
        super().__init__(*args, **kwargs)
        self.action = action
        self.prefix = f"a{action.pk}"
        if action.status != Action.Status.DRAFT:
            self.fields["status"].initial = action.status

    def clean(self):
        cleaned = super().clean()
        if cleaned.get("status") == self.action.status and not cleaned.get("note", "").strip():
            raise forms.ValidationError(_("Choose a new status or write a note."))
        return cleaned
