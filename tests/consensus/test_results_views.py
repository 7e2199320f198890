"""The public results page of a consultation's current engine run."""

import csv
import io

import pytest
from django.urls import reverse
from django.utils.html import escape

from causes.models import Cause
from consensus import services
from consensus.models import EngineRun, Idea
from consultations.models import Participant

from ..factories import CauseFactory, ConsultationFactory, UserFactory
from .engine_data import HASHING, add_votes, consultation_with_themes

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("english")]


def results_url(consultation):
    return reverse("consensus:results", args=[consultation.slug])


def start(consultation, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        run = services.engine_run_start(consultation=consultation, kind="full", **HASHING)
    run.refresh_from_db()
    assert run.status == EngineRun.Status.DONE, run.error
    consultation.refresh_from_db()
    assert consultation.current_run_id == run.pk
    return run


@pytest.fixture
def published(django_capture_on_commit_callbacks):
    consultation = consultation_with_themes()
    add_votes(consultation)
    # 20 participants aged 25-34 (enough for k=10), 3 aged 65+ (too few), the rest unknown.
    voters = list(
        Participant.objects.filter(session_key__startswith=f"{consultation.slug}-voter-").order_by(
            "pk"
        )
    )
    Participant.objects.filter(pk__in=[p.pk for p in voters[:20]]).update(age_range="25-34")
    Participant.objects.filter(pk__in=[p.pk for p in voters[20:23]]).update(age_range="65+")
    run = start(consultation, django_capture_on_commit_callbacks)
    return consultation, run


def test_results_page_shows_real_ideas_groups_and_method(
    client, published, django_assert_max_num_queries
):
    consultation, run = published
    with django_assert_max_num_queries(6):
        response = client.get(results_url(consultation))
    assert response.status_code == 200
    assert "HX-Request" in response["Vary"]
    body = response.content.decode()
    labels = list(Idea.objects.filter(run=run).values_list("label", flat=True))
    assert labels
    zoned = [
        i
        for i in Idea.objects.filter(run=run)
        if (i.scores or {}).get("zone") in ("consensus", "controversy", "rejection")
    ]
    assert zoned, "the themed votes should put some ideas in a zone"
    assert any(escape(i.label) in body for i in zoned)
    assert f"#{run.pk}" in body
    assert "hashing" in body
    assert 'id="segments"' in body


def test_detail_page_links_to_results(client, published):
    consultation, _run = published
    response = client.get(consultation.get_absolute_url())
    assert results_url(consultation) in response.content.decode()


def test_private_consultation_is_404_for_outsiders(client):
    consultation = ConsultationFactory(cause=CauseFactory(kind=Cause.Kind.PRIVATE_CONSULTATION))
    assert client.get(results_url(consultation)).status_code == 404
    client.force_login(UserFactory())
    assert client.get(results_url(consultation)).status_code == 404
    assert client.get(reverse("consensus:results", args=["nope"])).status_code == 404


def test_no_run_yet_says_so(client):
    consultation = ConsultationFactory()
    response = client.get(results_url(consultation))
    assert response.status_code == 200
    assert "not available yet" in response.content.decode()
    assert "See the results" not in client.get(consultation.get_absolute_url()).content.decode()


def test_csv_has_header_and_one_row_per_idea(client, published):
    consultation, run = published
    response = client.get(results_url(consultation), {"format": "csv"})
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    assert (
        f'filename="{consultation.slug}-results-run-{run.pk}.csv"'
        in response["Content-Disposition"]
    )
    text = b"".join(response.streaming_content).decode()
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0][:3] == ["idea", "label", "zone"]
    assert len(rows) - 1 == Idea.objects.filter(run=run).count()
    assert {r[1] for r in rows[1:]} == set(
        Idea.objects.filter(run=run).values_list("label", flat=True)
    )


def test_segment_partial_by_htmx_hides_small_segments(
    client, published, settings, django_assert_max_num_queries
):
    settings.CONSENSUS_MIN_SEGMENT_SIZE = 10
    consultation, _run = published
    with django_assert_max_num_queries(5):
        response = client.get(
            results_url(consultation), {"dimension": "age_range"}, HTTP_HX_REQUEST="true"
        )
    assert response.status_code == 200
    assert "HX-Request" in response["Vary"]
    body = response.content.decode()
    assert body.lstrip().startswith('<div id="segments"')
    assert "<h1>" not in body
    assert "25–34" in body and "65" in body
    # the 65+ column (3 participants) never shows a figure, the 25-34 one (20) does
    rows = [r for r in body.split("<tr>")[2:]]
    assert rows
    for row in rows:
        first, second = row.split("<td>")[1:3]
        assert first.split("</td>")[0].strip().endswith("%")
        assert "too few participants" in second and "%" not in second


def test_segment_full_page_without_htmx(client, published):
    consultation, _run = published
    response = client.get(results_url(consultation), {"dimension": "gender"})
    assert response.status_code == 200
    assert "<h1>" in response.content.decode()


def test_bad_dimension_is_400(client, published):
    consultation, _run = published
    response = client.get(
        results_url(consultation), {"dimension": "income"}, HTTP_HX_REQUEST="true"
    )
    assert response.status_code == 400
    assert "age_range" in response.content.decode()
