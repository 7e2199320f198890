"""Streaming, idempotent importers of public consultation data.

Three sources, one pattern: read the file with the ``csv`` module one batch at a time (never the
whole file), check every row, write each batch with a few bulk statements, and return an
``ImportReport``. A row that cannot be imported is reported (row number, line, reason) and the
import goes on. Re-running an import creates nothing new: proposals are keyed on
``Proposal.external_id`` within the consultation, participants on ``Participant.external_id``
(``polis:<conversation>:<voter-id>``) and votes on (participant, proposal).

- ``import_makeorg``: the Make.org open-data CSV (``id,text,votes,adhesion,engagement,score,author_age``).
- ``import_polis``: a Polis export folder (``comments.csv`` and ``votes.csv``, or the
  ``participants-votes.csv`` matrix when ``votes.csv`` is absent).
- ``import_csv``: any CSV of open answers, with configurable id and text columns.

``ImportFormatError`` means the file cannot be imported at all (missing, empty, wrong columns):
it is raised before anything is written.
"""

import csv
import json
import math
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from django.db import DatabaseError, connection, models, transaction
from django.utils import timezone
from django.utils.text import slugify
from django.utils.translation import gettext as _

from causes.models import Cause

from .models import (
    SOURCE_COLUMNS,
    Consultation,
    Participant,
    Proposal,
    Trust,
    Vote,
    VoteKey,
    source_columns,
)
from .services import counters_rebuild, popular_rank_refresh

DEFAULT_BATCH_SIZE = 2000
# A file full of bad rows must not fill the memory: the first ones are kept, the rest counted.
MAX_BAD_ROWS_KEPT = 1000
# Sized for SQLite's default limit on query parameters (Django assumes 999).
_IN_CHUNK = 900
# A real tag or comment: "<b>", "</p>", "<br/>", '<a href="x">', "<!--". A lone "<" is text:
# "(<75%)" or "<reunions départementales" (no closing ">") stay importable.
HTML_TAG = re.compile(r"</?[A-Za-z][A-Za-z0-9-]*(?:\s[^<>]*)?/?>|<!--")
EXTERNAL_ID_MAX = Proposal._meta.get_field("external_id").max_length
CONTENT_MAX = Proposal._meta.get_field("content").max_length
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class ImportFormatError(Exception):
    """The source cannot be imported at all; nothing was written. The message is safe to show."""


class _BadValue(ValueError):
    """One row's problem; the message becomes the bad row's reason."""


@dataclass(frozen=True)
class BadRow:
    row: int  # 1-based number of the data row (the header is not counted)
    line: int  # line of the file where the row starts (the header is line 1)
    reason: str

    def __str__(self):
        return _("row %(row)d (line %(line)d): %(reason)s") % {
            "row": self.row,
            "line": self.line,
            "reason": self.reason,
        }


@dataclass
class ImportReport:
    """What an import did. ``created``/``existing``/``updated`` count proposals; ``details``
    holds the other counts (participants, votes, rows filtered out...)."""

    source: str
    rows: int = 0
    created: int = 0
    existing: int = 0
    updated: int = 0
    bad_count: int = 0
    bad_rows: list[BadRow] = field(default_factory=list)
    elapsed: float = 0.0
    details: dict[str, int] = field(default_factory=dict)

    def add_bad(self, row: int, line: int, reason: str) -> None:
        self.bad_count += 1
        if len(self.bad_rows) < MAX_BAD_ROWS_KEPT:
            self.bad_rows.append(BadRow(row=row, line=line, reason=reason))

    def count(self, key: str, n: int = 1) -> None:
        self.details[key] = self.details.get(key, 0) + n

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.elapsed if self.elapsed > 0 else 0.0


# --- Reading ---------------------------------------------------------------------------------


class _CsvRows:
    """A CSV file read one row at a time, header checked, malformed rows reported.

    Iterating yields ``(row, line, fields)`` for rows that have as many fields as the header;
    the others (wrong column count, invalid UTF-8, NUL bytes, unparsable quoting) go to the
    report as bad rows. Stops after ``limit`` data rows.
    """

    def __init__(self, path, *, report, required=(), delimiter=",", limit=None):
        self.path = Path(path)
        if not self.path.is_file():
            raise ImportFormatError(_("File not found: %(path)s") % {"path": self.path})
        if len(delimiter) != 1:
            raise ImportFormatError(_("The delimiter must be one character."))
        self.report = report
        self.limit = limit
        # errors="replace" lets the import go on past a badly encoded row; it is then reported.
        self._file = self.path.open(encoding="utf-8-sig", errors="replace", newline="")
        self._reader = csv.reader(self._file, delimiter=delimiter)
        try:
            header = next(self._reader, None)
        except csv.Error as exc:
            self.close()
            raise ImportFormatError(
                _("%(path)s: unreadable header: %(error)s") % {"path": self.path, "error": exc}
            ) from exc
        if not header:
            self.close()
            raise ImportFormatError(_("%(path)s is empty.") % {"path": self.path})
        self.header = [name.strip() for name in header]
        missing = [name for name in required if name not in self.header]
        if missing:
            self.close()
            raise ImportFormatError(
                _("%(path)s lacks the column(s) %(missing)s; its columns are %(found)s.")
                % {
                    "path": self.path,
                    "missing": ", ".join(missing),
                    "found": ", ".join(self.header),
                }
            )
        self.index = {}
        for i, name in enumerate(self.header):
            self.index.setdefault(name, i)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        self._file.close()

    def __iter__(self) -> Iterator[tuple[int, int, list[str]]]:
        width = len(self.header)
        row = 0
        last_line = self._reader.line_num
        while self.limit is None or row < self.limit:
            try:
                fields = next(self._reader)
            except StopIteration:
                return
            except csv.Error as exc:
                row += 1
                self.report.rows += 1
                self.report.add_bad(
                    row, last_line + 1, _("unreadable CSV: %(error)s") % {"error": exc}
                )
                last_line = self._reader.line_num
                continue
            line, last_line = last_line + 1, self._reader.line_num
            if not fields:  # a blank line
                continue
            row += 1
            self.report.rows += 1
            if len(fields) != width:
                self.report.add_bad(
                    row,
                    line,
                    _("expected %(expected)d columns, found %(found)d")
                    % {"expected": width, "found": len(fields)},
                )
            elif any("\ufffd" in value for value in fields):
                self.report.add_bad(row, line, _("invalid UTF-8"))
            elif any("\x00" in value for value in fields):
                self.report.add_bad(row, line, _("NUL character"))
            else:
                yield row, line, fields


