from decimal import Decimal

from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db.models import Q
from django.forms.models import BaseInlineFormSet
from django.utils import formats
from django.utils.text import smart_split, unescape_string_literal
from django.utils.translation import gettext_lazy as _

from accounts.admin_audit import AuditedAdminMixin

from .models import (
    SOURCE_COLUMNS,
    Consultation,
    Exposure,
    ModerationClassifier,
    ModeratorAssignment,
    Participant,
    PopulationShare,
    Proposal,
    ProposalCounter,
    ProposalEdit,
    ProposalPrediction,
    Qualification,
    ResultsAlert,
    Vote,
    VoteBurstFlag,
)
from .selectors import content_saying


class ModeratorAssignmentInline(admin.TabularInline):
    """Who moderates this consultation (superusers moderate every consultation)."""

    model = ModeratorAssignment
    fk_name = "consultation"
    extra = 0
    raw_id_fields = ("moderator",)
    readonly_fields = ("assigned_by", "assigned_at")
    verbose_name_plural = _("moderators (need the “Can moderate proposals” permission)")


class PopulationSharesFormSet(BaseInlineFormSet):
    """Each dimension given sums to 100 %: a weighting to shares that do not is no weighting."""

    def clean(self):
        super().clean()
        sums: dict[str, Decimal] = {}
        for form in self.forms:
            data = getattr(form, "cleaned_data", None)
            if not data or data.get("DELETE") or data.get("percent") is None:
                continue
            dimension = data.get("dimension")
            sums[dimension] = sums.get(dimension, Decimal(0)) + data["percent"]
        wrong = {d: total for d, total in sums.items() if abs(total - 100) > Decimal("0.5")}
        if wrong:
            labels = dict(PopulationShare.Dimension.choices)
            raise ValidationError(
                [
                    _("The shares of the %(dimension)s sum to %(total)s %%, not 100 %%.")
                    % {"dimension": labels.get(d, d), "total": formats.number_format(total)}
                    for d, total in sorted(wrong.items())
                ]
            )


class PopulationShareInline(admin.TabularInline):
    """The population the results are weighted to (results: "Weighted to the population")."""

    model = PopulationShare
    formset = PopulationSharesFormSet
    extra = 0
    verbose_name_plural = _(
        "population shares (optional: the results are also given weighted to them)"
    )


@admin.register(Consultation)
class ConsultationAdmin(AuditedAdminMixin, admin.ModelAdmin):
    inlines = [ModeratorAssignmentInline, PopulationShareInline]
    actions = ("train_moderation_classifier",)

    def save_formset(self, request, form, formset, change):
        if formset.model is ModeratorAssignment:
            for inline_form in formset.forms:
                if inline_form.instance.pk is None and not inline_form.instance.assigned_by_id:
                    inline_form.instance.assigned_by = request.user
        super().save_formset(request, form, formset, change)

    @admin.action(description=_("Train the moderation classifier on past decisions"))
    def train_moderation_classifier(self, request, queryset):
        from .classifier import ClassifierUnavailable, classifier_train

        for consultation in queryset:
            try:
                classifier = classifier_train(consultation=consultation, actor=request.user)
            except ClassifierUnavailable as error:
                self.message_user(request, f"{consultation}: {error}", level=messages.WARNING)
            else:
                self.message_user(
                    request,
                    _("%(consultation)s: classifier trained on %(n)d decisions.")
                    % {"consultation": consultation, "n": classifier.n_samples},
                )

    list_display = ("question", "cause", "language", "starts_at", "ends_at", "can_propose")
    list_filter = ("language", "can_propose", "cause")
    list_select_related = ("cause",)
    search_fields = ("question", "slug")
    prepopulated_fields = {"slug": ("question",)}
    autocomplete_fields = ("cause",)
    raw_id_fields = ("current_run",)
    fieldsets = (
        (None, {"fields": ("cause", "question", "slug", "description", "language", "countries")}),
        (
            _("Phase"),
            {"fields": ("starts_at", "ends_at", "can_propose", "auto_accept", "votes_target")},
        ),
        (
            _("Proposals"),
            {"fields": ("proposal_prefix", "proposal_min_length", "proposal_max_length")},
        ),
        (
            _("Sequence"),
            {
                "classes": ("collapse",),
                "fields": (
                    "sequence_size",
                    "sequence_new_ratio",
                    "sequence_controversy_ratio",
                    "sequence_new_votes_threshold",
                    "sequence_tested_max_votes",
                    "non_sequence_votes_weight",
                ),
            },
        ),
        (_("Who takes part"), {"fields": ("ask_demographics", "population_source")}),
        (_("Engine"), {"fields": ("current_run",)}),
    )


