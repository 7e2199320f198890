"""Import jobs: staff upload a file, a Celery task runs the streaming importer, a page shows progress.

- ``import_upload_check``: everything that can be checked before anything is stored (size, ZIP or
  CSV, UTF-8, required columns). A bad upload raises ``ImportUploadError`` with a message for
  the form: nothing is stored, no job is created.
- ``import_job_create``: stores the file through Django's storage API, creates the ``ImportJob``
  (audited) and enqueues ``consultations.tasks.import_job_run`` after commit. The same file
  (same SHA-256) cannot be queued twice at once for a consultation (a double click).
- ``import_job_run``: claims the job (pending → running, a conditional update, so a duplicated
  task does nothing), counts the rows, runs ``consultations.importers`` with a progress
  callback and records the report (counts, first skipped rows with their line numbers).
  The importers are idempotent (keyed on external ids), so re-importing a file, or retrying a
  failed job, creates nothing twice.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import logging
import shutil
import tempfile
import time
import zipfile
from contextlib import contextmanager
from pathlib import Path, PurePosixPath

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.text import slugify
from django.utils.translation import gettext as _

from accounts.audit import audit_record, model_snapshot

from . import importers
from .models import Consultation, ImportJob, Proposal

logger = logging.getLogger(__name__)

HEAD_BYTES = 64 * 1024
ERRORS_KEPT = 50
PROGRESS_EVERY_SECONDS = 0.5
POLIS_FILES = ("comments.csv", "votes.csv", "participants-votes.csv", "summary.csv")
DELIMITERS = {",": ",", ";": ";", "tab": "\t"}


class ImportUploadError(Exception):
    """The upload cannot be imported; nothing was stored. The message is safe to show."""


def import_max_bytes() -> int:
    return int(getattr(settings, "CONCORDE_IMPORT_MAX_BYTES", 200 * 1024 * 1024))


def import_max_unzipped_bytes() -> int:
    """Limit of a Polis archive's content once unpacked (a ZIP bomb is refused)."""
    return int(getattr(settings, "CONCORDE_IMPORT_MAX_UNZIPPED_BYTES", 4 * import_max_bytes()))


def _size_text(n: int) -> str:
    return f"{n / (1024 * 1024):.1f} MiB"


# --- Options ---------------------------------------------------------------------------------


def import_options_clean(kind: str, options: dict) -> dict:
    """The options the importer of ``kind`` takes, checked; unknown keys are dropped."""
    update = bool(options.get("update"))
    if kind == ImportJob.Kind.MAKEORG:
        return {"update": update}
    if kind == ImportJob.Kind.CSV:
        delimiter = options.get("delimiter") or ","
        delimiter = DELIMITERS.get(delimiter, delimiter)
        if len(delimiter) != 1:
            raise ImportUploadError(_("The delimiter must be one character."))
        status = options.get("status") or Proposal.Status.ACCEPTED
        if status not in (Proposal.Status.ACCEPTED, Proposal.Status.PENDING):
            raise ImportUploadError(_("Imported answers can only be accepted or pending."))
        id_column = (options.get("id_column") or "id").strip()
        text_column = (options.get("text_column") or "text").strip()
        if not id_column or not text_column:
            raise ImportUploadError(_("Name the id and text columns."))
        return {
            "id_column": id_column,
            "text_column": text_column,
            "delimiter": delimiter,
            "status": status,
            "update": update,
        }
    if kind == ImportJob.Kind.POLIS:
        unmoderated = options.get("unmoderated") or Proposal.Status.PENDING
        if unmoderated not in (Proposal.Status.PENDING, Proposal.Status.ACCEPTED):
            raise ImportUploadError(_("Unmoderated comments can only be pending or accepted."))
        conversation = slugify(options.get("conversation") or "")[:40]
        return {
            "unmoderated": unmoderated,
            "skip_moderated_out": bool(options.get("skip_moderated_out")),
            "update": update,
            "conversation": conversation,
        }
    raise ImportUploadError(_("Unknown format %(kind)s.") % {"kind": str(kind)[:20]})


def _required_columns(kind: str, options: dict) -> tuple[str, ...]:
    if kind == ImportJob.Kind.MAKEORG:
        return ("id", "text")
    return (options["id_column"], options["text_column"])


# --- Checking an upload ----------------------------------------------------------------------


