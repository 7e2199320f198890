from django.contrib import admin

from .models import Action, ActionPlan, Measurement, Objective


class ActionInline(admin.TabularInline):
    model = Action
    fields = ("title", "owner", "status")
    autocomplete_fields = ("owner",)
    show_change_link = True
    extra = 0


@admin.register(ActionPlan)
class ActionPlanAdmin(admin.ModelAdmin):
    list_display = ("title", "cause", "status", "created_at")
    list_filter = ("status",)
    list_select_related = ("cause",)
    search_fields = ("title",)
    autocomplete_fields = ("cause",)
    inlines = [ActionInline]


class ObjectiveInline(admin.TabularInline):
    model = Objective
    extra = 0


@admin.register(Action)
class ActionAdmin(admin.ModelAdmin):
    list_display = ("title", "plan", "owner", "status")
    list_filter = ("status",)
    list_select_related = ("plan", "owner")
    search_fields = ("title",)
    autocomplete_fields = ("plan", "owner", "funders")
    raw_id_fields = ("ideas", "proposals")
    inlines = [ObjectiveInline]


class MeasurementInline(admin.TabularInline):
    model = Measurement
    extra = 0
    raw_id_fields = ("entered_by",)


@admin.register(Objective)
class ObjectiveAdmin(admin.ModelAdmin):
    list_display = ("indicator", "action", "baseline", "target", "unit", "due_date")
    list_select_related = ("action",)
    search_fields = ("indicator",)
    autocomplete_fields = ("action",)
    inlines = [MeasurementInline]
