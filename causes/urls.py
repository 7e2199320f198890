from django.urls import path

from . import views

app_name = "causes"

urlpatterns = [
    path("<slug:slug>/", views.cause_detail, name="detail"),
]
