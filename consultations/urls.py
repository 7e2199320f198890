from django.urls import path

from . import views

app_name = "consultations"

urlpatterns = [
    path("<slug:slug>/", views.consultation_detail, name="detail"),
    path("<slug:slug>/p/<int:pk>/", views.proposal_detail, name="proposal"),
]
