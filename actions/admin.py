from django.contrib import admin
from django.db import models

from accounts.admin_audit import AuditedAdminMixin

from .models import Action, ActionPlan, ActionUpdate, Follow, Measurement, Objective


class ActionInline(admin.TabularInline):
    model = Action
    fields = ("title", "owner", "status")
    autocomplete_fields = ("owner",)
    show_change_link = True
    extra = 0


@admin.register(ActionPlan)
class ActionPlanAdmin(AuditedAdminMixin, admin.ModelAdmin):
    list_display = ("title", "cause", "status", "created_at")
    list_filter = ("status",)
    list_select_related = ("cause",)
    search_fields = ("title",)
    autocomplete_fields = ("cause",)
    inlines = [ActionInline]


class ObjectiveInline(admin.TabularInline):
    model = Objective
    fields = ("indicator", "unit", "baseline", "baseline_on", "target", "due_date")
    show_change_link = True
    extra = 0


class ActionUpdateInline(admin.TabularInline):
    model = ActionUpdate
    fields = ("created_at", "previous_status", "status", "note", "author")
    readonly_fields = ("created_at", "previous_status", "author")
    extra = 0


@admin.register(Action)
class ActionAdmin(AuditedAdminMixin, admin.ModelAdmin):
    list_display = ("title", "plan", "owner", "status")
    list_filter = ("status",)
    list_select_related = ("plan", "owner")
    search_fields = ("title",)
    autocomplete_fields = ("plan", "owner", "funders")
    raw_id_fields = ("ideas", "proposals")
    inlines = [ObjectiveInline, ActionUpdateInline]


class MeasurementInline(admin.TabularInline):
    model = Measurement
    extra = 0
    raw_id_fields = ("entered_by",)
    # a link typed without a scheme is read as https:// (Django 6.0's default)
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}


@admin.register(Objective)
class ObjectiveAdmin(AuditedAdminMixin, admin.ModelAdmin):
    list_display = ("indicator", "action", "baseline", "baseline_on", "target", "unit", "due_date")
    list_select_related = ("action",)
    search_fields = ("indicator",)
    autocomplete_fields = ("action",)
    inlines = [MeasurementInline]


@admin.register(Follow)
class FollowAdmin(AuditedAdminMixin, admin.ModelAdmin):
    list_display = ("user", "action", "created_at")
    list_select_related = ("user", "action")
    raw_id_fields = ("user", "action")
