from django.urls import path

from . import moderation_views as views

app_name = "moderation"

urlpatterns = [
    path("", views.moderation_queue, name="queue"),
    path("list/", views.moderation_list, name="list"),
    path("bulk/", views.moderation_bulk, name="bulk"),
    path("<int:pk>/", views.moderation_decision, name="decide"),
    path("<int:pk>/skip/", views.moderation_skip, name="skip"),
    path("<int:pk>/edit/", views.moderation_edit_view, name="edit"),
]
