"""Engine staff pages: permissions, start form, HTMX progress partial, publish and roll back."""

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.urls import reverse
from django.utils import translation
from django.utils.html import escape

from consensus import services
from consensus.models import EngineRun
from consensus.selectors import METRIC_LABELS, TIMING_LABELS

from ..factories import ConsultationFactory, ProposalFactory, UserFactory
from .engine_data import HASHING

pytestmark = pytest.mark.django_db

HTMX = {"HTTP_HX_REQUEST": "true"}


@pytest.fixture
def consultation():
    consultation = ConsultationFactory()
    for i in range(4):
        ProposalFactory(consultation=consultation, content=f"Il faut ouvrir les piscines l'été {i}")
    return consultation


@pytest.fixture
def staff(client):
    user = UserFactory(is_staff=True)
    client.force_login(user)
    return user


def runs_url(consultation):
    return reverse("consensus:runs", args=[consultation.slug])


def run_url(run, name="consensus:run"):
    return reverse(name, args=[run.consultation.slug, run.pk])


def make_run(consultation, status=EngineRun.Status.PENDING):
    run = services.engine_run_start(consultation=consultation, **HASHING)
    EngineRun.objects.filter(pk=run.pk).update(status=status)
    run.refresh_from_db()
    return run


def test_anonymous_visitors_are_sent_to_the_login_page(client, consultation):
    response = client.get(runs_url(consultation))
    assert response.status_code == 302 and reverse("account_login") in response["Location"]
    run = make_run(consultation)
    response = client.get(run_url(run), **HTMX)
    assert response.status_code == 200 and reverse("account_login") in response["HX-Redirect"]
    assert client.post(run_url(run, "consensus:cancel")).status_code == 302
    run.refresh_from_db()
    assert run.status == EngineRun.Status.PENDING


def test_non_staff_users_get_404_on_every_page_and_partial(client, consultation):
    client.force_login(UserFactory())
    run = make_run(consultation)
    assert client.get(runs_url(consultation)).status_code == 404
    assert client.post(runs_url(consultation), {"kind": "full"}).status_code == 404
    assert client.get(run_url(run)).status_code == 404
    assert client.get(run_url(run), **HTMX).status_code == 404
    for name in ("consensus:cancel", "consensus:resume", "consensus:make_current"):
        assert client.post(run_url(run, name)).status_code == 404
    run.refresh_from_db()
    assert run.status == EngineRun.Status.PENDING
    assert EngineRun.objects.count() == 1


def test_staff_see_the_runs_and_the_start_form(client, staff, consultation):
    run = make_run(consultation, EngineRun.Status.DONE)
    response = client.get(runs_url(consultation))
    assert response.status_code == 200
    assert reverse("consensus:run", args=[consultation.slug, run.pk]) in response.content.decode()
    assert 'name="chunk_size"' in response.content.decode()


def test_unknown_consultation_or_run_of_another_consultation_is_404(client, staff, consultation):
    assert client.get(reverse("consensus:runs", args=["nope"])).status_code == 404
    other = ConsultationFactory()
    ProposalFactory(consultation=other)
    run = make_run(other)
    assert client.get(reverse("consensus:run", args=[consultation.slug, run.pk])).status_code == 404


def test_staff_start_a_run_from_the_form(
    client, staff, consultation, django_capture_on_commit_callbacks
):
    data = {"kind": "ideas", "model_name": "hashing", "seed": "3", "chunk_size": "50"}
    with django_capture_on_commit_callbacks() as callbacks:
        response = client.post(runs_url(consultation), data)
    run = EngineRun.objects.get()
    assert response.status_code == 302 and response["Location"] == run_url(run)
    assert (run.kind, run.model_name, run.seed, run.parameters["chunk_size"]) == (
        "ideas",
        "hashing",
        3,
        50,
    )
    assert run.created_by == staff and len(callbacks) == 1


@pytest.mark.parametrize(
    "data",
    [
        {"kind": "everything", "model_name": "hashing", "seed": "0", "chunk_size": "100"},
        {"kind": "ideas", "model_name": "gpt", "seed": "0", "chunk_size": "100"},
        {"kind": "ideas", "model_name": "hashing", "seed": "-4", "chunk_size": "100"},
        {"kind": "ideas", "model_name": "hashing", "seed": "0", "chunk_size": "5"},
        {"kind": "ideas", "model_name": "hashing", "seed": "zero", "chunk_size": "100"},
        {},
    ],
)
def test_bad_form_input_shows_errors_and_starts_nothing(client, staff, consultation, data):
    response = client.post(runs_url(consultation), data)
    assert response.status_code == 400
    assert "errorlist" in response.content.decode()
    assert not EngineRun.objects.exists()


def test_starting_while_a_run_is_active_is_refused(client, staff, consultation):
    make_run(consultation, EngineRun.Status.RUNNING)
    data = {"kind": "ideas", "model_name": "hashing", "seed": "0", "chunk_size": "100"}
    response = client.post(runs_url(consultation), data)
    assert response.status_code == 409
    assert EngineRun.objects.count() == 1


