from django.urls import path

from . import results_views, views

app_name = "consensus"

urlpatterns = [
    path("<slug:slug>/", views.run_list, name="runs"),
    path("<slug:slug>/runs/<int:pk>/", views.run_detail, name="run"),
    path("<slug:slug>/runs/<int:pk>/current/", views.run_make_current, name="make_current"),
    path(
        "<slug:slug>/runs/<int:pk>/ideas/<int:number>/label/",
        views.idea_label,
        name="idea_label",
    ),
    path(
        "<slug:slug>/runs/<int:pk>/themes/<int:number>/label/",
        views.theme_label,
        name="theme_label",
    ),
    path("<slug:slug>/runs/<int:pk>/ideas/<int:number>/", views.run_idea, name="run_idea"),
    path("<slug:slug>/runs/<int:pk>/ideas/none/", views.run_idea, name="run_unassigned"),
    path("<slug:slug>/runs/<int:pk>/place/", views.proposals_place, name="place"),
    path(
        "<slug:slug>/runs/<int:pk>/ideas/<int:number>/merge/",
        views.idea_merge,
        name="merge_idea",
    ),
    path("<slug:slug>/runs/<int:pk>/resume/", views.run_resume, name="resume"),
    path("<slug:slug>/results/", results_views.results, name="results"),
    path("<slug:slug>/results/ideas/", results_views.results_ideas, name="results_ideas"),
    path(
        "<slug:slug>/results/ideas/<int:number>/",
        results_views.results_idea,
        name="results_idea",
    ),
    path("<slug:slug>/runs/<int:pk>/cancel/", views.run_cancel, name="cancel"),
    path("<slug:slug>/rollback/", views.run_rollback, name="rollback"),
    path("<slug:slug>/compare/", views.run_compare, name="compare"),
]
