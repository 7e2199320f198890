from django import forms
from django.utils.text import Truncator, format_lazy
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from .models import EngineRun
from .selectors import MODEL_LABELS
from .services import MAX_SEED, PARAMETERS, _cluster_methods

MODEL_CHOICES = [
    ("", _("Default for the consultation's language")),
    *((name, format_lazy("{} ({})", label, name)) for name, label in MODEL_LABELS.items()),
]

METHOD_LABELS = {
    "graph": _("Neighbour graph + Leiden communities (default)"),
    "hdbscan": _("HDBSCAN (density)"),
    "agglomerative": _("Agglomerative (average linkage)"),
}

# Gathering neighbouring ideas by persistence: the ratio chosen on the tuning half (session 22,
# docs/bench_engine_quality.md); held out it bought ARI against the question with ARI against
# the reference clusters, so it is a choice for staff, not the default.
GATHER_PERSISTENCE_RATIO = 1.5

NEIGHBOUR_IDEAS_CHOICES = [
    ("", _("Keep them apart (engine default)")),
    ("gather", _("Gather those that stay together in a coarser grouping")),
]

PUBLISH_CHOICES = [
    ("auto", _("Publish the results as soon as the run is done")),
    ("manual", _("Keep them unpublished until I publish them")),
]


class IdeaLabelForm(forms.Form):
    label = forms.CharField(label=_("Label"), max_length=250, strip=True)


class ProposalSearchForm(forms.Form):
    """``?q=``: the words staff look for in a run's proposals (run and idea pages)."""

    q = forms.CharField(max_length=100, required=False, strip=True)  # its label is the page's


class IdeasViewForm(forms.Form):
    """``?view=``: how the staff run page shows its ideas, as cards (default) or a compact list."""

    view = forms.ChoiceField(
        choices=[("cards", _("Cards")), ("list", _("Compact list"))], required=False
    )


class ProposalIdsField(forms.Field):
    """Proposal numbers sent as repeated values (ticked checkboxes)."""

    widget = forms.MultipleHiddenInput
    default_error_messages = {
        "required": _("Tick at least one proposal to move."),
        "invalid": _("The proposals to move must be given by their numbers."),
    }

    def to_python(self, value):
        if not value:
            return []
        try:
            return sorted({int(item) for item in value})
        except (TypeError, ValueError):
            raise forms.ValidationError(self.error_messages["invalid"], code="invalid") from None


def _idea_choices(ideas, leave_out=None) -> list[tuple[str, str]]:
    """Choices of a "move to" list from ``selectors.run_idea_choices``: each idea's label and how
    many proposals it holds (staff choosing among some 260 ideas of a large run see which count)."""
    return [
        (
            str(number),
            ngettext("%(label)s (%(n)s proposal)", "%(label)s (%(n)s proposals)", size)
            % {"label": Truncator(label).chars(90), "n": size},
        )
        for number, label, size in ideas
        if number != leave_out
    ]


