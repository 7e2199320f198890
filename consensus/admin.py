from django import forms
from django.contrib import admin, messages
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from accounts.admin_audit import AuditedAdminMixin
from consultations.models import Consultation

from . import selectors, services
from .models import (
    EngineChunk,
    EngineRun,
    Idea,
    IdeaMembership,
    IdeaPlacement,
    OpinionGroup,
    ParticipantProjection,
    ProposalScore,
    Theme,
)
from .results_views import results_cache_forget


def _rows_table(rows):
    if not rows:
        return "—"
    body = format_html_join("", "<tr><th scope='row'>{}</th><td>{}</td></tr>", rows)
    return format_html("<table><tbody>{}</tbody></table>", body)


class _PickConsultationForm(forms.Form):
    consultation = forms.ModelChoiceField(
        label=_("Consultation"),
        queryset=Consultation.objects.order_by("-starts_at", "-pk"),
    )


@admin.register(EngineRun)
class EngineRunAdmin(AuditedAdminMixin, admin.ModelAdmin):
    list_display = (
        "id",
        "consultation",
        "kind",
        "status",
        "phase",
        "done_chunks",
        "total_chunks",
        "created_at",
    )
    list_filter = ("status", "kind")
    list_select_related = ("consultation",)
    search_fields = ("consultation__question",)
    readonly_fields = (
        "created_at", "started_at", "finished_at", "finalizing_since", "input_hash", "input_count",
        "input_max_id", "total_chunks", "done_chunks", "metrics_table", "timings_table", "error",
    )  # fmt: skip
    exclude = ("metrics", "timings")  # shown as tables (the staff run page's wording)
    raw_id_fields = ("consultation", "created_by", "replaced_run")
    actions = ["start_again", "resume"]

    @admin.display(description=_("Metrics"))
    def metrics_table(self, obj):
        return _rows_table(selectors.run_metric_rows(run=obj))

    @admin.display(description=_("Timings (seconds)"))
    def timings_table(self, obj):
        return _rows_table(selectors.run_timing_rows(run=obj))

    def view_on_site(self, obj):
        return reverse("consensus:run", args=[obj.consultation.slug, obj.pk])

    def add_view(self, request, form_url="", extra_context=None):
        """Runs are started through the engine (validated parameters, one active run): pick the
        consultation here, then the staff page's start form does the rest."""
        form = _PickConsultationForm(request.POST or request.GET or None)
        if form.is_bound and form.is_valid():
            consultation = form.cleaned_data["consultation"]
            return redirect(reverse("consensus:runs", args=[consultation.slug]) + "#start-run")
        context = {
            **self.admin_site.each_context(request),
            "title": gettext("Start an engine run"),
            "form": form,
            "opts": self.model._meta,
        }
        return TemplateResponse(
            request, "admin/consensus/enginerun/pick_consultation.html", context
        )

    @admin.action(description=_("Start a new run with the same settings"))
    def start_again(self, request, queryset):
        seen = set()
        for run in queryset.select_related("consultation"):
            if run.consultation_id in seen:
                continue
            seen.add(run.consultation_id)
            try:
                new = services.engine_run_start(
                    consultation=run.consultation,
                    kind=run.kind,
                    parameters={
                        k: v for k, v in run.parameters.items() if k in services.PARAMETERS
                    },
                    model_name=run.model_name,
                    seed=run.seed,
                    user=request.user,
                )
            except services.EngineError as exc:
                self.message_user(request, f"{run.consultation}: {exc}", messages.ERROR)
            else:
                self.message_user(
                    request, gettext("Run #%(id)s started.") % {"id": new.pk}, messages.SUCCESS
                )

    @admin.action(description=_("Resume (only missing chunks are redone)"))
    def resume(self, request, queryset):
        for run in queryset:
            try:
                services.engine_run_resume(run=run, actor=request.user)
            except services.EngineError as exc:
                self.message_user(request, f"#{run.pk}: {exc}", messages.ERROR)
            else:
                self.message_user(
                    request, gettext("Run #%(id)s resumed.") % {"id": run.pk}, messages.SUCCESS
                )


@admin.register(EngineChunk)
class EngineChunkAdmin(AuditedAdminMixin, admin.ModelAdmin):
    list_display = (
        "run",
        "number",
        "lo_id",
        "hi_id",
        "size",
        "embedded",
        "reused",
        "seconds",
        "done_at",
    )
    list_filter = ("done_at",)
    raw_id_fields = ("run",)
    show_full_result_count = False