class ProposalEditInline(admin.TabularInline):
    """Spelling corrections by moderators: read only, the history is never rewritten."""

    model = ProposalEdit
    extra = 0
    can_delete = False
    fields = ("created_at", "editor", "before", "after", "distance")
    readonly_fields = fields

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(Proposal)
class ProposalAdmin(AuditedAdminMixin, admin.ModelAdmin):
    inlines = [ProposalEditInline]
    list_display = ("content", "consultation", "status", "votes_total", "origin", "created_at")
    # A date filter rather than a date hierarchy, whose links cost a pass over every proposal
    # (0.34 s per page at 2M).
    list_filter = (
        "status",
        "origin",
        "refusal_reason",
        ("created_at", admin.DateFieldListFilter),
        "consultation",
    )
    list_select_related = ("consultation",)
    search_fields = ("content", "external_id")
    raw_id_fields = ("author", "moderated_by", "locked_by")
    autocomplete_fields = ("consultation",)
    # The columns of the votes at the source follow source_stats (Proposal.save).
    readonly_fields = ("votes_total", *SOURCE_COLUMNS, "created_at", "updated_at")
    show_full_result_count = False

    def get_search_results(self, request, queryset, search_term):
        """Each word of the search in the text (through its trigram index) or as the external id.

        Django's own search compares ``UPPER(content)``, which no index serves: 2.8 s per search
        at 2M proposals."""
        terms = [term for term in smart_split(search_term) if term.strip("\"'")]
        for term in terms:
            if term[0] in "\"'" and term[0] == term[-1]:
                term = unescape_string_literal(term)
            queryset = queryset.filter(content_saying(term) | Q(external_id=term))
        return queryset, False


@admin.register(Participant)
class ParticipantAdmin(AuditedAdminMixin, admin.ModelAdmin):
    list_display = ("__str__", "age_range", "gender", "postal_area", "created_at")
    list_filter = ("age_range", "gender")
    list_select_related = ("user",)
    search_fields = ("user__email", "external_id")
    raw_id_fields = ("user",)
    show_full_result_count = False


class QualificationInline(admin.TabularInline):
    model = Qualification
    extra = 0


@admin.register(Vote)
class VoteAdmin(AuditedAdminMixin, admin.ModelAdmin):
    list_display = ("proposal", "participant", "key", "trust", "in_sequence", "created_at")
    list_filter = ("key", "trust", "in_sequence")
    list_select_related = ("proposal", "participant__user")
    raw_id_fields = ("participant", "proposal")
    inlines = [QualificationInline]
    show_full_result_count = False


@admin.register(ProposalCounter)
class ProposalCounterAdmin(AuditedAdminMixin, admin.ModelAdmin):
    list_display = ("proposal", "key", "trust", "count")
    list_filter = ("trust", "key")
    list_select_related = ("proposal",)
    raw_id_fields = ("proposal",)
    show_full_result_count = False


@admin.register(Exposure)
class ExposureAdmin(AuditedAdminMixin, admin.ModelAdmin):
    list_display = (
        "sequence_id",
        "position",
        "proposal",
        "participant",
        "pool",
        "created_at",
        "shown_at",
    )
    list_select_related = ("proposal", "participant")
    raw_id_fields = ("participant", "proposal")
    show_full_result_count = False


@admin.register(VoteBurstFlag)
class VoteBurstFlagAdmin(AuditedAdminMixin, admin.ModelAdmin):
    """Vote bursts flagged by consultations/abuse.py, for moderators to confirm or dismiss."""

    list_display = (
        "created_at",
        "scope",
        "short_source",
        "consultation",
        "count",
        "threshold",
        "window_seconds",
        "status",
        "votes_distrusted",
        "reviewed_by",
    )
    list_filter = ("status", "scope", "consultation")
    list_select_related = ("consultation", "reviewed_by")
    raw_id_fields = ("participant", "consultation", "reviewed_by")
    readonly_fields = [field.name for field in VoteBurstFlag._meta.fields]
    actions = ("confirm_bursts", "dismiss_bursts")
    date_hierarchy = "created_at"

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.display(description=_("source"))
    def short_source(self, flag):
        return flag.source_key[:12]

    @admin.action(
        description=_("Confirm: distrust the votes of these bursts"), permissions=["change"]
    )
    def confirm_bursts(self, request, queryset):
        from .abuse import burst_flag_confirm

        for flag in queryset:
            burst_flag_confirm(flag=flag, actor=request.user)
        self.message_user(request, _("Bursts confirmed: their votes no longer count in scores."))

    @admin.action(description=_("Dismiss: these were genuine voters"), permissions=["change"])
    def dismiss_bursts(self, request, queryset):
        from .abuse import burst_flag_dismiss

        for flag in queryset:
            burst_flag_dismiss(flag=flag, actor=request.user)
        self.message_user(request, _("Bursts dismissed: later votes are trusted again."))


