from django.conf import settings
from django.conf.urls.static import static
from django.contrib import admin
from django.urls import include, path

from config.health import health
from config.metrics import metrics_view
from consultations import views as consultation_views

urlpatterns = [
    path("", consultation_views.home, name="home"),
    path("health/", health, name="health"),
    path("i18n/", include("django.conf.urls.i18n")),
    path("metrics", metrics_view, name="metrics"),
    path("accounts/", include("accounts.urls")),
    path("accounts/", include("allauth.urls")),
    path("admin/", admin.site.urls),
    path("causes/", include("causes.urls")),
    path("c/", include("consultations.urls")),
    path("moderation/", include("consultations.moderation_urls")),
    path("partners/", include("partners.urls")),
    path("engine/", include("consensus.urls")),
    path("actions/", include("actions.urls")),
    path("api/", include("consultations.api_urls")),
    path("staff/imports/", include("consultations.import_urls")),
]
if settings.DEBUG:
    urlpatterns += static(settings.MEDIA_URL, document_root=settings.MEDIA_ROOT)

handler404 = "config.errors.page_not_found"

admin.site.site_header = "Concorde"
admin.site.site_title = "Concorde"
