from django.urls import path, re_path

from . import api

app_name = "api"

urlpatterns = [
    path("consultations/", api.consultation_list, name="consultations"),
    path("consultations/<slug:slug>/", api.consultation_detail, name="consultation"),
    path("consultations/<slug:slug>/ideas/", api.idea_list, name="ideas"),
    path("consultations/<slug:slug>/proposals/", api.proposal_list, name="proposals"),
    path("consultations/<slug:slug>/scores/", api.score_list, name="scores"),
    re_path(
        r"^consultations/(?P<slug>[-\w]+)/export/(?P<dataset>\w+)\.(?P<fmt>\w+)$",
        api.export,
        name="export",
    ),
    re_path(r"^(?P<path>.*)$", api.not_found),
]
