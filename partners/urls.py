from django.urls import path

from . import views

app_name = "partners"

urlpatterns = [
    # The space comes before the slug pattern, which would otherwise match "space".
    path("space/", views.space, name="space"),
    path("space/actions/<int:pk>/", views.space_action, name="space_action"),
    path("space/actions/<int:pk>/status/", views.space_status_update, name="space_status"),
    path(
        "space/objectives/<int:objective_pk>/measurements/",
        views.space_measurement_create,
        name="space_measurement",
    ),
    path("<slug:slug>/", views.partner_detail, name="detail"),
    path("<slug:slug>/positions/<int:proposal_pk>/", views.position_save, name="position"),
]
