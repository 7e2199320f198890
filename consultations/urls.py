from django.urls import path

from . import alert_views, moderation_views, views

app_name = "consultations"

urlpatterns = [
    path(
        "results-alert/stop/<str:token>/",
        alert_views.results_alert_stop,
        name="results_alert_stop",
    ),
    path("<slug:slug>/", views.consultation_detail, name="detail"),
    path("<slug:slug>/results-alert/", alert_views.results_alert, name="results_alert"),
    path("<slug:slug>/propose/", views.proposal_create, name="propose"),
    path("<slug:slug>/similar/", views.proposal_similar_list, name="similar"),
    path("<slug:slug>/vote/", views.sequence, name="sequence"),
    path("<slug:slug>/vote/next/", views.sequence_next, name="sequence_next"),
    path("<slug:slug>/vote/about-you/", views.sequence_demographics, name="sequence_demographics"),
    path("<slug:slug>/p/<int:pk>/", views.proposal_detail, name="proposal"),
    path("<slug:slug>/p/<int:pk>/vote/", views.proposal_vote, name="vote"),
    path("<slug:slug>/p/<int:pk>/qualify/", views.proposal_qualify, name="qualify"),
    path(
        "<slug:slug>/moderation/", moderation_views.moderation_stats, name="moderation_stats"
    ),  # public moderation statistics
]
