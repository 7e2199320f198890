"""How fast do the importers write 100,000+ rows into PostgreSQL, next to a raw COPY?

Nothing is invented: the inputs are built from the real public data.

- Make.org: ``proposals.csv`` repeated ``--copies`` times (6 × 18,690 = 112,140 rows), the ids
  of each copy given a suffix (``mo-mda-00001-r2``) so that every row is a new proposal.
- Polis: a real conversation (``--polis``, default brexit-consensus) whose voters are resampled
  with replacement (seeded), each draw becoming a new voter with all the real vote rows of the
  voter drawn (timestamps, re-votes and all), until there are ``--votes`` vote rows.

Each importer runs twice into a scratch database (created, migrated with ``migrate``, dropped
at the end): once on an empty consultation, then again (nothing new, the idempotent path).
The baseline, measured in the same run, is PostgreSQL's ``COPY`` of the same CSV files into a
bare table without index or constraint: the physical ceiling of loading those rows.

Usage:
    python bench/import_bench.py [--database-url postgres://postgres@127.0.0.1:5432/concorde]
        [--copies 6] [--votes 100000] [--polis brexit-consensus] [--batch-size 2000]
        [--markdown docs/bench_import.md] [--keep]

The scratch database is ``concorde_import_bench`` on the server of ``--database-url`` (default:
``$DATABASE_URL``).
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import shlex
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SCRATCH_DB = "concorde_import_bench"
DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/concorde"


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


def admin_execute(url: str, sql: str) -> None:
    import psycopg

    with psycopg.connect(with_database(url, "postgres"), autocommit=True) as conn:
        conn.execute(sql)


def build_makeorg(source: Path, target: Path, copies: int) -> int:
    """``copies`` copies of the real file, ids suffixed from the second copy on."""
    rows = 0
    with target.open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        for copy in range(copies):
            with source.open(newline="", encoding="utf-8") as f:
                reader = csv.reader(f)
                header = next(reader)
                if copy == 0:
                    writer.writerow(header)
                for row in reader:
                    if copy:
                        row[0] = f"{row[0]}-r{copy}"
                    writer.writerow(row)
                    rows += 1
    return rows


def build_polis(source: Path, target: Path, votes: int, seed: int = 42) -> tuple[int, int]:
    """Resample the conversation's voters until ``votes`` vote rows; returns (voters, rows)."""
    target.mkdir()
    for name in ("comments.csv", "summary.csv"):
        (target / name).write_bytes((source / name).read_bytes())
    by_voter: dict[str, list[list[str]]] = defaultdict(list)
    with (source / "votes.csv").open(newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader)
        voter_i = header.index("voter-id")
        for row in reader:
            by_voter[row[voter_i]].append(row)
    voters = sorted(by_voter, key=int)
    rng = random.Random(seed)
    rows = drawn = 0
    with (target / "votes.csv").open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(header)
        while rows < votes:
            for row in by_voter[rng.choice(voters)]:
                row = list(row)
                row[voter_i] = str(drawn)
                writer.writerow(row)
                rows += 1
            drawn += 1
    return drawn, rows


def copy_rate(url: str, table_sql: str, table: str, path: Path) -> tuple[int, float]:
    """Rows and seconds of a COPY of ``path`` (CSV with header) into a new bare table."""
    import psycopg

    with psycopg.connect(url) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {table}")
        conn.execute(table_sql)
        conn.commit()
        started = time.perf_counter()
        with conn.cursor() as cur:
            with cur.copy(f"COPY {table} FROM STDIN WITH (FORMAT csv, HEADER true)") as copy:
                with path.open("rb") as f:
                    while block := f.read(1 << 20):
                        copy.write(block)
            conn.commit()
        seconds = time.perf_counter() - started
        rows = conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
        conn.execute(f"DROP TABLE {table}")
        conn.commit()
    return rows, seconds