@admin.register(ModeratorAssignment)
class ModeratorAssignmentAdmin(AuditedAdminMixin, admin.ModelAdmin):
    list_display = ("moderator", "consultation", "assigned_by", "assigned_at")
    list_filter = ("consultation",)
    list_select_related = ("moderator", "consultation", "assigned_by")
    search_fields = ("moderator__email", "consultation__question")
    raw_id_fields = ("moderator",)
    autocomplete_fields = ("consultation",)
    readonly_fields = ("assigned_by", "assigned_at")

    def save_model(self, request, obj, form, change):
        if not change and not obj.assigned_by_id:
            obj.assigned_by = request.user
        super().save_model(request, obj, form, change)


@admin.register(ProposalEdit)
class ProposalEditAdmin(AuditedAdminMixin, admin.ModelAdmin):
    """The history of spelling corrections (read only)."""

    list_display = ("created_at", "proposal", "editor", "before", "after", "distance")
    list_select_related = ("proposal", "editor")
    list_filter = ("proposal__consultation",)
    search_fields = ("before", "after", "editor__email")
    readonly_fields = [field.name for field in ProposalEdit._meta.fields]
    date_hierarchy = "created_at"

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(ModerationClassifier)
class ModerationClassifierAdmin(AuditedAdminMixin, admin.ModelAdmin):
    """Trained classifiers (see consultations/classifier.py); train them from the consultations."""

    list_display = ("consultation", "created_at", "n_samples", "classes", "trained_by")
    list_select_related = ("consultation", "trained_by")
    list_filter = ("consultation",)
    exclude = ("model",)
    readonly_fields = (
        "consultation",
        "classes",
        "n_samples",
        "metrics",
        "trained_by",
        "created_at",
    )

    def has_add_permission(self, request):
        return False


@admin.register(ProposalPrediction)
class ProposalPredictionAdmin(AuditedAdminMixin, admin.ModelAdmin):
    list_display = ("proposal", "refuse_probability", "reason", "reason_probability", "classifier")
    list_select_related = ("proposal", "classifier")
    list_filter = ("reason",)
    raw_id_fields = ("proposal", "classifier")
    show_full_result_count = False

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


# Import jobs (consultations/imports.py): uploaded on the staff page, listed and retried here.
from .models import ImportJob  # noqa: E402


@admin.register(ImportJob)
class ImportJobAdmin(AuditedAdminMixin, admin.ModelAdmin):
    list_display = (
        "pk",
        "original_name",
        "consultation",
        "kind",
        "status",
        "rows_done",
        "rows_total",
        "created_count",
        "rows_skipped",
        "created_by",
        "created_at",
    )
    list_filter = ("status", "kind")
    list_select_related = ("consultation", "created_by")
    search_fields = ("original_name", "sha256", "consultation__slug")
    readonly_fields = [field.name for field in ImportJob._meta.fields] + ["progress_page"]
    actions = ("retry_jobs",)
    date_hierarchy = "created_at"

    def has_change_permission(self, request, obj=None):
        return False

    @admin.display(description=_("progress page"))
    def progress_page(self, job):
        from django.urls import reverse
        from django.utils.html import format_html

        return format_html(
            '<a href="{}">{}</a>', reverse("imports:detail", args=[job.pk]), _("open")
        )

    def add_view(self, request, form_url="", extra_context=None):
        # Uploads go through the staff page, which checks the file and runs it as a job.
        from django.shortcuts import redirect

        return redirect("imports:list")

    @admin.action(description=_("Retry the failed imports"), permissions=["add"])
    def retry_jobs(self, request, queryset):
        from .imports import import_job_retry

        retried = sum(import_job_retry(job=job, user=request.user) for job in queryset)
        self.message_user(request, _("%(n)d import(s) queued again.") % {"n": retried})


@admin.register(ResultsAlert)
class ResultsAlertAdmin(AuditedAdminMixin, admin.ModelAdmin):
    list_display = ("user", "consultation", "created_at", "first_sent_at", "final_sent_at")
    list_filter = ("consultation",)
    list_select_related = ("user", "consultation")
    raw_id_fields = ("user",)
    autocomplete_fields = ("consultation",)
    readonly_fields = ("created_at", "first_sent_at", "final_sent_at")
    show_full_result_count = False
