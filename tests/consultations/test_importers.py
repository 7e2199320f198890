"""Importers on small slices of the real public data (copied into tmp_path at test time)."""

import csv
import random
import shutil
from collections import Counter
from io import StringIO
from itertools import islice

import pytest
from django.core.management import CommandError, call_command

from causes.models import Cause
from consultations.importers import (
    POLIS_ATTRIBUTION,
    ImportFormatError,
    consultation_for_import,
    import_csv,
    import_makeorg,
    import_polis,
)
from consultations.models import (
    Consultation,
    Participant,
    Proposal,
    ProposalCounter,
    ProposalRank,
    Qualification,
    Trust,
    Vote,
    VoteKey,
)
from consultations.services import counters_rebuild, counters_recount
from tests.factories import ConsultationFactory, ParticipantFactory, ProposalFactory

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("english")]

MAKEORG = "opentext/makeorg_monde_dapres_2020/proposals.csv"
GRANDDEBAT = "opentext/granddebat_2019_answers/answers.csv"
LONDON = "polis/london.youth.policing"
POLIS_KEYS = {"1": VoteKey.AGREE, "-1": VoteKey.DISAGREE, "0": VoteKey.NEUTRAL}


def read_rows(path, n=None):
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader)
        rows = list(islice(reader, n))
    return header, rows


def write_rows(path, header, rows, delimiter=","):
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, delimiter=delimiter)
        writer.writerow(header)
        writer.writerows(rows)
    return path


@pytest.fixture
def makeorg_slice(data_dir, tmp_path):
    """The first 50 real proposals, then 6 rows of our own: 5 bad, 1 good but long."""
    header, rows = read_rows(data_dir / MAKEORG, 50)
    long_text = f"{rows[0][1].strip()} et {rows[1][1].strip()}"  # real words, > 140 characters
    rows += [
        ["mo-test-51", "", "10", "0.5", "0.1", "0.6", "", "0"],  # empty text
        ["mo-test-52", "Il faut <b>mettre du gras</b> partout", "10", "0.5", "0.1", "0.6", "", "0"],
        ["mo-test-53", "Il faut compter les votes", "beaucoup", "0.5", "0.1", "0.6", "", "0"],
        ["mo-test-54", "Il faut une colonne de moins"],  # wrong column count
        ["mo-test-55", long_text, "12", "0.5", "0.1", "0.6", "33", "0"],
        [rows[0][0], "Il faut un id déjà vu", "10", "0.5", "0.1", "0.6", "", "0"],  # duplicate
    ]
    return write_rows(tmp_path / "proposals.csv", header, rows), rows


