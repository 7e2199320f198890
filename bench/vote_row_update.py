"""What a vote's ``votes_total + 1`` costs on the proposal table, before and after migration 0007.

A vote increments its proposal's ``votes_total`` (``consultations.services.vote_cast``). Until
migration 0007 that column was in ``proposal_popular_idx``, so the update was never HOT and wrote
a new entry in each of the table's indexes; a trigram index on the proposals' text was kept out
for that reason (docs/scaling.md section 2, items 4 and 7). Since 0007 the "Most voted" order sorts
on a copy of the totals in the narrow ``ProposalRank`` table, refreshed in one statement
(``services.popular_rank_refresh``), and the proposal table keeps 10 % of each page free.

What runs, on this machine over loopback: a scratch database (``concorde_vote_row_bench``,
created, migrated, dropped at the end) holding ``--rows`` real Make.org proposals (the shared
data file, repeated with a suffix when asked for more rows than it has). Three copies of that
table are made, each with the index definitions the migrated table really has, changed only
where the layout says:

- ``before``: plus ``proposal_popular_idx`` on (consultation, status, ``votes_total``), without
  the trigram index, fillfactor 100 (the layout up to migration 0006; the baseline);
- ``before + trigram``: the same with the trigram GIN index (what adding it alone would cost);
- ``now``: the migrated table's definitions (trigram index, fillfactor 90), and a copy of the
  rank table with its indexes, every proposal ranked.

Then ``--updates`` single-row ``UPDATE ... SET votes_total = votes_total + 1 WHERE id = %s``,
one transaction each as on the site, on the same random proposals (seeded) for each layout,
interleaved in ``--rounds`` rounds so that load on the machine hits every layout alike. Printed
per layout: wall time per update (mean, p50, p95), WAL written per update (records and full-page
images apart, read with pg_walinspect; the whole server's, so run it on an idle one), the share
of HOT updates, the growth of the table and of its indexes; then what the "Most voted" refresh
(the statement of ``popular_rank_refresh``, on the copies) costs on ``now`` for those updates.

Usage:
    python bench/vote_row_update.py [--database-url postgres://postgres@127.0.0.1:5432/concorde]
        [--rows 20000] [--updates 6000] [--rounds 6] [--seed 0] [--keep]
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import random
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.vote_load import (  # noqa: E402
    admin_execute,
    migrated_scratch,
    percentile,
    psycopg_url,
    with_database,
)

SCRATCH_DB = "concorde_vote_row_bench"
DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/concorde"
DATA = Path(os.environ.get("CONCORDE_DATA_DIR", ROOT.parent / "shared" / "data"))
PROPOSALS = DATA / "opentext" / "makeorg_monde_dapres_2020" / "proposals.csv"
TABLE = "consultations_proposal"
LAYOUTS = ("before", "before + trigram", "now")
RANKS = "bench_now_ranks"


def real_texts(rows: int) -> list[str]:
    with PROPOSALS.open(newline="", encoding="utf-8") as handle:
        texts = [row["text"] for row in csv.DictReader(handle) if row["text"].strip()]
    return [
        texts[i % len(texts)] + ("" if i < len(texts) else f" ({i // len(texts)})")
        for i in range(rows)
    ]


def prepare(url: str, rows: int) -> None:
    env = {**os.environ, "DATABASE_URL": with_database(url, SCRATCH_DB)}
    migrated_scratch(url, SCRATCH_DB, env)
    seed = (
        "from causes.models import Cause\n"
        "from consultations.models import Consultation\n"
        "cause = Cause.objects.create(title='Bench', slug='bench', summary='Bench', status='active')\n"
        "Consultation.objects.create(cause=cause, question='Bench?', slug='bench-rows')\n"
    )
    subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", seed], cwd=ROOT, env=env, check=True
    )


def load(conn, rows: int) -> None:
    consultation = conn.execute("SELECT id FROM consultations_consultation").fetchone()[0]
    columns = (
        "consultation_id, content, author_name, status, refusal_reason, origin, external_id, "
        "source_stats, votes_total, created_at, updated_at"
    )
    with conn.cursor().copy(f"COPY {TABLE} ({columns}) FROM STDIN") as copy:
        for text in real_texts(rows):
            copy.write_row(
                (consultation, text, "", "accepted", "", "import", "", "{}", 0, "now", "now")
            )
    conn.execute(f"ANALYZE {TABLE}")


def index_definitions(conn) -> list[str]:
    found = conn.execute(
        "SELECT indexdef FROM pg_indexes WHERE tablename = %s ORDER BY indexname", [TABLE]
    )
    return [row[0] for row in found.fetchall()]


def make_copy(conn, layout: str, definitions: list[str]) -> str:
    name = "bench_" + re.sub(r"\W+", "_", layout).strip("_")
    conn.execute(f"DROP TABLE IF EXISTS {name}")
    fillfactor = 90 if layout == "now" else 100
    conn.execute(
        f"CREATE TABLE {name} (LIKE {TABLE} INCLUDING DEFAULTS) WITH (fillfactor = {fillfactor})"
    )
    conn.execute(f"INSERT INTO {name} SELECT * FROM {TABLE} ORDER BY id")
    if layout != "now":
        definitions = [
            *definitions,
            f"CREATE INDEX popular ON {TABLE} (consultation_id, status, votes_total)",
        ]
    for n, definition in enumerate(definitions):
        if "gin_trgm_ops" in definition and layout == "before":
            continue
        if "UNIQUE" in definition and "pkey" not in definition:
            definition = definition.replace("UNIQUE ", "")  # same entries, no constraint needed
        definition = re.sub(r"INDEX \S+ ON public\.\S+", f"INDEX {name}_{n} ON {name}", definition)
        definition = re.sub(rf"INDEX \S+ ON {TABLE}\b", f"INDEX {name}_{n} ON {name}", definition)
        conn.execute(definition)
    if layout == "now":  # the rank table beside it, every proposal ranked
        conn.execute(f"DROP TABLE IF EXISTS {RANKS}")
        conn.execute(f"CREATE TABLE {RANKS} (LIKE consultations_proposalrank INCLUDING ALL)")
        conn.execute(
            f"INSERT INTO {RANKS} (proposal_id, consultation_id, votes) "
            f"SELECT id, consultation_id, votes_total FROM {name}"
        )
        conn.execute(f"VACUUM ANALYZE {RANKS}")
    conn.execute(f"VACUUM ANALYZE {name}")
    return name


def sizes(conn, table: str) -> tuple[int, int]:
    found = conn.execute(
        "SELECT pg_relation_size(%s), pg_indexes_size(%s)", [table, table]
    ).fetchone()
    return found[0], found[1]


def hot_counts(conn, table: str) -> tuple[int, int]:
    conn.execute("SELECT pg_stat_force_next_flush()")
    conn.execute("SELECT pg_stat_clear_snapshot()")
    found = conn.execute(
        "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables WHERE relname = %s", [table]
    ).fetchone()
    return found[0], found[1]


def wal_lsn(conn) -> str:
    return conn.execute("SELECT pg_current_wal_flush_lsn()").fetchone()[0]


def wal_since(conn, start: str) -> tuple[int, int]:
    """(WAL record bytes, full-page image bytes) written since ``start``, the whole cluster's."""
    found = conn.execute(
        "SELECT coalesce(sum(record_size), 0), coalesce(sum(fpi_size), 0) "
        "FROM pg_get_wal_stats(%s, pg_current_wal_flush_lsn())",
        [start],
    ).fetchone()
    return int(found[0]), int(found[1])


