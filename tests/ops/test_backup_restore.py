"""Backup and restore, as docs/operations.md describes it, on a real imported consultation.

A Polis conversation (brexit-consensus, CC BY 4.0) is imported with ``manage.py import_polis``
into a fresh database; ``pg_dump -Fc`` dumps it, ``pg_restore`` loads the dump into another fresh
(empty) database; both must hold the same rows: counts of the main tables, checksums of the
votes and the counters, and sequences that carry on after the largest ids. Django then finds
nothing to migrate on the restored copy.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest

from .conftest import (
    app_env,
    connect,
    create_database,
    drop_database,
    manage,
    pg_env,
    scratch_name,
)

pytestmark = pytest.mark.realservices

CONVERSATION = "polis/brexit-consensus"
TABLES = [
    "causes_cause",
    "consultations_consultation",
    "consultations_proposal",
    "consultations_participant",
    "consultations_vote",
    "consultations_proposalcounter",
    "consultations_qualification",
    "django_migrations",
]
CHECKSUMS = {
    "votes": "SELECT count(*), md5(coalesce(string_agg(concat_ws('|', id, participant_id, "
    "proposal_id, key, trust, in_sequence, created_at, updated_at), ',' ORDER BY id), '')) "
    "FROM consultations_vote",
    "counters": "SELECT count(*), md5(coalesce(string_agg(concat_ws('|', proposal_id, key, trust, "
    "count), ',' ORDER BY proposal_id, key, trust), '')) FROM consultations_proposalcounter",
    "proposals": "SELECT count(*), md5(coalesce(string_agg(concat_ws('|', id, consultation_id, "
    "status, votes_total, md5(content)), ',' ORDER BY id), '')) FROM consultations_proposal",
}
SEQUENCED = ["consultations_vote", "consultations_proposal", "consultations_participant"]


def snapshot(database: str) -> dict:
    out = {}
    with connect(database) as conn:
        for table in TABLES:
            out[table] = conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
        for name, sql in CHECKSUMS.items():
            out[f"checksum:{name}"] = tuple(conn.execute(sql).fetchone())
    return out


def sequences_ahead(database: str) -> dict:
    """For each table: (largest id, the id the next insert would get) without consuming it."""
    out = {}
    with connect(database) as conn:
        for table in SEQUENCED:
            max_id = conn.execute(f"SELECT coalesce(max(id), 0) FROM {table}").fetchone()[0]
            seq = conn.execute("SELECT pg_get_serial_sequence(%s, 'id')", [table]).fetchone()[0]
            last, called = conn.execute(f"SELECT last_value, is_called FROM {seq}").fetchone()
            out[table] = (max_id, last + 1 if called else last)
    return out


@pytest.fixture
def databases(migrated_template):
    source, target = scratch_name("concorde_backup_src"), scratch_name("concorde_backup_dst")
    create_database(source, template=migrated_template)
    create_database(target)  # empty: pg_restore creates everything
    yield source, target
    drop_database(source)
    drop_database(target)


def test_pg_dump_and_pg_restore_give_back_the_same_consultation(databases, data_dir, tmp_path):
    source, target = databases
    if not (shutil.which("pg_dump") and shutil.which("pg_restore")):
        pytest.skip("pg_dump / pg_restore are not installed")
    folder = data_dir / CONVERSATION
    if not folder.is_dir():
        pytest.skip(f"{folder} is absent")
    env = app_env(source)
    manage(
        "import_polis", str(folder), "--consultation", "brexit", "--create",
        "--question", "What should happen after the Brexit referendum?", env=env, timeout=300,
    )  # fmt: skip
    before = snapshot(source)
    assert before["consultations_proposal"] >= 40
    assert before["consultations_vote"] >= 1000
    assert before["consultations_proposalcounter"] > 0

    dump = tmp_path / "concorde.dump"
    run = subprocess.run(
        ["pg_dump", "--format=custom", "--no-owner", "--no-privileges", f"--file={dump}", source],
        env=pg_env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    listing = subprocess.run(
        ["pg_restore", "--list", str(dump)], env=pg_env(), capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert listing.returncode == 0 and "TABLE DATA public consultations_vote" in listing.stdout

    run = subprocess.run(
        ["pg_restore", "--no-owner", "--no-privileges", "--exit-on-error", "--jobs=2",
         f"--dbname={target}", str(dump)],
        env=pg_env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr

    after = snapshot(target)
    assert after == before
    restored = sequences_ahead(target)
    assert restored == sequences_ahead(source)
    assert all(next_id > max_id for max_id, next_id in restored.values()), restored

    # Django sees a fully migrated database (exit status 1 would mean unapplied migrations).
    manage("migrate", "--check", env=app_env(target), timeout=120)
    # And the restored copy is usable: the pg_trgm extension came back with the schema.
    with connect(target) as conn:
        assert (
            conn.execute("SELECT count(*) FROM pg_extension WHERE extname = 'pg_trgm'").fetchone()[
                0
            ]
            == 1
        )
