from django.contrib import admin

from accounts.admin_audit import AuditedAdminMixin

from .models import CausePartner, Partner, PartnerMembership


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


@admin.register(CausePartner)
class CausePartnerAdmin(AuditedAdminMixin, admin.ModelAdmin):
    list_display = ("partner", "cause", "kind", "weight")
    list_filter = ("kind",)
    list_select_related = ("partner", "cause")
    autocomplete_fields = ("partner", "cause")