class ProposalPlaceForm(forms.Form):
    """Staff move the ticked proposals of the published run to one of its ideas, or to none."""

    NO_IDEA = "none"
    NEW_IDEA = "new"

    proposals = ProposalIdsField()
    idea = forms.ChoiceField(label=_("Move the ticked proposals to"), choices=())

    def __init__(self, *args, ideas=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["idea"].choices = [
            ("", _("Choose where they go")),
            (self.NEW_IDEA, _("A new idea (split them out)")),
            (self.NO_IDEA, _("No idea (left out of every idea)")),
            *_idea_choices(ideas),
        ]
        self.fields["idea"].error_messages.update(
            required=_("Choose the idea the ticked proposals go to, or no idea."),
            invalid_choice=_("This analysis has no such idea: reload the page and choose again."),
        )

    @property
    def new_idea(self) -> bool:
        return self.cleaned_data["idea"] == self.NEW_IDEA

    @property
    def number(self) -> int | None:
        idea = self.cleaned_data["idea"]
        return None if idea in (self.NO_IDEA, self.NEW_IDEA) else int(idea)


class IdeaMergeForm(forms.Form):
    """Staff merge an idea of the published run into another of its ideas."""

    into = forms.ChoiceField(label=_("Merge this idea into"), choices=())

    def __init__(self, *args, ideas=(), number=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["into"].choices = [
            ("", _("Choose the idea it joins")),
            *_idea_choices(ideas, leave_out=number),
        ]
        self.fields["into"].error_messages.update(
            required=_("Choose the idea this one joins."),
            invalid_choice=_("This analysis has no such idea: reload the page and choose again."),
        )


def _bounds(name: str) -> dict:
    spec = PARAMETERS[name]
    cast = int if spec.type == "int" else float
    return {"min_value": cast(spec.lo), "max_value": cast(spec.hi)}


class RunStartForm(forms.Form):
    """Start a run: kind, model, seed, clustering and opinion-group parameters.

    Every parameter is checked again by ``services.engine_parameters_validate``; empty optional
    fields keep the engine's own defaults.
    """

    kind = forms.ChoiceField(
        label=_("Kind"), choices=EngineRun.Kind.choices, initial=EngineRun.Kind.FULL
    )
    model_name = forms.ChoiceField(
        label=_("Embedding model"), choices=MODEL_CHOICES, required=False
    )
    seed = forms.IntegerField(label=_("Seed"), min_value=0, max_value=MAX_SEED, initial=0)
    chunk_size = forms.IntegerField(
        label=_("Proposals per chunk"),
        initial=PARAMETERS["chunk_size"].default,
        **_bounds("chunk_size"),
    )
    # not "method": a form control named "method" would shadow form.method in the DOM
    cluster_method = forms.ChoiceField(label=_("Clustering method"), required=False)
    min_cluster_size = forms.IntegerField(
        label=_("Smallest idea (proposals)"),
        required=False,
        help_text=_("Empty: chosen from the number of proposals."),
        **_bounds("min_cluster_size"),
    )
    expected_ideas = forms.IntegerField(
        label=_("Expected number of ideas"), required=False, **_bounds("expected_ideas")
    )
    resolution = forms.FloatField(
        label=_("Graph resolution (higher: more, smaller ideas)"),
        required=False,
        help_text=_("Empty: automatic."),
        **_bounds("resolution"),
    )
    neighbour_ideas = forms.ChoiceField(
        label=_("Neighbouring ideas"),
        choices=NEIGHBOUR_IDEAS_CHOICES,
        required=False,
        help_text=_(
            "Gathering gives fewer, broader ideas where neighbouring ideas are hard to tell "
            "apart, and the run takes longer. Neighbour graph method only."
        ),
    )
    near_threshold = forms.FloatField(
        label=_("Near-duplicate threshold (cosine)"),
        required=False,
        initial=PARAMETERS["near_threshold"].default,
        help_text=_("Empty: do not fold near duplicates."),
        **_bounds("near_threshold"),
    )
    n_themes = forms.IntegerField(
        label=_("Themes that group the ideas"),
        required=False,
        help_text=_("Empty: about the square root of the number of ideas, 12 at most; 0: none."),
        **_bounds("n_themes"),
    )
    max_groups = forms.IntegerField(
        label=_("Most opinion groups"),
        required=False,
        initial=PARAMETERS["max_groups"].default,
        **_bounds("max_groups"),
    )
    publish = forms.ChoiceField(
        label=_("Publication"), choices=PUBLISH_CHOICES, required=False, initial="auto"
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["cluster_method"].choices = [("", _("Engine default"))] + [
            (m, METHOD_LABELS.get(m, m)) for m in _cluster_methods()
        ]

    def clean_publish(self):
        return self.cleaned_data.get("publish") or "auto"

    def clean(self):
        data = super().clean()
        if data.get("neighbour_ideas") and data.get("cluster_method") not in (None, "", "graph"):
            self.add_error(
                "neighbour_ideas",
                _("Only the neighbour graph method can gather neighbouring ideas."),
            )
        return data

    def parameters(self) -> dict:
        data = self.cleaned_data
        params = {"chunk_size": data["chunk_size"], "make_current": data["publish"] == "auto"}
        if "near_threshold" in self.data:  # sent empty: folding off; not sent: the default
            params["near_threshold"] = data.get("near_threshold")
        if data.get("max_groups") is not None:
            params["max_groups"] = data["max_groups"]
        if data.get("neighbour_ideas") == "gather":
            params["persistence_ratio"] = GATHER_PERSISTENCE_RATIO
        for field, name in (
            ("cluster_method", "method"),
            ("min_cluster_size", "min_cluster_size"),
            ("expected_ideas", "expected_ideas"),
            ("resolution", "resolution"),
            ("n_themes", "n_themes"),
        ):
            value = data.get(field)
            if value not in (None, ""):
                params[name] = value
        return params


class RunCompareForm(forms.Form):
    """Two finished runs of the same consultation, A (before) and B (after)."""

    a = forms.ModelChoiceField(label=_("Run A (before)"), queryset=EngineRun.objects.none())
    b = forms.ModelChoiceField(label=_("Run B (after)"), queryset=EngineRun.objects.none())
    min_share = forms.FloatField(
        label=_("Share of an idea's proposals that makes a link"),
        min_value=0.05,
        max_value=1.0,
        initial=0.2,
        required=False,
    )

    def __init__(self, *args, consultation, **kwargs):
        super().__init__(*args, **kwargs)
        runs = EngineRun.objects.filter(
            consultation=consultation, status=EngineRun.Status.DONE
        ).order_by("-created_at")
        for name in ("a", "b"):
            self.fields[name].queryset = runs
            self.fields[name].label_from_instance = lambda run: (
                _("#%(id)s · %(kind)s · %(date)s")
                % {
                    "id": run.pk,
                    "kind": run.get_kind_display(),
                    "date": run.created_at.strftime("%Y-%m-%d %H:%M"),
                }
            )

    def clean(self):
        data = super().clean()
        if data.get("a") and data.get("b") and data["a"].pk == data["b"].pk:
            raise forms.ValidationError(_("Choose two different runs."))
        if data.get("min_share") is None:
            data["min_share"] = 0.2
        return data
