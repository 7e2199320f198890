from django.contrib import admin

from accounts.admin_audit import AuditedAdminMixin
from consultations.models import Consultation
from partners.models import CausePartner

from .models import Cause


class ConsultationInline(admin.TabularInline):
    model = Consultation
    fields = ("question", "slug", "language", "starts_at", "ends_at", "can_propose")
    show_change_link = True
    extra = 0


class CausePartnerInline(admin.TabularInline):
    model = CausePartner
    autocomplete_fields = ("partner",)
    extra = 0


@admin.register(Cause)
class CauseAdmin(AuditedAdminMixin, admin.ModelAdmin):
    list_display = ("title", "kind", "status", "created_at")
    list_filter = ("status", "kind")
    search_fields = ("title", "summary")
    prepopulated_fields = {"slug": ("title",)}
    filter_horizontal = ("members",)
    inlines = [ConsultationInline, CausePartnerInline]