class _NamedByStaffMixin:
    """A label staff rewrite is theirs: later runs keep it for the same idea or theme
    (services._carry_curation, _carry_theme_names), unless they untick "named by staff" in the
    same save; the cached results pages show it at once."""

    def save_model(self, request, obj, form, change):
        if "label" in form.changed_data and "named_by_staff" not in form.changed_data:
            obj.named_by_staff = True
        super().save_model(request, obj, form, change)
        results_cache_forget(consultation_id=obj.run.consultation_id, run_id=obj.run_id)


@admin.register(Idea)
class IdeaAdmin(_NamedByStaffMixin, AuditedAdminMixin, admin.ModelAdmin):
    list_display = (
        "label",
        "consultation",
        "run",
        "size",
        "share",
        "named_by_staff",
        "created_by_staff",
    )
    list_filter = (
        ("consultation", admin.RelatedOnlyFieldListFilter),
        "named_by_staff",
        "created_by_staff",
    )
    list_select_related = ("consultation", "run")
    search_fields = ("label",)
    raw_id_fields = ("run", "consultation", "theme")
    exclude = ("centroid",)
    show_full_result_count = False


@admin.register(Theme)
class ThemeAdmin(_NamedByStaffMixin, AuditedAdminMixin, admin.ModelAdmin):
    list_display = ("__str__", "run", "number", "named_by_staff")
    list_filter = (("run__consultation", admin.RelatedOnlyFieldListFilter), "named_by_staff")
    list_select_related = ("run__consultation",)
    search_fields = ("label", "run__consultation__question")
    raw_id_fields = ("run",)
    readonly_fields = ("keywords",)
    show_full_result_count = False


class _ViewOrDeleteAdmin(AuditedAdminMixin, admin.ModelAdmin):
    """Rows the engine's services write: the admin shows them and may delete them (with their
    run), never adds or edits one."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(IdeaMembership)
class IdeaMembershipAdmin(_ViewOrDeleteAdmin):
    """Read only: staff move proposals from the run's idea pages (``views.run_idea``). A
    membership deleted here takes its proposal out of the idea: the ideas it leaves are
    described again and the vote figures recomputed (``tasks.refresh_ideas``)."""

    list_display = ("proposal", "idea", "similarity", "is_central")
    list_select_related = ("proposal", "idea")
    raw_id_fields = ("run", "idea", "proposal")
    show_full_result_count = False

    def delete_model(self, request, obj):
        with services.ideas_losing_members([obj.idea_id]):
            super().delete_model(request, obj)

    def delete_queryset(self, request, queryset):
        with services.ideas_losing_members(queryset.values("idea_id")):
            super().delete_queryset(request, queryset)


@admin.register(IdeaPlacement)
class IdeaPlacementAdmin(_ViewOrDeleteAdmin):
    """Read only: staff move proposals from the run's idea pages (``views.run_idea``), which keep
    sizes, labels and scores right. Deleting a placement lets the next run place it again."""

    list_display = ("proposal", "run", "placed_by", "placed_at")
    list_select_related = ("proposal", "run", "placed_by")
    raw_id_fields = ("run", "proposal", "placed_by")
    show_full_result_count = False


@admin.register(ProposalScore)
class ProposalScoreAdmin(AuditedAdminMixin, admin.ModelAdmin):
    list_display = (
        "proposal",
        "run",
        "zone",
        "agreement",
        "top_score",
        "group_consensus",
        "bridging",
        "shown",
        "answered",
    )
    list_filter = ("zone",)
    list_select_related = ("proposal",)
    raw_id_fields = ("run", "proposal")
    show_full_result_count = False


@admin.register(OpinionGroup)
class OpinionGroupAdmin(AuditedAdminMixin, admin.ModelAdmin):
    list_display = ("run", "number", "size")
    raw_id_fields = ("run",)


@admin.register(ParticipantProjection)
class ParticipantProjectionAdmin(AuditedAdminMixin, admin.ModelAdmin):
    list_display = ("run", "participant", "group", "x", "y", "in_conv")
    raw_id_fields = ("run", "participant")
    show_full_result_count = False
