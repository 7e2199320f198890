from django.contrib import admin
from django.db import models

from accounts.admin_audit import AuditedAdminMixin

from .models import CausePartner, Partner, PartnerMembership, PartnerPosition


class PartnerMembershipInline(admin.TabularInline):
    model = PartnerMembership
    autocomplete_fields = ("user",)
    extra = 0


@admin.register(Partner)
class PartnerAdmin(AuditedAdminMixin, admin.ModelAdmin):
    list_display = ("name", "kind", "weight", "link")
    list_filter = ("kind",)
    search_fields = ("name",)
    prepopulated_fields = {"slug": ("name",)}
    inlines = [PartnerMembershipInline]
    # a website typed without a scheme is read as https:// (Django 6.0's default)
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}


@admin.register(CausePartner)
class CausePartnerAdmin(AuditedAdminMixin, admin.ModelAdmin):
    list_display = ("partner", "cause", "kind", "weight")
    list_filter = ("kind",)
    list_select_related = ("partner", "cause")
    autocomplete_fields = ("partner", "cause")


@admin.register(PartnerPosition)
class PartnerPositionAdmin(AuditedAdminMixin, admin.ModelAdmin):
    """Staff read and, if need be, remove a position (its removal is audited); only the
    partner's editors write them, from the proposal page (partners/views.py): staff neither add
    nor change what a partner says in its own name."""

    list_display = ("partner", "stance", "proposal", "author", "updated_at")
    list_filter = ("stance", "partner")
    list_select_related = ("partner", "proposal", "author")
    search_fields = ("partner__name", "proposal__content", "statement")

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
