from django.contrib import admin, messages
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from . import services
from .models import (
    EngineChunk,
    EngineRun,
    Idea,
    IdeaMembership,
    OpinionGroup,
    ParticipantProjection,
    ProposalScore,
)


@admin.register(EngineRun)
class EngineRunAdmin(admin.ModelAdmin):
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
        "input_max_id", "total_chunks", "done_chunks", "timings", "metrics", "error",
    )  # fmt: skip
    raw_id_fields = ("consultation", "created_by")
    actions = ["start_again", "resume"]

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
                services.engine_run_resume(run=run)
            except services.EngineError as exc:
                self.message_user(request, f"#{run.pk}: {exc}", messages.ERROR)
            else:
                self.message_user(
                    request, gettext("Run #%(id)s resumed.") % {"id": run.pk}, messages.SUCCESS
                )


@admin.register(EngineChunk)
class EngineChunkAdmin(admin.ModelAdmin):
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


@admin.register(Idea)
class IdeaAdmin(admin.ModelAdmin):
    list_display = ("label", "consultation", "run", "size", "share")
    list_select_related = ("consultation", "run")
    search_fields = ("label",)
    raw_id_fields = ("run", "consultation")
    exclude = ("centroid",)
    show_full_result_count = False


@admin.register(IdeaMembership)
class IdeaMembershipAdmin(admin.ModelAdmin):
    list_display = ("proposal", "idea", "similarity", "is_central")
    list_select_related = ("proposal", "idea")
    raw_id_fields = ("run", "idea", "proposal")
    show_full_result_count = False


@admin.register(ProposalScore)
class ProposalScoreAdmin(admin.ModelAdmin):
    list_display = (
        "proposal",
        "run",
        "zone",
        "agreement",
        "top_score",
        "group_consensus",
        "bridging",
    )
    list_filter = ("zone",)
    list_select_related = ("proposal",)
    raw_id_fields = ("run", "proposal")
    show_full_result_count = False


@admin.register(OpinionGroup)
class OpinionGroupAdmin(admin.ModelAdmin):
    list_display = ("run", "number", "size")
    raw_id_fields = ("run",)


@admin.register(ParticipantProjection)
class ParticipantProjectionAdmin(admin.ModelAdmin):
    list_display = ("run", "participant", "group", "x", "y", "in_conv")
    raw_id_fields = ("run", "participant")
    show_full_result_count = False
