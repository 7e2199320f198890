"""Import jobs: staff upload, Celery task with progress, bad uploads, idempotence, admin, audit."""

import io
import zipfile

import pytest
from django.contrib.auth.models import Permission
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from accounts.models import AuditEntry
from consultations import imports
from consultations.models import ImportJob, Proposal, Vote
from tests.factories import ConsultationFactory, UserFactory

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("english")]

MAKEORG = (
    "id,text,votes,adhesion,author_age\n"
    "a1,Il faut ouvrir les musées le soir,10,0.5,30\n"
    "a2,Il faut des bibliothèques ouvertes le dimanche,4,0.2,\n"
    ",Il faut une ligne sans id,1,0.1,\n"
    "a3,\"Il faut un texte\nsur deux lignes\",2,0.3,\n"
    "a4,Il faut un âge faux,2,0.3,500\n"
).encode()


@pytest.fixture(autouse=True)
def media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.STORAGES = {**settings.STORAGES, "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"}}
    return settings.MEDIA_ROOT


@pytest.fixture
def consultation():
    return ConsultationFactory(slug="museums")


@pytest.fixture
def staff(client):
    user = UserFactory(is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="add_importjob"))
    client.force_login(user)
    return user


def upload(client, consultation, content, *, name="proposals.csv", kind="makeorg", capture=None, **extra):
    data = {
        "consultation": consultation.slug,
        "kind": kind,
        "file": SimpleUploadedFile(name, content),
        "delimiter": ",",
        "status": "accepted",
        "unmoderated": "pending",
        **extra,
    }
    if capture is None:
        return client.post(reverse("imports:list"), data)
    with capture(execute=True):
        return client.post(reverse("imports:list"), data)


def stored_files(media):
    return [p for p in media.rglob("*") if p.is_file()] if media.exists() else []


def test_staff_upload_runs_the_import_with_progress_and_audit(
    client, staff, consultation, django_capture_on_commit_callbacks, media
):
    response = upload(client, consultation, MAKEORG, capture=django_capture_on_commit_callbacks)
    job = ImportJob.objects.get()
    assert response.status_code == 302 and response["Location"] == reverse("imports:detail", args=[job.pk])
    assert job.status == ImportJob.Status.DONE, job.error
    assert (job.rows_total, job.rows_done, job.created_count, job.rows_skipped) == (5, 5, 3, 2)
    assert job.progress_percent == 100
    # The first skipped rows, with their row and line numbers (row 4 spans lines 5-6).
    assert [(e["row"], e["line"]) for e in job.errors] == [(3, 4), (5, 7)]
    assert "empty id" in job.errors[0]["reason"] and "age" in job.errors[1]["reason"]
    assert Proposal.objects.filter(consultation=consultation).count() == 3
    assert job.created_by == staff and job.original_name == "proposals.csv"
    assert len(stored_files(media)) == 1  # kept through the storage API
    actions = list(AuditEntry.objects.order_by("pk").values_list("action", flat=True))
    assert actions == ["import_job.create", "import_job.finish"]
    page = client.get(reverse("imports:detail", args=[job.pk]))
    assert page.status_code == 200
    assert b"empty id" in page.content and b'value="100"' in page.content


def test_reimporting_the_same_file_creates_nothing_twice(
    client, staff, consultation, django_capture_on_commit_callbacks
):
    upload(client, consultation, MAKEORG, capture=django_capture_on_commit_callbacks)
    upload(client, consultation, MAKEORG, capture=django_capture_on_commit_callbacks)
    first, second = ImportJob.objects.order_by("pk")
    assert second.status == ImportJob.Status.DONE
    assert (second.created_count, second.existing_count) == (0, first.created_count)
    assert Proposal.objects.filter(consultation=consultation).count() == first.created_count


def test_the_same_file_cannot_be_queued_twice_at_once(client, staff, consultation):
    assert upload(client, consultation, MAKEORG).status_code == 302  # queued, not run yet
    response = upload(client, consultation, MAKEORG)
    assert response.status_code == 400
    assert "already being imported" in response.content.decode()
    assert ImportJob.objects.count() == 1


@pytest.mark.parametrize(
    ("content", "name", "kind", "message"),
    [
        ("id,text\n1,Il faut café\n".encode("utf-16"), "utf16.csv", "makeorg", "is UTF-16"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "photo.csv", "makeorg", "not a text file"),
        ("id,text\n1,Il faut un café crème\n".encode("latin-1"), "latin.csv", "makeorg", "not UTF-8"),
        (b"identifier,body\n1,Il faut\n", "cols.csv", "makeorg", "lacks the column(s) id, text"),
        (b"id;text\n1;Il faut\n", "semi.csv", "makeorg", "separated by semicolons"),
        (b"", "empty.csv", "makeorg", "empty"),
        (b"PK\x03\x04garbage", "export.zip", "makeorg", "ZIP archive, not a CSV"),
        (b"id,text\n1,Il faut\n", "export.csv", "polis", "not a valid ZIP"),
        (b"question,answer\n1,x\n", "answers.csv", "csv", "lacks the column(s) id, text"),
    ],
)
def test_bad_uploads_give_a_clear_error_and_store_nothing(
    client, staff, consultation, media, content, name, kind, message
):
    response = upload(client, consultation, content, name=name, kind=kind)
    assert response.status_code == 400
    assert message in response.content.decode()
    assert not ImportJob.objects.exists() and not stored_files(media)
    assert not Proposal.objects.exists() and not AuditEntry.objects.exists()