def test_an_empty_consultation_shows_a_clear_error(client, staff):
    empty = ConsultationFactory()
    data = {"kind": "full", "model_name": "hashing", "seed": "0", "chunk_size": "100"}
    response = client.post(runs_url(empty), data)
    assert response.status_code == 400 and not EngineRun.objects.exists()


def test_an_active_run_polls_every_two_seconds(client, staff, consultation):
    run = make_run(consultation, EngineRun.Status.RUNNING)
    EngineRun.objects.filter(pk=run.pk).update(total_chunks=4, done_chunks=1, phase="embedding")

    page = client.get(run_url(run))
    assert page.status_code == 200 and 'hx-trigger="every 2s"' in page.content.decode()
    partial = client.get(run_url(run), **HTMX)
    body = partial.content.decode()
    assert partial.status_code == 200
    assert body.lstrip().startswith('<section id="run-body"') and "<html" not in body
    assert 'hx-trigger="every 2s"' in body and 'value="25"' in body
    assert "HX-Request" in partial["Vary"]


def test_a_finished_run_stops_the_polling_with_its_final_state(client, staff, consultation):
    run = make_run(consultation, EngineRun.Status.FAILED)
    EngineRun.objects.filter(pk=run.pk).update(error="The model crashed.")
    partial = client.get(run_url(run), **HTMX)
    body = partial.content.decode()
    assert partial.status_code == 286
    assert "hx-trigger" not in body and "The model crashed." in body
    assert run_url(run, "consensus:resume") in body


def test_a_done_run_page_shows_ideas_metrics_and_publish_button(
    client, staff, consultation, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        run = services.engine_run_start(consultation=consultation, kind="full", **HASHING)
    run.refresh_from_db()
    assert run.status == EngineRun.Status.DONE, run.error
    older = make_run(consultation, EngineRun.Status.DONE)

    body = client.get(run_url(older)).content.decode()
    assert run_url(older, "consensus:make_current") in body
    body = client.get(run_url(run)).content.decode()
    with translation.override("fr"):  # the page's language (LANGUAGE_CODE, no Accept-Language)
        labels = [str(METRIC_LABELS["n_ideas"]), str(TIMING_LABELS["chunking"])]
    assert all(escape(label) in body for label in labels)
    assert "hx-trigger" not in body


def test_publish_and_roll_back(client, staff, consultation):
    first = make_run(consultation, EngineRun.Status.DONE)
    second = make_run(consultation, EngineRun.Status.DONE)
    assert client.post(run_url(second, "consensus:make_current")).status_code == 302
    consultation.refresh_from_db()
    assert consultation.current_run_id == second.pk
    client.post(run_url(first, "consensus:make_current"))
    consultation.refresh_from_db()
    assert consultation.current_run_id == first.pk
    assert client.get(run_url(first, "consensus:make_current")).status_code == 405


def test_publishing_an_unfinished_run_is_refused(client, staff, consultation):
    run = make_run(consultation, EngineRun.Status.FAILED)
    response = client.post(run_url(run, "consensus:make_current"), follow=True)
    assert response.status_code == 200
    consultation.refresh_from_db()
    assert consultation.current_run_id is None
    assert list(response.context["messages"])[0].level_tag == "error"


def test_resume_and_cancel_buttons(client, staff, consultation, django_capture_on_commit_callbacks):
    run = make_run(consultation, EngineRun.Status.RUNNING)
    client.post(run_url(run, "consensus:cancel"))
    run.refresh_from_db()
    assert run.status == EngineRun.Status.CANCELLED
    with django_capture_on_commit_callbacks() as callbacks:
        client.post(run_url(run, "consensus:resume"))
    run.refresh_from_db()
    assert run.status == EngineRun.Status.PENDING and len(callbacks) == 1


def test_admin_actions_start_again_and_resume(
    admin_client, consultation, django_capture_on_commit_callbacks
):
    failed = make_run(consultation, EngineRun.Status.FAILED)
    url = reverse("admin:consensus_enginerun_changelist")
    with django_capture_on_commit_callbacks() as callbacks:
        admin_client.post(url, {"action": "resume", ACTION_CHECKBOX_NAME: [failed.pk]})
    failed.refresh_from_db()
    assert failed.status == EngineRun.Status.PENDING and len(callbacks) == 1

    EngineRun.objects.filter(pk=failed.pk).update(status=EngineRun.Status.DONE)
    with django_capture_on_commit_callbacks() as callbacks:
        admin_client.post(url, {"action": "start_again", ACTION_CHECKBOX_NAME: [failed.pk]})
    new = EngineRun.objects.exclude(pk=failed.pk).get()
    assert (new.kind, new.model_name, new.parameters) == (
        failed.kind,
        failed.model_name,
        failed.parameters,
    )
    assert len(callbacks) == 1