def _batches(iterable, size):
    batch = []
    for item in iterable:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def _chunks(values, size=None):
    """Slices of ``values`` small enough for an ``IN (...)`` on this database."""
    if size is None:
        size = _IN_CHUNK if connection.features.max_query_params else 10 * _IN_CHUNK
    values = list(values)
    for start in range(0, len(values), size):
        yield values[start : start + size]


# --- Checking values -------------------------------------------------------------------------


def _external_id(value: str) -> str:
    value = value.strip()
    if not value:
        raise _BadValue(_("empty id"))
    if len(value) > EXTERNAL_ID_MAX:
        raise _BadValue(_("id longer than %(max)d characters") % {"max": EXTERNAL_ID_MAX})
    return value


def _content(value: str) -> str:
    """The text exactly as in the source (even beyond the consultation's length rules)."""
    if not value.strip():
        raise _BadValue(_("empty text"))
    if len(value) > CONTENT_MAX:
        raise _BadValue(_("text longer than %(max)d characters") % {"max": CONTENT_MAX})
    if HTML_TAG.search(value):
        raise _BadValue(_("text contains HTML tags"))
    return value


def _number(value: str, column: str, *, integer=False):
    """A finite number, or None for an empty cell."""
    value = value.strip()
    if not value:
        return None
    try:
        number = int(value) if integer else float(value)
    except ValueError:
        raise _BadValue(
            _("“%(column)s” is not a number: %(value)s") % {"column": column, "value": value[:40]}
        ) from None
    if not math.isfinite(number):
        raise _BadValue(_("“%(column)s” is not a finite number") % {"column": column})
    return number


def _age(value: str):
    age = _number(value, "author_age", integer=True)
    if age is not None and not 1 <= age <= 120:
        raise _BadValue(_("author age out of range: %(age)d") % {"age": age})
    return age


# --- Writing proposals -----------------------------------------------------------------------


@dataclass
class _Item:
    """A checked row: ``values`` are Proposal field values by attname."""

    row: int
    line: int
    values: dict

    @property
    def external_id(self) -> str:
        return self.values["external_id"]


def _unique_items(items, report, *, shown=lambda eid: eid) -> list[_Item]:
    """``items`` without repeated external ids; each repeat is reported as a bad row."""
    first_row: dict[str, int] = {}
    unique = []
    for item in items:
        eid = item.external_id
        if eid in first_row:
            report.add_bad(
                item.row,
                item.line,
                _("duplicate id %(id)s (first at row %(first)d)")
                % {"id": shown(eid), "first": first_row[eid]},
            )
            continue
        first_row[eid] = item.row
        unique.append(item)
    return unique


def _analyze(model) -> None:
    """Refresh PostgreSQL's statistics of ``model``'s table.

    A table that grew by thousands of rows since its last ANALYZE (autovacuum lags behind a
    bulk load, or is off) looks tiny to the planner, which then scans every proposal of the
    consultation for each batch instead of probing the unique index: quadratic time.
    """
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(f"ANALYZE {connection.ops.quote_name(model._meta.db_table)}")


def _existing_proposals(consultation, external_ids) -> dict[str, tuple[int, datetime]]:
    found = {}
    for chunk in _chunks(external_ids):
        # exclude(""): the unique index's own condition, so that PostgreSQL can use it.
        rows = (
            Proposal.objects.filter(consultation=consultation, external_id__in=chunk)
            .exclude(external_id="")
            .order_by()
            .values_list("external_id", "pk", "created_at")
        )
        found.update({eid: (pk, created_at) for eid, pk, created_at in rows})
    return found


