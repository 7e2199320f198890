from django.contrib import admin

from .models import EngineRun, Idea, IdeaMembership


@admin.register(EngineRun)
class EngineRunAdmin(admin.ModelAdmin):
    list_display = ("id", "consultation", "kind", "status", "phase", "done_chunks", "total_chunks", "created_at")
    list_filter = ("status", "kind")
    list_select_related = ("consultation",)
    search_fields = ("consultation__question",)
    readonly_fields = ("created_at", "started_at", "finished_at", "input_hash", "timings", "metrics", "error")
    raw_id_fields = ("consultation", "created_by")


@admin.register(Idea)
class IdeaAdmin(admin.ModelAdmin):
    list_display = ("label", "consultation", "run", "size", "share")
    list_select_related = ("consultation", "run")
    search_fields = ("label",)
    raw_id_fields = ("run", "consultation")
    show_full_result_count = False


@admin.register(IdeaMembership)
class IdeaMembershipAdmin(admin.ModelAdmin):
    list_display = ("proposal", "idea", "similarity", "is_central")
    list_select_related = ("proposal", "idea")
    raw_id_fields = ("run", "idea", "proposal")
    show_full_result_count = False
