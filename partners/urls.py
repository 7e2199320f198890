from django.urls import path

from . import views

app_name = "partners"

urlpatterns = [
    path("<slug:slug>/", views.partner_detail, name="detail"),
]
