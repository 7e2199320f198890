from django.contrib import admin
from django.utils.translation import gettext_lazy as _

from .models import (
    Consultation,
    Exposure,
    Participant,
    Proposal,
    ProposalCounter,
    Qualification,
    Vote,
)


@admin.register(Consultation)
class ConsultationAdmin(admin.ModelAdmin):
    list_display = ("question", "cause", "language", "starts_at", "ends_at", "can_propose")
    list_filter = ("language", "can_propose", "cause")
    list_select_related = ("cause",)
    search_fields = ("question", "slug")
    prepopulated_fields = {"slug": ("question",)}
    autocomplete_fields = ("cause",)
    raw_id_fields = ("current_run",)
    fieldsets = (
        (None, {"fields": ("cause", "question", "slug", "description", "language", "countries")}),
        (_("Phase"), {"fields": ("starts_at", "ends_at", "can_propose", "auto_accept", "votes_target")}),
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
        (_("Engine"), {"fields": ("current_run",)}),
    )


@admin.register(Proposal)
class ProposalAdmin(admin.ModelAdmin):
    list_display = ("content", "consultation", "status", "votes_total", "origin", "created_at")
    list_filter = ("status", "origin", "refusal_reason", "consultation")
    list_select_related = ("consultation",)
    search_fields = ("content", "external_id")
    raw_id_fields = ("author", "moderated_by", "locked_by")
    autocomplete_fields = ("consultation",)
    readonly_fields = ("votes_total", "created_at", "updated_at")
    date_hierarchy = "created_at"
    show_full_result_count = False


@admin.register(Participant)
class ParticipantAdmin(admin.ModelAdmin):
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
class VoteAdmin(admin.ModelAdmin):
    list_display = ("proposal", "participant", "key", "trust", "in_sequence", "created_at")
    list_filter = ("key", "trust", "in_sequence")
    list_select_related = ("proposal", "participant__user")
    raw_id_fields = ("participant", "proposal")
    inlines = [QualificationInline]
    show_full_result_count = False


@admin.register(ProposalCounter)
class ProposalCounterAdmin(admin.ModelAdmin):
    list_display = ("proposal", "key", "trust", "count")
    list_filter = ("trust", "key")
    list_select_related = ("proposal",)
    raw_id_fields = ("proposal",)
    show_full_result_count = False


@admin.register(Exposure)
class ExposureAdmin(admin.ModelAdmin):
    list_display = ("sequence_id", "position", "proposal", "participant", "pool", "created_at")
    list_select_related = ("proposal", "participant")
    raw_id_fields = ("participant", "proposal")
    show_full_result_count = False