def _pg_copy(table: str, columns: list[str], rows) -> None:
    """PostgreSQL's COPY of ``rows`` into ``table``, in the current transaction.

    Much faster than a multi-row INSERT, whose thousands of bound literals cost more to
    build and to parse than the rows cost to write.
    """
    qn = connection.ops.quote_name
    connection.ensure_connection()
    with connection.connection.cursor() as cursor:
        names = ", ".join(qn(c) for c in columns)
        with cursor.copy(f"COPY {qn(table)} ({names}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)


def _insert_proposals(rows: list[dict]) -> None:
    """Insert new proposals (field values by attname): COPY on PostgreSQL, else bulk_create.

    The COPY writes every concrete column as ``Model.save`` would: defaults for the fields
    not given, auto_now dates, JSON encoded. A conflict or a bad value makes it fail as a
    whole, like ``bulk_create``.
    """
    if not rows:
        return
    if connection.vendor != "postgresql":
        Proposal.objects.bulk_create([Proposal(**values) for values in rows], batch_size=len(rows))
        return
    now = timezone.now()
    fields = [f for f in Proposal._meta.concrete_fields if not f.primary_key]
    spec = []  # (attname, default, auto_now, JSON encoder or False)
    for f in fields:
        auto = getattr(f, "auto_now", False) or getattr(f, "auto_now_add", False)
        encoder = f.encoder if isinstance(f, models.JSONField) else False
        spec.append((f.attname, now if auto else f.get_default(), auto, encoder))

    def copy_row(values):
        out = []
        for attname, default, auto, encoder in spec:
            value = default if auto else values.get(attname, default)
            out.append(value if encoder is False else json.dumps(value, cls=encoder))
        return out

    _pg_copy(Proposal._meta.db_table, [f.column for f in fields], map(copy_row, rows))


def _save_proposals(*, consultation, items, report, run_started, update, update_fields):
    """Insert the new proposals of ``items``, skip (or update) the existing ones.

    A batch that the database refuses as a whole is retried row by row, so that one bad row
    (a value the checks missed) is reported and the others are kept.
    """
    unique = _unique_items(items, report)
    # bulk_create, COPY and bulk_update skip Proposal.save, which keeps these columns.
    for item in unique:
        if "source_stats" in item.values:
            item.values.update(source_columns(item.values["source_stats"]))
    if "source_stats" in update_fields:
        update_fields = [*update_fields, *SOURCE_COLUMNS]
    existing = _existing_proposals(consultation, [item.external_id for item in unique])
    new, to_update = [], []
    for item in unique:
        found = existing.get(item.external_id)
        if found is None:
            new.append(item)
        elif found[1] == run_started:
            # Created earlier in this same run (every row of a run gets the run's start time):
            # the id is repeated in the file.
            report.add_bad(
                item.row,
                item.line,
                _("duplicate id %(id)s (an earlier row)") % {"id": item.external_id},
            )
        else:
            report.existing += 1
            if update:
                # bulk_update skips auto_now: set updated_at here.
                to_update.append(Proposal(pk=found[0], updated_at=timezone.now(), **item.values))
    with transaction.atomic():
        try:
            with transaction.atomic():
                _insert_proposals([i.values for i in new])
            report.created += len(new)
        except DatabaseError:
            for item in new:
                try:
                    with transaction.atomic():
                        Proposal(**item.values).save(force_insert=True)
                    report.created += 1
                except DatabaseError as exc:
                    report.add_bad(
                        item.row,
                        item.line,
                        _("refused by the database: %(error)s") % {"error": exc},
                    )
        if to_update:
            report.updated += Proposal.objects.bulk_update(
                to_update, fields=[*update_fields, "updated_at"], batch_size=500
            )


def _import_proposal_rows(
    *, consultation, rows, build, batch_size, update, update_fields, report, progress=None
):
    """Feed ``rows`` (from ``_CsvRows``) through ``build(fields) -> values`` in batches.

    ``progress(rows_read)`` is called after each batch (e.g. by an import job).
    """
    run_started = timezone.now()

    def items():
        for row, line, fields in rows:
            try:
                values = build(fields)
            except _BadValue as exc:
                report.add_bad(row, line, str(exc))
                continue
            if values is None:  # filtered out on purpose
                continue
            values["consultation_id"] = consultation.pk
            values["created_at"] = run_started
            yield _Item(row, line, values)

    _analyze(Proposal)
    next_analyze = max(batch_size, 1000)
    for batch in _batches(items(), batch_size):
        _save_proposals(
            consultation=consultation,
            items=batch,
            report=report,
            run_started=run_started,
            update=update,
            update_fields=update_fields,
        )
        if progress is not None:
            progress(report.rows)
        if report.created >= next_analyze:
            _analyze(Proposal)
            next_analyze *= 2
    popular_rank_refresh(consultation_id=consultation.pk)  # ranked as imported ("Most voted")


MAKEORG_STATS = {"votes": True, "adhesion": False, "engagement": False, "score": False}


def import_makeorg(
    *,
    consultation: Consultation,
    path,
    limit: int | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    update: bool = False,
    progress=None,
) -> ImportReport:
    """Import Make.org's open-data ``proposals.csv`` as accepted, imported proposals.

    ``external_id`` is the file's ``id``; ``votes``, ``adhesion``, ``engagement`` and ``score``
    go to ``source_stats``. With ``update``, proposals already imported get the file's text,
    age and statistics again; otherwise they are skipped.
    """
    started = time.monotonic()
    report = ImportReport(source=str(path))
    with _CsvRows(path, report=report, required=("id", "text"), limit=limit) as rows:
        col = rows.index
        stats = {name: integer for name, integer in MAKEORG_STATS.items() if name in col}

        def build(fields):
            source_stats = {}
            for name, integer in stats.items():
                value = _number(fields[col[name]], name, integer=integer)
                if value is not None:
                    source_stats[name] = value
            return {
                "external_id": _external_id(fields[col["id"]]),
                "content": _content(fields[col["text"]]),
                "author_age": _age(fields[col["author_age"]]) if "author_age" in col else None,
                "source_stats": source_stats,
                "status": Proposal.Status.ACCEPTED,
                "origin": Proposal.Origin.IMPORT,
            }

        _import_proposal_rows(
            consultation=consultation,
            rows=rows,
            build=build,
            batch_size=batch_size,
            update=update,
            update_fields=["content", "author_age", "source_stats"],
            report=report,
            progress=progress,
        )
    report.elapsed = time.monotonic() - started
    return report


def import_csv(
    *,
    consultation: Consultation,
    path,
    id_column: str = "id",
    text_column: str = "text",
    delimiter: str = ",",
    where: dict[str, str] | None = None,
    status: str = Proposal.Status.ACCEPTED,
    limit: int | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    update: bool = False,
    progress=None,
) -> ImportReport:
    """Import a CSV of open answers: one proposal per row, keyed on ``id_column``.

    The other non-empty columns go to ``source_stats`` as strings. ``where`` keeps only the
    rows whose columns equal the given values (e.g. one question of the Grand Débat); the
    others are counted in ``details["filtered_out"]``.
    """
    if status not in Proposal.Status.values:
        raise ImportFormatError(_("Unknown status %(status)s.") % {"status": status})
    started = time.monotonic()
    report = ImportReport(source=str(path))
    where = where or {}
    required = (id_column, text_column, *where)
    with _CsvRows(path, report=report, required=required, delimiter=delimiter, limit=limit) as rows:
        col = rows.index
        id_i, text_i = col[id_column], col[text_column]
        extra = [(name, i) for name, i in col.items() if i not in (id_i, text_i)]
        conditions = [(col[name], value) for name, value in where.items()]

        def build(fields):
            if any(fields[i] != value for i, value in conditions):
                report.count("filtered_out")
                return None
            return {
                "external_id": _external_id(fields[id_i]),
                "content": _content(fields[text_i]),
                "source_stats": {name: fields[i] for name, i in extra if fields[i] != ""},
                "status": status,
                "origin": Proposal.Origin.IMPORT,
            }

        _import_proposal_rows(
            consultation=consultation,
            rows=rows,
            build=build,
            batch_size=batch_size,
            update=update,
            update_fields=["content", "source_stats"],
            report=report,
            progress=progress,
        )
    report.elapsed = time.monotonic() - started
    return report


# --- Polis -----------------------------------------------------------------------------------

# The scores' weight of the votes cast outside this site's sequence, for a consultation made for
# a Polis conversation: every vote was cast in Polis's own one-at-a-time flow, none here, so the
# scores read them alone rather than half against an empty sequence counter. An import into an
# existing consultation keeps the weight its staff chose.
POLIS_VOTES_WEIGHT = 1.0

# Polis asks for this statement, word for word, with the links of the conversations used
# (compdemocracy/openData README). It is kept in English, as the licensor wrote it.
POLIS_ATTRIBUTION = (
    "Data was gathered using the Polis software (compdemocracy.org/polis) and is sub-licensed "
    "under CC BY 4.0 with Attribution to The Computational Democracy Project. The data and more "
    "information about how the data was collected can be found at the following link(s):"
)
# Case-study pages listed in compdemocracy/openData's README, by conversation id (pol.is/<id>).
POLIS_CASE_STUDIES = {
    "2demo": "https://compdemocracy.org/case-studies/2014-seattle-15-per-hour",
    "5twd2jsnfk": "https://compdemocracy.org/case-studies/2022-Austria-Klimarat",
    "7z7ejpbmv5": "https://compdemocracy.org/case-studies/2022-Austria-Klimarat",
    "7wmvbjcjhp": "https://compdemocracy.org/case-studies/2017-brexit-consensus",
    "5mnfxu85hx": "https://compdemocracy.org/case-studies/2016-canadian-electoral-reform",
    "2arcefpshi": "https://compdemocracy.org/case-studies/2015-football-concussions",
    "9xxwa9jpkm": "https://compdemocracy.org/case-studies/2022-london-youth-policing",
    "4hnmy3zeff": "https://compdemocracy.org/case-studies/2017-scoop-hivemind-affordable-housing",
    "3atycmhmer": "https://compdemocracy.org/case-studies/2019-scoop-hivemind-biodiversity",
    "5psrv8bm2a": "https://compdemocracy.org/case-studies/2017-scoop-hivemind-freshwater",
    "5sw7wa5dep": "https://compdemocracy.org/case-studies/2018-scoop-hivemind-taxes",
    "4yy3sh84js": "https://compdemocracy.org/case-studies/2017-scoop-hivemind-ubi",
    "2rumnecbeh": "https://compdemocracy.org/case-studies/2021-san-juan-island",
    "3phdex2kjf": "https://compdemocracy.org/case-studies/2015-vtaiwan-uberx",
}
POLIS_VOTES = {"1": VoteKey.AGREE, "-1": VoteKey.DISAGREE, "0": VoteKey.NEUTRAL}
# Columns of participants-votes.csv that are not comment ids.
_MATRIX_FIXED = {"participant", "xid", "group-id", "n-comments", "n-votes", "n-agree", "n-disagree"}


def polis_summary(folder) -> dict[str, str]:
    """``summary.csv`` of a Polis export as a dict (topic, url, conversation-description...)."""
    path = Path(folder) / "summary.csv"
    if not path.is_file():
        return {}
    with path.open(encoding="utf-8-sig", newline="") as f:
        return {row[0]: row[1] for row in csv.reader(f) if len(row) >= 2}


def polis_conversation_id(folder) -> str:
    """The conversation's id: the last part of its pol.is url, else the folder's name."""
    url = polis_summary(folder).get("url", "").strip().rstrip("/")
    if url:
        return url.rsplit("/", 1)[-1]
    return slugify(Path(folder).name)[:40]


def polis_attribution(folder) -> str:
    """The attribution text the CC BY 4.0 licence asks for, with this conversation's links."""
    summary = polis_summary(folder)
    conversation = polis_conversation_id(folder)
    links = [POLIS_CASE_STUDIES.get(conversation, ""), summary.get("url", "").strip()]
    topic = summary.get("topic", "").strip() or Path(folder).name
    return f"{POLIS_ATTRIBUTION}\n- {topic}: {' '.join(link for link in links if link)}"


def cause_attribution_add(*, cause: Cause, text: str) -> bool:
    """Add ``text`` to the cause's data attribution unless it is there already.

    Polis attributions share one statement: only the conversation's link line is appended
    under it. Returns whether the cause changed.
    """
    current = cause.data_attribution.strip()
    lines = text.strip().splitlines()
    if lines and lines[0] == POLIS_ATTRIBUTION and POLIS_ATTRIBUTION in current:
        missing = [line for line in lines[1:] if line not in current]
        if not missing:
            return False
        # Insert the links right after the statement's existing link lines.
        head, tail = current.split(POLIS_ATTRIBUTION, 1)
        tail_lines = tail.split("\n")
        at = 1
        while at < len(tail_lines) and tail_lines[at].startswith("- "):
            at += 1
        tail_lines[at:at] = missing
        new = head + POLIS_ATTRIBUTION + "\n".join(tail_lines)
    elif text.strip() in current:
        return False
    else:
        new = f"{current}\n\n{text.strip()}" if current else text.strip()
    cause.data_attribution = new
    cause.save(update_fields=["data_attribution", "updated_at"])
    return True


def _from_millis(value: str) -> datetime:
    try:
        millis = int(value.strip())
    except ValueError:
        raise _BadValue(
            _("“timestamp” is not a number: %(value)s") % {"value": value[:40]}
        ) from None
    try:
        return _EPOCH + timedelta(milliseconds=millis)
    except OverflowError:
        raise _BadValue(_("timestamp out of range: %(value)s") % {"value": value[:40]}) from None


def _polis_id(value: str, column: str) -> str:
    value = value.strip()
    if not value or len(value) > 20:
        raise _BadValue(
            _("invalid “%(column)s”: %(value)s") % {"column": column, "value": value[:40]}
        )
    return value


def _flag(value: str) -> bool:
    return value.strip().lower() in {"true", "1", "t", "yes"}


def import_polis(
    *,
    consultation: Consultation,
    path,
    unmoderated: str = Proposal.Status.PENDING,
    skip_moderated_out: bool = False,
    limit: int | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    update: bool = False,
    conversation: str | None = None,
    progress=None,
) -> ImportReport:
    """Import a Polis export folder: its comments as proposals, its voters and their votes.

    - ``moderated`` 1 → accepted; 0 → ``unmoderated`` (pending, or accepted); -1 → refused
      (reason "other"), or not imported with ``skip_moderated_out``. Statements flagged
      ``is-meta`` (newer exports) are archived: Polis leaves them out of its statistics.
      Either way only accepted proposals are public.
    - Votes: 1 → agree, -1 → disagree, 0 (pass) → neutral; the exports use agree = +1 in both
      ``votes.csv`` and ``participants-votes.csv`` (Polis's own database has the opposite
      sign). ``votes.csv`` holds every vote event; the latest per (voter, comment) by
      ``timestamp`` wins, even across batches and re-runs. Without ``votes.csv`` the matrix
      (already the latest votes) is used, dated at the last comment's time.
    - Votes are trusted, cast outside sequences; counters are rebuilt at the end.
    - ``limit`` caps the rows read from the votes file; comments are always read in full.

    Comments are read first and written in one pass (a conversation has at most a few
    thousand); votes are streamed in batches of ``batch_size``.
    """
    started = time.monotonic()
    folder = Path(path)
    if not folder.is_dir():
        raise ImportFormatError(_("Folder not found: %(path)s") % {"path": folder})
    if unmoderated not in (Proposal.Status.PENDING, Proposal.Status.ACCEPTED):
        raise ImportFormatError(_("Unmoderated comments can only be pending or accepted."))
    conversation = conversation or polis_conversation_id(folder)
    prefix = f"polis:{conversation}:"
    if len(prefix) + 10 > EXTERNAL_ID_MAX:
        raise ImportFormatError(_("The conversation id %(id)s is too long.") % {"id": conversation})
    report = ImportReport(source=str(folder))
    votes_path = folder / "votes.csv"
    matrix = not votes_path.is_file()
    # Open (and so check) every file before writing anything.
    comments = _CsvRows(
        folder / "comments.csv", report=report, required=("comment-id", "moderated", "comment-body")
    )
    try:
        if matrix:
            votes = _CsvRows(
                folder / "participants-votes.csv",
                report=ImportReport(""),
                limit=limit,
                required=("participant",),
            )
        else:
            votes = _CsvRows(
                votes_path,
                report=ImportReport(""),
                limit=limit,
                required=("timestamp", "comment-id", "voter-id", "vote"),
            )
    except ImportFormatError:
        comments.close()
        raise
    with comments:
        comment_pk, skipped, last_time = _polis_comments(
            consultation=consultation,
            rows=comments,
            prefix=prefix,
            unmoderated=unmoderated,
            skip_moderated_out=skip_moderated_out,
            update=update,
            report=report,
        )
    if progress is not None:
        progress(report.rows)
    # Vote rows are reported in the same report, numbered within their own file.
    vote_report = votes.report
    with votes:
        writer = _VoteWriter(consultation=consultation, prefix=prefix, report=report)
        if matrix:
            events = _polis_matrix_votes(
                votes, comment_pk, skipped, last_time or timezone.now(), report
            )
        else:
            events = _polis_vote_events(votes, comment_pk, skipped, report)
        for batch in _batches(events, batch_size):
            writer.write(batch)
            if progress is not None:
                progress(report.rows + vote_report.rows)
        writer.finish()
    report.rows += vote_report.rows
    report.bad_count += vote_report.bad_count
    for bad in vote_report.bad_rows:
        if len(report.bad_rows) < MAX_BAD_ROWS_KEPT:
            report.bad_rows.append(
                BadRow(row=bad.row, line=bad.line, reason=f"{votes.path.name}: {bad.reason}")
            )
    counters_rebuild(consultation=consultation)
    cause_attribution_add(cause=consultation.cause, text=polis_attribution(folder))
    report.elapsed = time.monotonic() - started
    return report


def _polis_comments(*, consultation, rows, prefix, unmoderated, skip_moderated_out, update, report):
    """Write the comments; returns ({comment id: proposal pk}, skipped ids, last comment time)."""
    col = rows.index
    statuses = {"1": Proposal.Status.ACCEPTED, "0": unmoderated, "-1": Proposal.Status.REFUSED}
    skipped: set[str] = set()
    items: list[_Item] = []
    last_time = None
    for row, line, fields in rows:
        comment_id = fields[col["comment-id"]].strip()
        try:
            comment_id = _polis_id(comment_id, "comment-id")
            moderated = fields[col["moderated"]].strip()
            if moderated not in statuses:
                raise _BadValue(_("invalid “moderated”: %(value)s") % {"value": moderated[:10]})
            if moderated == "-1" and skip_moderated_out:
                skipped.add(comment_id)
                report.count("comments_moderated_out_skipped")
                continue
            content = _content(fields[col["comment-body"]])
            created_at = (
                _from_millis(fields[col["timestamp"]]) if "timestamp" in col else timezone.now()
            )
            stats = {}
            for name in ("agrees", "disagrees", "group-informed-consensus"):
                if name in col:
                    value = _number(
                        fields[col[name]], name, integer=name != "group-informed-consensus"
                    )
                    if value is not None:
                        stats[name.replace("-", "_")] = value
            stats["moderated"] = int(moderated)
            for name in ("is-meta", "is-seed"):
                if name in col:
                    stats[name.replace("-", "_")] = _flag(fields[col[name]])
        except _BadValue as exc:
            report.add_bad(row, line, str(exc))
            if comment_id:
                skipped.add(comment_id)
            continue
        status = statuses[moderated]
        if stats.get("is_meta") and status != Proposal.Status.REFUSED:
            status = Proposal.Status.ARCHIVED
        last_time = max(last_time, created_at) if last_time else created_at
        values = {
            "consultation_id": consultation.pk,
            "external_id": f"{prefix}{comment_id}",
            "content": content,
            "status": status,
            "refusal_reason": (
                Proposal.RefusalReason.OTHER if status == Proposal.Status.REFUSED else ""
            ),
            "origin": Proposal.Origin.IMPORT,
            "source_stats": stats,
            "created_at": created_at,
        }
        items.append(_Item(row, line, values))
    # Comments carry their own dates, so duplicates are caught here rather than by run time.
    unique = _unique_items(items, report, shown=lambda eid: eid[len(prefix) :])
    for batch in _batches(unique, DEFAULT_BATCH_SIZE):
        _save_proposals(
            consultation=consultation,
            items=batch,
            report=report,
            run_started=None,
            update=update,
            update_fields=["content", "status", "refusal_reason", "source_stats"],
        )
    comment_pk = {
        eid[len(prefix) :]: pk
        for eid, pk in Proposal.objects.filter(
            consultation=consultation, external_id__startswith=prefix
        ).values_list("external_id", "pk")
    }
    return comment_pk, skipped - set(comment_pk), last_time


def _polis_vote_events(rows, comment_pk, skipped, report) -> Iterator[tuple]:
    """``(voter id, proposal pk, key, time)`` per valid row of ``votes.csv``."""
    col = rows.index
    ts_i, comment_i, voter_i, vote_i = (
        col[c] for c in ("timestamp", "comment-id", "voter-id", "vote")
    )
    for row, line, fields in rows:
        try:
            voter = _polis_id(fields[voter_i], "voter-id")
            comment = _polis_id(fields[comment_i], "comment-id")
            key = POLIS_VOTES.get(fields[vote_i].strip())
            if key is None:
                raise _BadValue(_("invalid vote: %(value)s") % {"value": fields[vote_i][:10]})
            when = _from_millis(fields[ts_i])
        except _BadValue as exc:
            rows.report.add_bad(row, line, str(exc))
            continue
        pk = comment_pk.get(comment)
        if pk is None:
            if comment in skipped:
                report.count("votes_on_skipped_comments")
            else:
                rows.report.add_bad(row, line, _("unknown comment id %(id)s") % {"id": comment})
            continue
        yield voter, pk, key, when


def _polis_matrix_votes(rows, comment_pk, skipped, when, report) -> Iterator[tuple]:
    """Votes of ``participants-votes.csv``, one per non-empty cell, all dated ``when``."""
    columns = []
    for i, name in enumerate(rows.header):
        if name in _MATRIX_FIXED:
            continue
        if name in comment_pk:
            columns.append((i, comment_pk[name]))
        elif name in skipped:
            columns.append((i, None))
        else:
            rows.report.add_bad(
                0, 1, _("column %(name)s is not a known comment id") % {"name": name}
            )
    participant_i = rows.index["participant"]
    for row, line, fields in rows:
        try:
            voter = _polis_id(fields[participant_i], "participant")
        except _BadValue as exc:
            rows.report.add_bad(row, line, str(exc))
            continue
        for i, pk in columns:
            value = fields[i].strip()
            if not value:
                continue
            key = POLIS_VOTES.get(value)
            if key is None:
                rows.report.add_bad(
                    row,
                    line,
                    _("invalid vote in column %(column)s: %(value)s")
                    % {"column": rows.header[i], "value": value[:10]},
                )
            elif pk is None:
                report.count("votes_on_skipped_comments")
            else:
                yield voter, pk, key, when


class _VoteWriter:
    """Participants and votes, written in bulk; the latest vote per (voter, proposal) wins.

    One upsert per batch: a row only replaces a stored vote that is older (or as old, with
    another key: the later row of the file wins). The database makes that decision, so it
    holds across batches and re-runs. On PostgreSQL the batch is first COPied into a
    temporary table, then upserted from it in one statement; elsewhere it is a multi-row
    ``INSERT ... ON CONFLICT``, which SQLite understands too.
    """

    STAGING = "concorde_import_votes"
    COLUMNS = (
        "participant_id",
        "proposal_id",
        "key",
        "trust",
        "in_sequence",
        "created_at",
        "updated_at",
    )

    def __init__(self, *, consultation, prefix, report):
        self.prefix = prefix
        self.report = report
        self.participants: dict[str, int] = {}
        self.consultation = consultation
        self.before = Vote.objects.filter(proposal__consultation=consultation).count()
        self.written = 0
        self.events = 0
        self.created_participants = 0
        self.copy = connection.vendor == "postgresql"
        qn = connection.ops.quote_name
        table = qn(Vote._meta.db_table)
        created, key = qn("created_at"), qn("key")
        self.sql_insert = f"INSERT INTO {table} ({', '.join(qn(c) for c in self.COLUMNS)}) "
        self.sql_upsert = (
            f" ON CONFLICT ({qn('participant_id')}, {qn('proposal_id')}) DO UPDATE SET "
            + ", ".join(f"{qn(c)} = EXCLUDED.{qn(c)}" for c in self.COLUMNS[2:])
            + f" WHERE {table}.{created} < EXCLUDED.{created}"
            f" OR ({table}.{created} = EXCLUDED.{created} AND {table}.{key} <> EXCLUDED.{key})"
        )
        max_params = connection.features.max_query_params or 65535
        self.rows_per_statement = max(1, max_params // len(self.COLUMNS))
        _analyze(Participant)
        self.next_analyze = 1000

    def _participant_ids(self, voters):
        missing = {v for v in voters if v not in self.participants}
        if not missing:
            return
        # Sorted: a set of strings iterates in an order that changes with each process's hash
        # seed, and participants' pks (the engine's row order) must not.
        by_external = {f"{self.prefix}{v}": v for v in sorted(missing)}
        found = {}
        for chunk in _chunks(by_external):
            found.update(
                Participant.objects.filter(external_id__in=chunk).values_list("external_id", "pk")
            )
        new = [Participant(external_id=e) for e in by_external if e not in found]
        # ignore_conflicts: a concurrent import of the same conversation may insert them first.
        Participant.objects.bulk_create(new, batch_size=1000, ignore_conflicts=True)
        self.report.count("participants_created", len(new))
        self.created_participants += len(new)
        if self.created_participants >= self.next_analyze:
            _analyze(Participant)  # see _analyze: keep the external_id lookups on the index
            self.next_analyze *= 2
        self.report.count("participants_existing", len(found))
        for chunk in _chunks(e.external_id for e in new):
            found.update(
                Participant.objects.filter(external_id__in=chunk).values_list("external_id", "pk")
            )
        self.participants.update({by_external[e]: pk for e, pk in found.items()})

    def write(self, events):
        self.events += len(events)
        # Reduce the batch first: one row per (voter, proposal), the latest (later row on ties).
        # PostgreSQL refuses an upsert that touches the same row twice.
        latest: dict[tuple[str, int], tuple] = {}
        for voter, pk, key, when in events:
            current = latest.get((voter, pk))
            if current is None or when >= current[1]:
                latest[(voter, pk)] = (key, when)
        self._participant_ids({voter for voter, _pk in latest})
        with transaction.atomic(), connection.cursor() as cursor:
            if self.copy:
                self._write_copy(cursor, latest)
            else:
                self._write_values(cursor, latest)

    def _write_copy(self, cursor, latest):
        cursor.execute(
            f"CREATE TEMPORARY TABLE IF NOT EXISTS {self.STAGING} (participant_id bigint, "
            "proposal_id bigint, key varchar(16), created_at timestamp with time zone)"
        )
        cursor.execute(f"TRUNCATE {self.STAGING}")
        _pg_copy(
            self.STAGING,
            ["participant_id", "proposal_id", "key", "created_at"],
            (
                (self.participants[voter], pk, key, when)
                for (voter, pk), (key, when) in latest.items()
            ),
        )
        cursor.execute(
            self.sql_insert + "SELECT participant_id, proposal_id, key, %s, %s, created_at, %s "
            f"FROM {self.STAGING}" + self.sql_upsert,
            [Trust.TRUSTED, False, timezone.now()],
        )
        self.written += max(cursor.rowcount, 0)

    def _write_values(self, cursor, latest):
        adapt = connection.ops.adapt_datetimefield_value
        now = adapt(timezone.now())
        params = [
            (self.participants[voter], pk, key, Trust.TRUSTED, False, adapt(when), now)
            for (voter, pk), (key, when) in latest.items()
        ]
        row = "(" + ", ".join(["%s"] * len(self.COLUMNS)) + ")"
        for start in range(0, len(params), self.rows_per_statement):
            chunk = params[start : start + self.rows_per_statement]
            cursor.execute(
                self.sql_insert + "VALUES " + ", ".join([row] * len(chunk)) + self.sql_upsert,
                [value for values in chunk for value in values],
            )
            self.written += max(cursor.rowcount, 0)

    def finish(self):
        if self.copy:
            with connection.cursor() as cursor:
                cursor.execute(f"DROP TABLE IF EXISTS {self.STAGING}")
        created = (
            Vote.objects.filter(proposal__consultation=self.consultation).count() - self.before
        )
        updated = max(self.written - created, 0)
        self.report.count("vote_rows", self.events)
        self.report.count("votes_created", created)
        # A stored vote replaced by a later one: from a later batch, or a newer export.
        self.report.count("votes_updated", updated)
        # Rows that were already in the database, or that a later row of the file supersedes.
        self.report.count("votes_unchanged", self.events - created - updated)


# --- Consultations for imports ---------------------------------------------------------------


def consultation_for_import(
    *,
    slug: str,
    create: bool = False,
    question: str = "",
    cause_slug: str = "",
    cause_title: str = "",
    language: str = "",
    description: str = "",
    non_sequence_votes_weight: float | None = None,
) -> tuple[Consultation, bool]:
    """The consultation ``slug``; with ``create``, made (with its cause) when it does not exist.

    ``non_sequence_votes_weight`` (a consultation made here only): the scores' weight of the
    votes cast outside this site's sequence, 1 for a source whose votes were all cast elsewhere.
    Returns (consultation, created). Raises ``ImportFormatError`` for an unknown slug without
    ``create`` or a creation without a question.
    """
    consultation = Consultation.objects.select_related("cause").filter(slug=slug).first()
    if consultation is not None:
        return consultation, False
    if not create:
        raise ImportFormatError(
            _("Unknown consultation “%(slug)s”. Create it first, or pass --create with --question.")
            % {"slug": slug}
        )
    if not question.strip():
        raise ImportFormatError(_("A new consultation needs a question (--question)."))
    if language and language not in Consultation.Language.values:
        raise ImportFormatError(_("Unknown language %(language)s.") % {"language": language})
    cause_slug = cause_slug or slug
    weight = {}  # the model's default unless told
    if non_sequence_votes_weight is not None:
        weight["non_sequence_votes_weight"] = non_sequence_votes_weight
    with transaction.atomic():
        cause, _created = Cause.objects.get_or_create(
            slug=cause_slug,
            defaults={
                "title": (cause_title or question)[:200],
                "status": Cause.Status.ACTIVE,
            },
        )
        language = language or Consultation.Language.FR
        consultation = Consultation.objects.create(
            cause=cause,
            slug=slug,
            question=question.strip()[:250],
            description=description,
            language=language,
            proposal_prefix="Il faut" if language == Consultation.Language.FR else "",
            **weight,
        )
    return consultation, True
