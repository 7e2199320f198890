from django.urls import path

from . import views

app_name = "actions"

urlpatterns = [
    path("cause/<slug:slug>/", views.cause_actions, name="cause"),
    path("<int:pk>/", views.action_detail, name="detail"),
    path("<int:pk>/follow/", views.action_follow, name="follow"),
    path("<int:pk>/unfollow/", views.action_unfollow, name="unfollow"),
    path("unfollow/<str:token>/", views.unfollow_from_email, name="unfollow_email"),
]