NOTES = """\
What the importers do that the COPY baseline does not: parse and check every row (bad rows
are reported, not loaded), look up the ids already imported (one indexed query per batch), and
write through the real tables: 9 indexes on proposals, the unique (participant, proposal)
upsert on votes, deferred foreign-key checks at each batch's commit, participants created in
bulk, then the counters rebuilt with set-based SQL. On PostgreSQL the new proposals and each
batch of votes travel by COPY too (votes into a temporary table, then one
`INSERT ... SELECT ... ON CONFLICT DO UPDATE ... WHERE` keeps the latest vote); a multi-row
INSERT with bound literals measured about 2.5 times slower. The re-run rows show the
idempotent path: the same files again, nothing written.
"""


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL") or DEFAULT_URL)
    parser.add_argument("--copies", type=int, default=6, help="copies of the Make.org file")
    parser.add_argument("--votes", type=int, default=100_000, help="Polis vote rows to build")
    parser.add_argument("--polis", default="brexit-consensus", help="conversation to resample")
    parser.add_argument("--batch-size", type=int, default=2000)
    parser.add_argument("--markdown", type=Path, help="also write the output to this file")
    parser.add_argument("--keep", action="store_true", help="keep the scratch database")
    args = parser.parse_args(argv)
    if not args.database_url.startswith(("postgres://", "postgresql://")):
        parser.error("the benchmark needs PostgreSQL (--database-url postgres://...)")

    lines: list[str] = []

    def say(text=""):
        print(text, flush=True)
        lines.append(text)

    scratch = with_database(args.database_url, SCRATCH_DB)
    admin_execute(args.database_url, f"DROP DATABASE IF EXISTS {SCRATCH_DB} WITH (FORCE)")
    admin_execute(args.database_url, f"CREATE DATABASE {SCRATCH_DB}")
    os.environ["DATABASE_URL"] = scratch
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command
    from django.db import connection, connections

    from consultations.importers import consultation_for_import, import_makeorg, import_polis
    from consultations.services import counters_rebuild

    try:
        call_command("migrate", verbosity=0)
        data = Path(settings.CONCORDE_DATA_DIR)
        with connection.cursor() as cur:
            cur.execute("SELECT version()")
            version = cur.fetchone()[0].split(" on ")[0]
        with tempfile.TemporaryDirectory(prefix="concorde-bench-") as tmp:
            tmp = Path(tmp)
            makeorg = tmp / "proposals.csv"
            n_proposals = build_makeorg(
                data / "opentext/makeorg_monde_dapres_2020/proposals.csv", makeorg, args.copies
            )
            polis = tmp / "polis"
            voters, n_votes = build_polis(data / "polis" / args.polis, polis, args.votes)
            load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
            say(
                f"{version}, scratch database {SCRATCH_DB}, {os.cpu_count()} CPU cores "
                f"(load average at start: {load})"
            )
            say(
                f"Make.org: proposals.csv x{args.copies} = {n_proposals:,} rows; "
                f"Polis {args.polis}: {voters:,} resampled voters, {n_votes:,} vote rows; "
                f"batch size {args.batch_size}"
            )
            say()

            results = []
            mda, _ = consultation_for_import(slug="bench-makeorg", create=True, question="Bench ?")
            for label in ("Make.org import (all new)", "Make.org re-run (nothing new)"):
                report = import_makeorg(consultation=mda, path=makeorg, batch_size=args.batch_size)
                results.append((label, report.rows, report.elapsed, "makeorg", report))
            pol, _ = consultation_for_import(
                slug="bench-polis", create=True, question="Bench ?", language="en"
            )
            for label in ("Polis import (all new)", "Polis re-run (nothing new)"):
                report = import_polis(consultation=pol, path=polis, batch_size=args.batch_size)
                vote_rows = report.details["vote_rows"]
                results.append((label, vote_rows, report.elapsed, "votes", report))
            started = time.perf_counter()
            rebuilt = counters_rebuild(consultation=pol)
            rebuild_seconds = time.perf_counter() - started
            connections.close_all()

            copy = {
                "makeorg": copy_rate(
                    scratch,
                    "CREATE TABLE bench_copy_makeorg (id text, text text, votes integer, "
                    "adhesion double precision, engagement double precision, "
                    "score double precision, author_age integer, in_interim integer)",
                    "bench_copy_makeorg",
                    makeorg,
                ),
                "votes": copy_rate(
                    scratch,
                    "CREATE TABLE bench_copy_votes (timestamp bigint, datetime text, "
                    "comment_id integer, voter_id integer, vote integer)",
                    "bench_copy_votes",
                    polis / "votes.csv",
                ),
            }

            say("| step | rows | seconds | rows/s | COPY rows/s (same rows) | importer / COPY |")
            say("|---|---:|---:|---:|---:|---:|")
            for kind, (rows, seconds) in copy.items():
                name = "Make.org rows" if kind == "makeorg" else "Polis vote rows"
                say(
                    f"| baseline: COPY of the {name} into a bare table | {rows:,} | "
                    f"{seconds:.2f} | {rows / seconds:,.0f} | | |"
                )
            for label, rows, seconds, kind, _report in results:
                copy_rows, copy_seconds = copy[kind]
                copy_rps = copy_rows / copy_seconds
                rps = rows / seconds
                say(
                    f"| {label} | {rows:,} | {seconds:.2f} | {rps:,.0f} | {copy_rps:,.0f} | "
                    f"{rps / copy_rps:.0%} (COPY {copy_rps / rps:.1f}x faster) |"
                )
            say(
                f"| counters_rebuild alone (Polis consultation, {rebuilt['counters']:,} counters) "
                f"| | {rebuild_seconds:.2f} | | | |"
            )
            say()
            for label, _rows, _seconds, _kind, report in results:
                details = ", ".join(f"{k} {v:,}" for k, v in report.details.items())
                say(
                    f"- {label}: created {report.created:,}, already there {report.existing:,}, "
                    f"bad rows {report.bad_count}" + (f"; {details}" if details else "")
                )
    finally:
        connections.close_all()
        if not args.keep:
            admin_execute(args.database_url, f"DROP DATABASE IF EXISTS {SCRATCH_DB} WITH (FORCE)")

    if args.markdown:
        command = "python bench/import_bench.py " + " ".join(
            shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])
        )
        args.markdown.write_text(
            "# Import benchmark\n\n"
            "Produced by `bench/import_bench.py` (see its docstring for how the 100k+ rows are "
            "built from the real Make.org and Polis files). Timings from a shared 2-core "
            "machine: compare the ratios more than the absolute figures.\n\n"
            f"```\n{command.strip()}\n```\n\n" + "\n".join(lines) + "\n\n" + NOTES,
            encoding="utf-8",
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