def test_a_file_over_the_limit_is_refused(client, staff, consultation, settings, media):
    settings.CONCORDE_IMPORT_MAX_BYTES = 100
    response = upload(client, consultation, MAKEORG + b"x" * 200)
    assert response.status_code == 400
    assert "over the limit" in response.content.decode()
    assert not ImportJob.objects.exists() and not stored_files(media)


def test_a_body_over_the_limit_is_refused_before_it_is_read(client, staff, consultation, settings):
    settings.CONCORDE_IMPORT_MAX_BYTES = 10
    response = client.post(
        reverse("imports:list"), data=b"x" * (2 * 1024 * 1024), content_type="application/octet-stream"
    )
    assert response.status_code == 413
    assert "over the limit" in response.content.decode()


def test_generic_csv_with_semicolons_and_custom_columns(
    client, staff, consultation, django_capture_on_commit_callbacks
):
    content = "ref;réponse;région\nr1;Il faut plus de trains;Bretagne\nr2;Il faut des vélos;Alsace\n"
    response = upload(
        client, consultation, content.encode(), name="answers.csv", kind="csv",
        capture=django_capture_on_commit_callbacks,
        id_column="ref", text_column="réponse", delimiter=";", status="pending",
    )
    assert response.status_code == 302
    job = ImportJob.objects.get()
    assert job.status == ImportJob.Status.DONE and job.created_count == 2
    proposal = Proposal.objects.get(external_id="r1")
    assert proposal.status == Proposal.Status.PENDING and proposal.source_stats == {"région": "Bretagne"}


def polis_zip(*, votes=True, extra_folder="conv/") -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(
            f"{extra_folder}comments.csv",
            "timestamp,datetime,comment-id,author-id,agrees,disagrees,moderated,comment-body\n"
            "1600000000000,x,0,1,1,0,1,Il faut planter des arbres\n"
            "1600000001000,x,1,2,0,1,1,Il faut des pistes cyclables\n",
        )
        if votes:
            archive.writestr(
                f"{extra_folder}votes.csv",
                "timestamp,datetime,comment-id,voter-id,vote\n"
                "1600000002000,x,0,7,1\n1600000003000,x,1,7,-1\n1600000004000,x,0,8,0\n"
                "1600000005000,x,9,8,1\n",
            )
    return buffer.getvalue()


def test_polis_zip_imports_comments_and_votes(
    client, staff, consultation, django_capture_on_commit_callbacks
):
    response = upload(
        client, consultation, polis_zip(), name="My Conversation.zip", kind="polis",
        capture=django_capture_on_commit_callbacks,
    )
    assert response.status_code == 302
    job = ImportJob.objects.get()
    assert job.status == ImportJob.Status.DONE, job.error
    assert job.created_count == 2 and job.rows_total == 6 and job.rows_skipped == 1
    assert "unknown comment id 9" in job.errors[0]["reason"]
    assert Vote.objects.filter(proposal__consultation=consultation).count() == 3
    assert Proposal.objects.filter(external_id__startswith="polis:my-conversation:").count() == 2
    # The same archive again: idempotent.
    upload(client, consultation, polis_zip(), name="My Conversation.zip", kind="polis",
           capture=django_capture_on_commit_callbacks)
    assert Vote.objects.filter(proposal__consultation=consultation).count() == 3
    assert ImportJob.objects.order_by("-pk").first().created_count == 0


def test_polis_zip_without_votes_is_refused(client, staff, consultation):
    response = upload(client, consultation, polis_zip(votes=False), name="c.zip", kind="polis")
    assert response.status_code == 400
    assert "lacks votes.csv" in response.content.decode()


def test_progress_is_recorded_while_the_import_runs(consultation, staff, monkeypatch):
    job = imports.import_job_create(
        consultation=consultation, kind="makeorg",
        uploaded=SimpleUploadedFile("p.csv", MAKEORG), options={}, user=staff,
    )
    seen = []
    real = imports._run_importer

    def spy(job_, source, progress):
        monkeypatch.setattr(imports, "PROGRESS_EVERY_SECONDS", 0)
        progress(2)
        seen.append(ImportJob.objects.values_list("status", "rows_done", "rows_total").get(pk=job_.pk))
        return real(job_, source, progress)

    monkeypatch.setattr(imports, "_run_importer", spy)
    finished = imports.import_job_run(job_id=job.pk)
    assert seen == [(ImportJob.Status.RUNNING, 2, 5)]
    assert finished.status == ImportJob.Status.DONE
    # A duplicated task finds the job no longer pending and does nothing.
    assert imports.import_job_run(job_id=job.pk) is None