def _check_csv_head(head: bytes, *, name: str, required=(), delimiter=",") -> list[str]:
    """The header of a CSV from its first bytes; raises ImportUploadError when it is unusable."""
    if head.startswith(b"PK\x03\x04"):
        raise ImportUploadError(
            _("%(name)s is a ZIP archive, not a CSV file: choose the Polis format for a Polis export.")
            % {"name": name}
        )
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise ImportUploadError(
            _("%(name)s is UTF-16 text: save it as “CSV UTF-8” and upload it again.")
            % {"name": name}
        )
    if b"\x00" in head:
        raise ImportUploadError(
            _("%(name)s is not a text file (it contains binary data): upload a CSV file.")
            % {"name": name}
        )
    decoder = codecs.getincrementaldecoder("utf-8")(errors="strict")
    try:
        text = decoder.decode(head, final=False)
    except UnicodeDecodeError as exc:
        raise ImportUploadError(
            _(
                "%(name)s is not UTF-8 text (byte %(position)d): save it as “CSV UTF-8” and "
                "upload it again."
            )
            % {"name": name, "position": exc.start + 1}
        ) from None
    text = text.lstrip("\ufeff")
    try:
        header = next(csv.reader(io.StringIO(text), delimiter=delimiter), None)
    except csv.Error as exc:
        raise ImportUploadError(
            _("%(name)s: unreadable header: %(error)s") % {"name": name, "error": exc}
        ) from None
    if not header or not any(h.strip() for h in header):
        raise ImportUploadError(_("%(name)s is empty.") % {"name": name})
    header = [h.strip() for h in header]
    missing = [column for column in required if column not in header]
    if missing:
        message = _("%(name)s lacks the column(s) %(missing)s; its columns are %(found)s.") % {
            "name": name,
            "missing": ", ".join(missing),
            "found": ", ".join(header)[:300],
        }
        if len(header) == 1 and delimiter != ";" and ";" in header[0]:
            message += " " + _("Its columns seem separated by semicolons: choose “;”.")
        raise ImportUploadError(message)
    return header


def _polis_members(archive: zipfile.ZipFile) -> dict[str, zipfile.ZipInfo]:
    """The Polis files of an archive by name (at any depth); raises ImportUploadError."""
    found: dict[str, zipfile.ZipInfo] = {}
    for info in archive.infolist():
        if info.is_dir():
            continue
        name = PurePosixPath(info.filename).name
        if name not in POLIS_FILES:
            continue
        if name in found:
            raise ImportUploadError(
                _("The archive holds several %(name)s: upload one Polis conversation at a time.")
                % {"name": name}
            )
        found[name] = info
    if "comments.csv" not in found:
        raise ImportUploadError(_("The archive lacks comments.csv: is it a Polis export?"))
    if "votes.csv" not in found and "participants-votes.csv" not in found:
        raise ImportUploadError(
            _("The archive lacks votes.csv (or participants-votes.csv): is it a Polis export?")
        )
    unpacked = sum(info.file_size for info in found.values())
    if unpacked > import_max_unzipped_bytes():
        raise ImportUploadError(
            _("Once unpacked the export is %(size)s, over the limit of %(limit)s.")
            % {"size": _size_text(unpacked), "limit": _size_text(import_max_unzipped_bytes())}
        )
    return found


POLIS_REQUIRED = {
    "comments.csv": ("comment-id", "moderated", "comment-body"),
    "votes.csv": ("timestamp", "comment-id", "voter-id", "vote"),
    "participants-votes.csv": ("participant",),
}


def _check_polis_archive(fileobj, name: str) -> None:
    try:
        with zipfile.ZipFile(fileobj) as archive:
            members = _polis_members(archive)
            for member, required in POLIS_REQUIRED.items():
                if member == "participants-votes.csv" and "votes.csv" in members:
                    continue
                if member in members:
                    with archive.open(members[member]) as f:
                        _check_csv_head(f.read(HEAD_BYTES), name=member, required=required)
    except zipfile.BadZipFile:
        raise ImportUploadError(
            _("%(name)s is not a valid ZIP archive: a Polis export is uploaded as a ZIP of its CSV files.")
            % {"name": name}
        ) from None
    except (zipfile.LargeZipFile, NotImplementedError, RuntimeError) as exc:
        # RuntimeError: an encrypted member; NotImplementedError: an unknown compression.
        raise ImportUploadError(
            _("%(name)s cannot be unpacked: %(error)s") % {"name": name, "error": exc}
        ) from None


