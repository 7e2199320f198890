"""A cause's page: its consultations, each with its counters and what came out of it so far."""

import html
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from consensus import selectors
from consensus.models import Idea
from consultations.selectors import consultation_stats

from ..consensus.engine_data import consultation_with_themes
from ..consensus.test_results_views import published, start  # noqa: F401 - published: fixture
from ..consensus.test_source_votes import imported  # noqa: F401 - the fixture
from ..factories import ConsultationFactory

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("english")]


def cause_page(client, consultation):
    page = client.get(reverse("causes:detail", args=[consultation.cause.slug]))
    assert page.status_code == 200
    return html.unescape(" ".join(page.content.decode().split()))


def idea_links(page, consultation, ideas):
    return [
        f'<a href="{reverse("consensus:results_idea", args=[consultation.slug, i.number])}">'
        f"{i.label}</a>"
        for i in ideas
    ]


def test_a_cause_shows_each_consultations_key_ideas_and_counters(client, published):  # noqa: F811
    consultation, run = published
    key = selectors.key_ideas(run=run)["consensual"]
    assert key

    page = cause_page(client, consultation)

    assert "Key ideas so far:" in page
    for link in idea_links(page, consultation, key[:3]):
        assert link in page
    for link in idea_links(page, consultation, key[3:]):
        assert link not in page
    stats = consultation_stats(consultation=consultation)
    assert f"<dd>{stats['proposals']}</dd>" in page and f"<dd>{stats['votes']:,}</dd>" in page
    assert reverse("consensus:results", args=[consultation.slug]) in page
    assert reverse("consultations:sequence", args=[consultation.slug]) in page


def test_without_key_ideas_the_ideas_most_supported_at_the_source_show(client, imported):  # noqa: F811
    consultation, run, _file_stats = imported
    assert not selectors.key_ideas(run=run)["consensual"]
    most = selectors.ideas_by_support_at_source(run=run, min_votes=10, limit=3)["most"]
    assert most

    page = cause_page(client, consultation)

    assert "Ideas most supported at the source:" in page
    for link in idea_links(page, consultation, most):
        assert link in page
    assert "votes at the source" in page


def test_without_votes_the_largest_ideas_show_and_before_a_run_none(
    client, django_capture_on_commit_callbacks
):
    consultation = consultation_with_themes()
    assert "so far:" not in cause_page(client, consultation)

    run = start(consultation, django_capture_on_commit_callbacks)

    page = cause_page(client, consultation)
    largest = list(Idea.objects.filter(run=run, size__gt=0).order_by("-size", "number")[:3])
    assert "Its largest ideas so far:" in page
    for link in idea_links(page, consultation, largest):
        assert link in page


def test_a_closed_consultation_offers_its_results_but_no_vote(client):
    consultation = ConsultationFactory(
        starts_at=timezone.now() - timedelta(days=10), ends_at=timezone.now() - timedelta(days=1)
    )
    page = cause_page(client, consultation)
    assert "Finished" in page
    assert reverse("consultations:sequence", args=[consultation.slug]) not in page