def test_htmx_poll_continues_while_running_and_stops_when_done(client, staff, consultation):
    job = imports.import_job_create(
        consultation=consultation, kind="makeorg",
        uploaded=SimpleUploadedFile("p.csv", MAKEORG), options={}, user=staff,
    )
    url = reverse("imports:detail", args=[job.pk])
    response = client.get(url, headers={"HX-Request": "true"})
    assert response.status_code == 200 and b'hx-trigger="every 2s"' in response.content
    assert b"<html" not in response.content  # the partial only
    imports.import_job_run(job_id=job.pk)
    response = client.get(url, headers={"HX-Request": "true"})
    assert response.status_code == 286  # htmx: stop polling
    assert b"hx-trigger" not in response.content


def test_a_failed_job_records_its_error_and_can_be_retried(
    client, staff, consultation, monkeypatch, django_capture_on_commit_callbacks
):
    def boom(**kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(imports.importers, "import_makeorg", boom)
    upload(client, consultation, MAKEORG, capture=django_capture_on_commit_callbacks)
    job = ImportJob.objects.get()
    assert job.status == ImportJob.Status.FAILED and "disk on fire" in job.error
    assert AuditEntry.objects.filter(action="import_job.fail").exists()
    monkeypatch.undo()
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(reverse("imports:retry", args=[job.pk]))
    assert response.status_code == 302
    job.refresh_from_db()
    assert job.status == ImportJob.Status.DONE and job.created_count == 3
    assert AuditEntry.objects.filter(action="import_job.retry", actor=staff).exists()
    # A done job cannot be retried.
    client.post(reverse("imports:retry", args=[job.pk]))
    assert ImportJob.objects.get().status == ImportJob.Status.DONE


def test_anonymous_is_sent_to_login_and_citizens_get_404(client, consultation):
    url = reverse("imports:list")
    response = client.post(url, {"consultation": consultation.slug, "kind": "makeorg"})
    assert response.status_code == 302 and "login" in response["Location"]
    response = client.get(url, headers={"HX-Request": "true"})
    assert "login" in response["HX-Redirect"]
    client.force_login(UserFactory())
    assert client.get(url).status_code == 404
    assert upload(client, consultation, MAKEORG).status_code == 404
    client.force_login(UserFactory(is_staff=True))  # staff without the permission
    assert upload(client, consultation, MAKEORG).status_code == 404
    assert not ImportJob.objects.exists()


def test_citizen_cannot_see_or_retry_a_job(client, staff, consultation):
    job = imports.import_job_create(
        consultation=consultation, kind="makeorg",
        uploaded=SimpleUploadedFile("p.csv", MAKEORG), options={}, user=staff,
    )
    client.force_login(UserFactory())
    assert client.get(reverse("imports:detail", args=[job.pk])).status_code == 404
    assert client.post(reverse("imports:retry", args=[job.pk])).status_code == 404


def test_admin_lists_jobs_and_sends_uploads_to_the_staff_page(admin_client, staff, consultation):
    job = imports.import_job_create(
        consultation=consultation, kind="makeorg",
        uploaded=SimpleUploadedFile("p.csv", MAKEORG), options={}, user=staff,
    )
    changelist = admin_client.get(reverse("admin:consultations_importjob_changelist"))
    assert changelist.status_code == 200 and b"p.csv" in changelist.content
    detail = admin_client.get(reverse("admin:consultations_importjob_change", args=[job.pk]))
    assert detail.status_code == 200 and reverse("imports:detail", args=[job.pk]).encode() in detail.content
    add = admin_client.get(reverse("admin:consultations_importjob_add"))
    assert add.status_code == 302 and add["Location"] == reverse("imports:list")


def test_admin_retry_action_requeues_failed_jobs(admin_client, staff, consultation, django_capture_on_commit_callbacks):
    job = imports.import_job_create(
        consultation=consultation, kind="makeorg",
        uploaded=SimpleUploadedFile("p.csv", MAKEORG), options={}, user=staff,
    )
    ImportJob.objects.filter(pk=job.pk).update(status=ImportJob.Status.FAILED, error="x")
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(
            reverse("admin:consultations_importjob_changelist"),
            {"action": "retry_jobs", "_selected_action": [job.pk]},
        )
    assert response.status_code == 302
    job.refresh_from_db()
    assert job.status == ImportJob.Status.DONE and job.created_count == 3


def test_real_makeorg_file_through_a_job(data_dir, consultation, staff, django_capture_on_commit_callbacks):
    path = data_dir / "opentext" / "makeorg_monde_dapres_2020" / "proposals.csv"
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    with path.open("rb") as f, django_capture_on_commit_callbacks(execute=True):
        job = imports.import_job_create(
            consultation=consultation, kind="makeorg",
            uploaded=SimpleUploadedFile(path.name, f.read()), options={}, user=staff,
        )
    job.refresh_from_db()
    assert job.status == ImportJob.Status.DONE, job.error
    assert job.rows_done == job.rows_total > 10_000
    assert job.created_count + job.rows_skipped == job.rows_total
    assert Proposal.objects.filter(consultation=consultation).count() == job.created_count