def import_upload_check(*, kind: str, uploaded, options: dict) -> None:
    """Check an uploaded file (a Django ``File``) before storing it; raises ImportUploadError."""
    name = Path(uploaded.name or "upload").name
    size = uploaded.size or 0
    if size == 0:
        raise ImportUploadError(_("%(name)s is empty.") % {"name": name})
    if size > import_max_bytes():
        raise ImportUploadError(
            _("%(name)s is %(size)s, over the limit of %(limit)s.")
            % {"name": name, "size": _size_text(size), "limit": _size_text(import_max_bytes())}
        )
    uploaded.seek(0)
    try:
        if kind == ImportJob.Kind.POLIS:
            _check_polis_archive(uploaded, name)
        else:
            _check_csv_head(
                uploaded.read(HEAD_BYTES),
                name=name,
                required=_required_columns(kind, options),
                delimiter=options.get("delimiter", ","),
            )
    finally:
        uploaded.seek(0)


def _sha256(uploaded) -> str:
    digest = hashlib.sha256()
    uploaded.seek(0)
    for chunk in uploaded.chunks():
        digest.update(chunk)
    uploaded.seek(0)
    return digest.hexdigest()


# --- Creating and running jobs ---------------------------------------------------------------


def import_job_create(
    *, consultation: Consultation, kind: str, uploaded, options: dict, user
) -> ImportJob:
    """Check and store the upload, create the job (audited), run it after commit.

    Raises ImportUploadError (nothing stored) for a bad file or a file of this consultation
    already waiting or running.
    """
    options = import_options_clean(kind, options or {})
    import_upload_check(kind=kind, uploaded=uploaded, options=options)
    sha256 = _sha256(uploaded)
    busy = _("This file is already being imported into this consultation.")
    if ImportJob.objects.filter(
        consultation=consultation, sha256=sha256, status__in=ImportJob.ACTIVE_STATUSES
    ).exists():
        raise ImportUploadError(busy)
    original = Path(uploaded.name or "upload").name[:255]
    job = ImportJob(
        consultation=consultation,
        kind=kind,
        original_name=original,
        size=uploaded.size,
        sha256=sha256,
        options=options,
        created_by=user if getattr(user, "pk", None) else None,
    )
    stored_name = f"{consultation.slug[:40]}-{sha256[:12]}-{slugify(Path(original).stem)[:40]}"
    job.file.save(stored_name + Path(original).suffix.lower()[:10], uploaded, save=False)
    try:
        with transaction.atomic():
            job.save()
            audit_record(
                actor=user,
                action="import_job.create",
                target=job,
                after=model_snapshot(job),
                note=f"{kind} {original} → {consultation.slug}",
            )
            _enqueue(job)
    except IntegrityError:
        job.file.delete(save=False)
        raise ImportUploadError(busy) from None
    return job


def _enqueue(job: ImportJob) -> None:
    from .tasks import import_job_run as task

    task.delay_on_commit(job.pk)


def import_job_retry(*, job: ImportJob, user) -> bool:
    """Queue a failed job again (the importers skip what the first attempt wrote)."""
    with transaction.atomic():
        before = model_snapshot(job)
        try:
            with transaction.atomic():
                updated = ImportJob.objects.filter(
                    pk=job.pk, status=ImportJob.Status.FAILED
                ).update(status=ImportJob.Status.PENDING, error="", finished_at=None, rows_done=0)
        except IntegrityError:  # the same file was queued again meanwhile
            return False
        if not updated:
            return False
        job.refresh_from_db()
        audit_record(
            actor=user, action="import_job.retry", target=job, before=before, after=model_snapshot(job)
        )
        _enqueue(job)
    return True


def _count_rows(path: Path) -> int:
    """Data rows of a CSV (quoted line breaks included), read as a stream."""
    with path.open(encoding="utf-8-sig", errors="replace", newline="") as f:
        reader = csv.reader(f)
        try:
            return max(0, sum(1 for fields in reader if fields) - 1)
        except csv.Error:
            return 0


@contextmanager
def _job_source(job: ImportJob):
    """A local path to import: the stored file, or the unpacked folder of a Polis archive."""
    with tempfile.TemporaryDirectory(prefix="concorde-import-") as tmp:
        try:
            local = Path(job.file.path)
        except NotImplementedError:  # a remote storage: copy the file here, by chunks
            local = Path(tmp) / "upload"
            with job.file.open("rb") as src, local.open("wb") as dst:
                shutil.copyfileobj(src, dst, 1024 * 1024)
        if not local.is_file():
            raise ImportUploadError(_("The uploaded file is no longer in the storage."))
        if job.kind != ImportJob.Kind.POLIS:
            yield local
            return
        folder_name = job.options.get("conversation") or slugify(Path(job.original_name).stem)
        folder = Path(tmp) / (folder_name[:40] or "polis")
        folder.mkdir()
        try:
            with zipfile.ZipFile(local) as archive:
                for name, info in _polis_members(archive).items():
                    with archive.open(info) as src, (folder / name).open("wb") as dst:
                        shutil.copyfileobj(src, dst, 1024 * 1024)
        except zipfile.BadZipFile:
            raise ImportUploadError(_("The stored file is not a valid ZIP archive.")) from None
        yield folder