def run(url: str, rows: int, updates: int, rounds: int, seed: int) -> str:
    import psycopg

    with psycopg.connect(psycopg_url(with_database(url, SCRATCH_DB)), autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_walinspect")
        load(conn, rows)
        definitions = index_definitions(conn)
        tables = {layout: make_copy(conn, layout, definitions) for layout in LAYOUTS}
        ids = [row[0] for row in conn.execute(f"SELECT id FROM {TABLE} ORDER BY id").fetchall()]
        rng = random.Random(seed)
        targets = [rng.choice(ids) for _ in range(updates)]
        per_round = updates // rounds
        stats = {
            layout: {
                "lat": [],
                "wal": [0, 0],
                "start": hot_counts(conn, table),
                "size": sizes(conn, table),
            }
            for layout, table in tables.items()
        }
        for r in range(rounds):
            chunk = targets[r * per_round : (r + 1) * per_round]
            order = LAYOUTS[r % len(LAYOUTS) :] + LAYOUTS[: r % len(LAYOUTS)]
            for layout in order:
                table, entry = tables[layout], stats[layout]
                start = wal_lsn(conn)
                for pk in chunk:
                    t0 = time.perf_counter()
                    conn.execute(
                        f"UPDATE {table} SET votes_total = votes_total + 1 WHERE id = %s", [pk]
                    )
                    entry["lat"].append(time.perf_counter() - t0)
                records, images = wal_since(conn, start)
                entry["wal"][0] += records
                entry["wal"][1] += images
        for layout, table in tables.items():
            stats[layout]["end"] = hot_counts(conn, table)
            stats[layout]["size_end"] = sizes(conn, table)
        done = per_round * rounds
        start = wal_lsn(conn)
        t0 = time.perf_counter()
        moved = conn.execute(
            f"INSERT INTO {RANKS} (proposal_id, consultation_id, votes) "
            f"SELECT p.id, p.consultation_id, p.votes_total FROM {tables['now']} p "
            f"LEFT JOIN {RANKS} r ON r.proposal_id = p.id "
            "WHERE p.consultation_id = (SELECT id FROM consultations_consultation) "
            "AND (r.proposal_id IS NULL OR r.votes <> p.votes_total) "
            "ON CONFLICT (proposal_id) DO UPDATE SET votes = excluded.votes"
        ).rowcount
        refresh_s = time.perf_counter() - t0
        refresh_wal = sum(wal_since(conn, start))
        server = conn.execute("SHOW server_version").fetchone()[0]

    lines = [
        f"{rows:,} real Make.org proposals per table, {done:,} single-row `votes_total + 1` updates per "
        f"layout (one transaction each, the same random proposals, {rounds} interleaved rounds); "
        f"PostgreSQL {server}, {platform.machine()}, {os.cpu_count()} CPUs, load average "
        f"{os.getloadavg()[0]:.1f} at the end.",
        "",
        "| layout | ms per update: mean / p50 / p95 | WAL per update: records / page images, bytes | "
        "HOT updates | table growth MB | indexes growth MB |",
        "|---|---|---|---|---|---|",
    ]
    base = None
    for layout in LAYOUTS:
        entry, table = stats[layout], tables[layout]
        ms = [x * 1000 for x in entry["lat"]]
        entry.update(
            mean=sum(ms) / len(ms), records=entry["wal"][0] / done, images=entry["wal"][1] / done
        )
        base = base or entry
        upd = entry["end"][0] - entry["start"][0]
        hot = entry["end"][1] - entry["start"][1]
        heap, index = entry["size_end"]
        ratio = (
            ""
            if entry is base
            else f" ({entry['mean'] / base['mean']:.2f}x time, {entry['records'] / base['records']:.2f}x WAL records)"
        )
        lines.append(
            f"| {layout}{ratio} | {entry['mean']:.3f} / {percentile(ms, 50):.3f} / {percentile(ms, 95):.3f} | "
            f"{entry['records']:,.0f} / {entry['images']:,.0f} | {hot:,} of {upd:,} | "
            f"{(heap - entry['size'][0]) / 1e6:.2f} | {(index - entry['size'][1]) / 1e6:.2f} |"
        )
    lines += [
        "",
        f'The "Most voted" refresh on `now` after those updates: {moved:,} proposals re-ranked in '
        f"{refresh_s * 1000:.0f} ms, {refresh_wal / 1e6:.2f} MB of WAL ({refresh_wal / max(moved, 1):,.0f} bytes per proposal) (one statement; it runs at most once "
        "per `CONCORDE_POPULAR_RANK_SECONDS` per consultation, when someone reads that order).",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL", DEFAULT_URL))
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--updates", type=int, default=6_000)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", action="store_true", help="keep the scratch database")
    args = parser.parse_args()
    if args.rows < 1 or args.updates < args.rounds or args.rounds < 1:
        parser.error("--rows must be positive and --updates at least --rounds (itself at least 1)")
    if not PROPOSALS.is_file():
        parser.error(f"{PROPOSALS} is missing (CONCORDE_DATA_DIR)")
    url = args.database_url
    if not url.startswith(("postgres://", "postgresql://")):
        parser.error("--database-url must be a PostgreSQL URL")
    prepare(url, args.rows)
    try:
        print(run(url, args.rows, args.updates, args.rounds, args.seed))
    finally:
        if not args.keep:
            admin_execute(url, f'DROP DATABASE IF EXISTS "{SCRATCH_DB}" WITH (FORCE)')
    return 0


if __name__ == "__main__":
    sys.exit(main())