def latest_votes(votes_path):
    """{(voter, comment): key}: the latest row per pair by timestamp (the later row on ties)."""
    latest = {}
    with open(votes_path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            pair = (row["voter-id"], row["comment-id"])
            ts = int(row["timestamp"])
            if pair not in latest or ts >= latest[pair][0]:
                latest[pair] = (ts, POLIS_KEYS[row["vote"]])
    return {pair: key for pair, (_ts, key) in latest.items()}


def stored_votes(consultation):
    return {
        (ext.rsplit(":", 1)[1], pid.rsplit(":", 1)[1]): key
        for ext, pid, key in Vote.objects.filter(proposal__consultation=consultation).values_list(
            "participant__external_id", "proposal__external_id", "key"
        )
    }


def assert_counters_match(consultation, expected):
    per_comment = Counter((comment, key) for (_voter, comment), key in expected.items())
    for proposal in Proposal.objects.filter(consultation=consultation):
        comment = proposal.external_id.rsplit(":", 1)[1]
        counters = {
            c.key: c.count
            for c in ProposalCounter.objects.filter(proposal=proposal, trust=Trust.TRUSTED)
        }
        for key in VoteKey.values:
            assert counters.get(key, 0) == per_comment[(comment, key)], (comment, key)
        assert proposal.votes_total == sum(per_comment[(comment, k)] for k in VoteKey.values)


# --- Make.org ----------------------------------------------------------------------------------


def test_makeorg_reports_bad_rows_and_keeps_every_good_row(makeorg_slice):
    path, rows = makeorg_slice
    consultation = ConsultationFactory()

    report = import_makeorg(consultation=consultation, path=path)

    assert [(b.row, b.line) for b in report.bad_rows] == [
        (51, 52),
        (52, 53),
        (53, 54),
        (54, 55),
        (56, 57),
    ]
    reasons = [b.reason for b in report.bad_rows]
    assert reasons[0] == "empty text"
    assert "HTML" in reasons[1]
    assert "votes" in reasons[2] and "beaucoup" in reasons[2]
    assert reasons[3] == "expected 8 columns, found 2"
    assert "duplicate id" in reasons[4]
    assert report.rows == 56 and report.created == 51 and report.bad_count == 5
    good = rows[:50] + [rows[54]]
    stored = {p.external_id: p for p in Proposal.objects.filter(consultation=consultation)}
    assert set(stored) == {row[0] for row in good}
    for row in good:
        proposal = stored[row[0]]
        assert proposal.content == row[1]  # unchanged, trailing spaces and > 140 characters kept
        assert proposal.status == Proposal.Status.ACCEPTED
        assert proposal.origin == Proposal.Origin.IMPORT
        assert proposal.author_age == (int(row[6]) if row[6] else None)
        assert proposal.source_stats == {
            "votes": int(row[2]),
            "adhesion": float(row[3]),
            "engagement": float(row[4]),
            "score": float(row[5]),
        }
    assert len(stored["mo-test-55"].content) > 140
    # Ranked as imported: the "Most voted" order lists them from its first reader on.
    assert set(ProposalRank.objects.filter(consultation=consultation).values_list("proposal_id", flat=True)) == {
        p.pk for p in stored.values()
    }


def test_makeorg_reimport_creates_nothing(makeorg_slice):
    path, _rows = makeorg_slice
    consultation = ConsultationFactory()
    import_makeorg(consultation=consultation, path=path, batch_size=7)

    again = import_makeorg(consultation=consultation, path=path, batch_size=7)

    # 52: the 51 proposals, plus the row that repeats an id (a bad row on the first run only:
    # on a re-run it cannot be told apart from a proposal already imported).
    assert again.created == 0 and again.existing == 52
    assert again.bad_count == 4
    assert Proposal.objects.filter(consultation=consultation).count() == 51


def test_makeorg_duplicate_id_in_a_later_batch_is_a_bad_row(makeorg_slice):
    path, _rows = makeorg_slice
    report = import_makeorg(consultation=ConsultationFactory(), path=path, batch_size=7)

    assert report.created == 51 and report.existing == 0
    assert [b.row for b in report.bad_rows] == [51, 52, 53, 54, 56]


def test_makeorg_limit_and_update(makeorg_slice):
    path, rows = makeorg_slice
    consultation = ConsultationFactory()
    report = import_makeorg(consultation=consultation, path=path, limit=10)
    assert report.rows == 10 and report.created == 10
    Proposal.objects.filter(consultation=consultation).update(source_stats={})

    again = import_makeorg(consultation=consultation, path=path, limit=10, update=True)

    assert again.updated == 10
    assert Proposal.objects.get(external_id=rows[0][0]).source_stats["votes"] == int(rows[0][2])


def test_makeorg_wrong_columns_raise_before_writing(tmp_path):
    path = write_rows(tmp_path / "x.csv", ["identifier", "proposal"], [["a", "Il faut"]])
    consultation = ConsultationFactory()
    with pytest.raises(ImportFormatError, match="id, text"):
        import_makeorg(consultation=consultation, path=path)
    assert not Proposal.objects.exists()


# --- Polis -------------------------------------------------------------------------------------


def test_polis_vote_counts_equal_a_recount_of_the_latest_raw_votes(data_dir):
    consultation = ConsultationFactory()

    report = import_polis(consultation=consultation, path=data_dir / LONDON, batch_size=100)

    expected = latest_votes(data_dir / LONDON / "votes.csv")
    assert len(expected) == 638  # the README's count of latest votes
    assert stored_votes(consultation) == expected
    assert_counters_match(consultation, expected)
    assert report.details["vote_rows"] == 640
    assert report.details["votes_created"] == 638
    assert report.details["participants_created"] == 26
    assert report.bad_count == 0
    assert Participant.objects.filter(external_id__startswith="polis:9xxwa9jpkm:").count() == 26
    vote = Vote.objects.filter(proposal__consultation=consultation).first()
    assert vote.trust == Trust.TRUSTED and vote.in_sequence is False


def test_polis_moderated_out_comments_stay_out_of_the_public_set(data_dir):
    consultation = ConsultationFactory()
    import_polis(consultation=consultation, path=data_dir / LONDON)

    with open(data_dir / LONDON / "comments.csv", newline="", encoding="utf-8") as f:
        moderated = {row["comment-id"]: row["moderated"] for row in csv.DictReader(f)}
    out = {f"polis:9xxwa9jpkm:{cid}" for cid, m in moderated.items() if m == "-1"}
    assert len(out) == 3
    accepted = set(
        consultation.proposals.filter(status=Proposal.Status.ACCEPTED).values_list(
            "external_id", flat=True
        )
    )
    assert accepted.isdisjoint(out) and len(accepted) == 36
    for proposal in consultation.proposals.filter(external_id__in=out):
        assert proposal.status == Proposal.Status.REFUSED
        assert proposal.refusal_reason == Proposal.RefusalReason.OTHER


def test_polis_can_skip_moderated_out_comments_and_their_votes(data_dir):
    folder = data_dir / "polis/15-per-hour-seattle"
    with open(folder / "comments.csv", newline="", encoding="utf-8") as f:
        out = {row["comment-id"] for row in csv.DictReader(f) if row["moderated"] == "-1"}
    with open(folder / "votes.csv", newline="", encoding="utf-8") as f:
        votes_on_out = sum(1 for row in csv.DictReader(f) if row["comment-id"] in out)
    consultation = ConsultationFactory()

    report = import_polis(consultation=consultation, path=folder, skip_moderated_out=True)

    assert report.details["comments_moderated_out_skipped"] == len(out) > 0
    assert not consultation.proposals.filter(
        external_id__in=[f"polis:2demo:{c}" for c in out]
    ).exists()
    assert report.details["votes_on_skipped_comments"] == votes_on_out > 0
    assert report.details["vote_rows"] + votes_on_out == 2995 and report.bad_count == 0


def test_polis_reimport_creates_nothing(data_dir):
    consultation = ConsultationFactory()
    import_polis(consultation=consultation, path=data_dir / LONDON)
    votes = stored_votes(consultation)

    again = import_polis(consultation=consultation, path=data_dir / LONDON, batch_size=64)

    assert again.created == 0 and again.existing == 39
    assert again.details["participants_created"] == 0 and again.details["votes_created"] == 0
    assert again.details["votes_updated"] == 0
    assert stored_votes(consultation) == votes
    assert Participant.objects.count() == 26


def test_polis_latest_vote_wins_whatever_the_order_of_the_file(data_dir, tmp_path):
    for name in ("comments.csv", "summary.csv"):
        shutil.copy(data_dir / LONDON / name, tmp_path / name)
    header, rows = read_rows(data_dir / LONDON / "votes.csv")
    random.Random(7).shuffle(rows)
    write_rows(tmp_path / "votes.csv", header, rows)
    consultation = ConsultationFactory()

    import_polis(consultation=consultation, path=tmp_path, batch_size=50)

    expected = latest_votes(data_dir / LONDON / "votes.csv")
    assert stored_votes(consultation) == expected
    assert_counters_match(consultation, expected)


def test_polis_matrix_gives_the_same_votes_when_votes_csv_is_absent(data_dir, tmp_path):
    for name in ("comments.csv", "summary.csv", "participants-votes.csv"):
        shutil.copy(data_dir / LONDON / name, tmp_path / name)
    consultation = ConsultationFactory()

    report = import_polis(consultation=consultation, path=tmp_path, batch_size=100)

    expected = latest_votes(data_dir / LONDON / "votes.csv")
    assert stored_votes(consultation) == expected
    assert_counters_match(consultation, expected)
    assert report.bad_count == 0
    assert import_polis(consultation=consultation, path=tmp_path).details["votes_updated"] == 0


def test_polis_bad_vote_rows_are_reported_and_the_rest_imported(data_dir, tmp_path):
    for name in ("comments.csv", "summary.csv"):
        shutil.copy(data_dir / LONDON / name, tmp_path / name)
    header, rows = read_rows(data_dir / LONDON / "votes.csv")
    rows.insert(3, ["1658933760180", "x", "999", "1", "1"])  # unknown comment
    rows.insert(5, ["1658933760180", "x", "1", "2", "yes"])  # not a vote
    rows.insert(7, ["soon", "x", "1", "3", "1"])  # bad timestamp
    write_rows(tmp_path / "votes.csv", header, rows)
    consultation = ConsultationFactory()

    report = import_polis(consultation=consultation, path=tmp_path)

    assert [(b.row, b.line) for b in report.bad_rows] == [(4, 5), (6, 7), (8, 9)]
    assert all(b.reason.startswith("votes.csv: ") for b in report.bad_rows)
    assert stored_votes(consultation) == latest_votes(data_dir / LONDON / "votes.csv")


def test_polis_attribution_is_added_once_to_the_cause(data_dir):
    consultation = ConsultationFactory()
    import_polis(consultation=consultation, path=data_dir / LONDON)
    import_polis(consultation=consultation, path=data_dir / LONDON)

    attribution = Cause.objects.get(pk=consultation.cause_id).data_attribution
    assert attribution.count(POLIS_ATTRIBUTION) == 1
    assert attribution.count("https://pol.is/9xxwa9jpkm") == 1
    assert "https://compdemocracy.org/case-studies/2022-london-youth-policing" in attribution


# --- Generic CSV -------------------------------------------------------------------------------


def test_csv_import_with_configured_columns_and_delimiter(data_dir, tmp_path):
    header, rows = read_rows(data_dir / GRANDDEBAT, 40)
    renamed = ["answer_id" if h == "id" else "answer" if h == "text" else h for h in header]
    path = write_rows(tmp_path / "answers.csv", renamed, rows, delimiter=";")
    consultation = ConsultationFactory()

    report = import_csv(
        consultation=consultation,
        path=path,
        id_column="answer_id",
        text_column="answer",
        delimiter=";",
        where={"question_code": rows[0][1]},
    )

    kept = [row for row in rows if row[1] == rows[0][1]]
    assert report.created == len(kept) and report.bad_count == 0
    assert report.details.get("filtered_out", 0) == 40 - len(kept)
    proposal = Proposal.objects.get(consultation=consultation, external_id=kept[0][0])
    assert proposal.content == kept[0][3]
    assert proposal.source_stats == {
        "question_code": kept[0][1],
        "theme": kept[0][2],
        "reference_cluster_id": kept[0][4],
    }


# --- Counters ----------------------------------------------------------------------------------


def test_counters_rebuild_sets_exact_counters_and_totals():
    proposal = ProposalFactory()
    other = ProposalFactory()  # another consultation: left alone
    voters = [ParticipantFactory() for _ in range(3)]
    votes = [
        Vote.objects.create(participant=voters[0], proposal=proposal, key=VoteKey.AGREE),
        Vote.objects.create(
            participant=voters[1], proposal=proposal, key=VoteKey.AGREE, trust=Trust.SEQUENCE
        ),
        Vote.objects.create(participant=voters[2], proposal=proposal, key=VoteKey.DISAGREE),
    ]
    Qualification.objects.create(vote=votes[0], vote_key=VoteKey.AGREE, key="like_it")
    ProposalCounter.objects.create(
        proposal=proposal, key=VoteKey.NEUTRAL, trust=Trust.TRUSTED, count=5
    )
    ProposalCounter.objects.create(
        proposal=other, key=VoteKey.NEUTRAL, trust=Trust.TRUSTED, count=5
    )

    counters_rebuild(consultation=proposal.consultation)

    assert {(c.key, c.trust): c.count for c in proposal.counters.all()} == {
        ("agree", "trusted"): 1,
        ("agree", "sequence"): 1,
        ("disagree", "trusted"): 1,
        ("like_it", "trusted"): 1,
    }
    proposal.refresh_from_db()
    assert proposal.votes_total == 3
    assert counters_recount(proposal_ids=[proposal.pk]) == {"counters_fixed": 0, "totals_fixed": 0}
    assert other.counters.get().count == 5


# --- Commands ----------------------------------------------------------------------------------


def test_import_makeorg_command_prints_the_report(makeorg_slice):
    path, _rows = makeorg_slice
    out = StringIO()
    call_command(
        "import_makeorg", str(path), "--consultation", "mda", "--create", "--question", "Comment ?",
        "--attribution", "Make.org, CC0", stdout=out,
    )  # fmt: skip

    text = out.getvalue()
    assert "proposals created: 51" in text
    assert "bad rows: 5" in text and "row 51 (line 52): empty text" in text
    assert "rows/s" in text
    consultation = Consultation.objects.get(slug="mda")
    assert consultation.proposals.count() == 51
    assert consultation.cause.data_attribution == "Make.org, CC0"


def test_a_consultation_made_for_a_polis_import_reads_its_votes_alone(data_dir):
    call_command(
        "import_polis", str(data_dir / LONDON), "--consultation", "london", "--create",
        stdout=StringIO(),
    )  # fmt: skip
    made = Consultation.objects.get(slug="london")
    assert Vote.objects.filter(proposal__consultation=made, in_sequence=False).exists()
    assert not Vote.objects.filter(proposal__consultation=made, in_sequence=True).exists()
    assert made.non_sequence_votes_weight == 1.0
    # an existing consultation keeps the weight its staff chose
    kept = ConsultationFactory(slug="kept", non_sequence_votes_weight=0.3)
    call_command(
        "import_polis", str(data_dir / LONDON), "--consultation", "kept", "--conversation", "k",
        stdout=StringIO(),
    )  # fmt: skip
    kept.refresh_from_db()
    assert kept.non_sequence_votes_weight == 0.3
    # Make.org's proposals come with their figures, not votes: the default weight
    made = consultation_for_import(slug="mda2", create=True, question="Comment ?")[0]
    assert made.non_sequence_votes_weight == 0.5


def test_import_commands_fail_clearly(data_dir, tmp_path):
    ConsultationFactory(slug="known")
    with pytest.raises(CommandError, match="File not found"):
        call_command("import_makeorg", str(tmp_path / "missing.csv"), "--consultation", "known")
    with pytest.raises(CommandError, match="Folder not found"):
        call_command("import_polis", str(tmp_path / "missing"), "--consultation", "known")
    with pytest.raises(CommandError, match="Unknown consultation"):
        call_command("import_polis", str(data_dir / LONDON), "--consultation", "nope")
    with pytest.raises(CommandError, match="lacks the column"):
        call_command(
            "import_csv", str(data_dir / MAKEORG), "--consultation", "new", "--create",
            "--question", "Q ?", "--text-column", "answer", "--limit", "5",
        )  # fmt: skip
    assert not Consultation.objects.filter(slug="new").exists()  # the failed import left nothing


def test_load_demo_is_idempotent(data_dir):
    args = ["--limit", "30", "--polis", "london.youth.policing", "--data-dir", str(data_dir)]
    call_command("load_demo", *args, stdout=StringIO())
    counts = (Proposal.objects.count(), Vote.objects.count(), Participant.objects.count())
    out = StringIO()

    call_command("load_demo", *args, stdout=out)

    assert (Proposal.objects.count(), Vote.objects.count(), Participant.objects.count()) == counts
    assert counts == (30 + 39, 638, 26)
    assert "already there" in out.getvalue()
    polis = Consultation.objects.get(slug="london-youth-policing")
    assert polis.language == "en"
    assert POLIS_ATTRIBUTION in polis.cause.data_attribution
    assert "CC0" in Consultation.objects.get(slug="monde-dapres").cause.data_attribution


@pytest.mark.parametrize("name", ["import_makeorg", "import_polis", "import_csv", "load_demo"])
def test_command_help_renders(name):
    from django.core.management import load_command_class

    command = load_command_class("consultations", name)
    assert "--" in command.create_parser("manage.py", name).format_help()