def _total_rows(kind: str, source: Path) -> int:
    if kind != ImportJob.Kind.POLIS:
        return _count_rows(source)
    votes = source / "votes.csv"
    if not votes.is_file():
        votes = source / "participants-votes.csv"
    return _count_rows(source / "comments.csv") + _count_rows(votes)


def _run_importer(job: ImportJob, source: Path, progress) -> importers.ImportReport:
    options = dict(job.options)
    consultation = job.consultation
    if job.kind == ImportJob.Kind.MAKEORG:
        return importers.import_makeorg(
            consultation=consultation, path=source, update=options["update"], progress=progress
        )
    if job.kind == ImportJob.Kind.CSV:
        return importers.import_csv(
            consultation=consultation,
            path=source,
            id_column=options["id_column"],
            text_column=options["text_column"],
            delimiter=options["delimiter"],
            status=options["status"],
            update=options["update"],
            progress=progress,
        )
    return importers.import_polis(
        consultation=consultation,
        path=source,
        unmoderated=options["unmoderated"],
        skip_moderated_out=options["skip_moderated_out"],
        update=options["update"],
        conversation=options.get("conversation") or None,
        progress=progress,
    )


def import_job_run(*, job_id: int) -> ImportJob | None:
    """Run a pending job; returns it finished (done or failed), or None if it was not pending."""
    claimed = ImportJob.objects.filter(pk=job_id, status=ImportJob.Status.PENDING).update(
        status=ImportJob.Status.RUNNING, started_at=timezone.now(), rows_done=0, error=""
    )
    if not claimed:
        return None
    job = ImportJob.objects.select_related("consultation__cause").get(pk=job_id)
    running = ImportJob.objects.filter(pk=job_id, status=ImportJob.Status.RUNNING)
    last = [0.0]

    def progress(rows: int) -> None:
        now = time.monotonic()
        if now - last[0] >= PROGRESS_EVERY_SECONDS:
            last[0] = now
            running.update(rows_done=rows)

    try:
        with _job_source(job) as source:
            total = _total_rows(job.kind, source)
            running.update(rows_total=total)
            report = _run_importer(job, source, progress)
    except (ImportUploadError, importers.ImportFormatError) as exc:
        return _finish(job_id, status=ImportJob.Status.FAILED, error=str(exc))
    except Exception as exc:  # noqa: BLE001 - recorded on the job, which staff can retry
        logger.exception("import job %s failed", job_id)
        return _finish(
            job_id,
            status=ImportJob.Status.FAILED,
            error=_("Unexpected error: %(error)s") % {"error": f"{type(exc).__name__}: {exc}"[:500]},
        )
    return _finish(job_id, status=ImportJob.Status.DONE, report=report, total=total)


def _finish(job_id, *, status, error="", report=None, total=0) -> ImportJob:
    values = {"status": status, "error": error, "finished_at": timezone.now()}
    if report is not None:
        values.update(
            rows_total=max(total, report.rows),
            rows_done=report.rows,
            rows_skipped=report.bad_count,
            created_count=report.created,
            existing_count=report.existing,
            updated_count=report.updated,
            details=report.details,
            errors=[
                {"row": bad.row, "line": bad.line, "reason": bad.reason}
                for bad in report.bad_rows[:ERRORS_KEPT]
            ],
        )
    with transaction.atomic():
        ImportJob.objects.filter(pk=job_id, status=ImportJob.Status.RUNNING).update(**values)
        job = ImportJob.objects.select_related("consultation").get(pk=job_id)
        audit_record(
            actor=None,
            action="import_job.finish" if status == ImportJob.Status.DONE else "import_job.fail",
            target=job,
            after=model_snapshot(
                job,
                fields=[
                    "status",
                    "rows_total",
                    "rows_done",
                    "rows_skipped",
                    "created_count",
                    "existing_count",
                    "updated_count",
                    "error",
                ],
            ),
            note=error,
        )
    return job


def import_job_list(*, limit: int = 50):
    return ImportJob.objects.select_related("consultation", "created_by").order_by("-created_at")[
        :limit
    ]
