"""Open-data exports: content, privacy (no author data, private consultations, k-anonymity), formats."""

import csv
import io

import pyarrow.parquet as pq
import pytest
from django.urls import reverse
from django.utils import timezone

from causes.models import Cause
from consensus.models import EngineRun, Idea, IdeaMembership, OpinionGroup, ProposalScore, Theme
from consultations import exports
from consultations.models import Participant, Proposal, Trust, Vote, VoteKey
from consultations.services import counters_rebuild
from tests.factories import (
    CauseFactory,
    ConsultationFactory,
    ParticipantFactory,
    ProposalFactory,
    UserFactory,
)

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("english")]


def export_url(consultation, dataset, fmt="csv", **query):
    url = reverse("api:export", kwargs={"slug": consultation.slug, "dataset": dataset, "fmt": fmt})
    if query:
        url += "?" + "&".join(f"{k}={v}" for k, v in query.items())
    return url


def read_csv(response):
    assert response.status_code == 200, response.content
    body = b"".join(response.streaming_content).decode()
    return list(csv.DictReader(io.StringIO(body)))


def read_parquet(response):
    assert response.status_code == 200
    return pq.read_table(io.BytesIO(b"".join(response.streaming_content)))


def add_votes(proposal, keys, *, trust=Trust.TRUSTED, gender=""):
    for key in keys:
        participant = ParticipantFactory(gender=gender)
        Vote.objects.create(participant=participant, proposal=proposal, key=key, trust=trust)


@pytest.fixture
def published():
    """A public consultation with accepted, pending and refused proposals, votes and a run."""
    consultation = ConsultationFactory()
    user = UserFactory(email="author@example.org", display_name="Secret Author")
    accepted = [
        ProposalFactory(consultation=consultation, author=user, author_name="Secret Author", author_age=42),
        ProposalFactory(consultation=consultation, content="=HYPERLINK(\"http://x\")"),
    ]
    pending = ProposalFactory(consultation=consultation, status=Proposal.Status.PENDING)
    refused = ProposalFactory(
        consultation=consultation,
        status=Proposal.Status.REFUSED,
        refusal_reason=Proposal.RefusalReason.OFF_TOPIC,
    )
    add_votes(accepted[0], [VoteKey.AGREE] * 3 + [VoteKey.DISAGREE])
    add_votes(accepted[0], [VoteKey.NEUTRAL], trust=Trust.UNTRUSTED)
    add_votes(accepted[1], [VoteKey.DISAGREE] * 2)
    add_votes(pending, [VoteKey.AGREE])
    counters_rebuild(consultation=consultation)
    run = EngineRun.objects.create(
        consultation=consultation, status=EngineRun.Status.DONE, finished_at=timezone.now()
    )
    idea = Idea.objects.create(
        run=run,
        consultation=consultation,
        number=0,
        label="Open museums",
        keywords=["museum", "evening"],
        theme=Theme.objects.create(run=run, number=0, label="Culture", keywords=["museum"]),
        size=2,
        share=1.0,
        scores={"zone": "consensus", "agreement": 0.7, "trusted_votes": 6},
    )
    for i, proposal in enumerate([*accepted, refused]):
        IdeaMembership.objects.create(run=run, idea=idea, proposal=proposal, similarity=0.9 - i / 10)
        ProposalScore.objects.create(
            run=run,
            proposal=proposal,
            zone="consensus",
            n_trusted=4,
            agreement=0.6,
            disagreement=0.2,
            neutral=0.2,
            top_score=0.5 - i / 10,
            top_score_lower=0.3,
            top_score_upper=0.7,
            controversy=0.1,
            rejection=0.1,
        )
    consultation.current_run = run
    consultation.save(update_fields=["current_run"])
    return {"consultation": consultation, "accepted": accepted, "pending": pending, "refused": refused, "run": run}


def test_proposals_export_has_accepted_proposals_only_and_no_author_data(client, published):
    rows = read_csv(client.get(export_url(published["consultation"], "proposals")))
    assert [int(r["proposal_id"]) for r in rows] == [p.pk for p in published["accepted"]]
    header = set(rows[0])
    assert not header & {"author", "author_id", "author_name", "author_age", "source_stats"}
    body = str(rows)
    assert "Secret Author" not in body and "author@example.org" not in body and "42" not in rows[0].values()


def test_csv_defuses_spreadsheet_formulas_but_parquet_keeps_the_text(client, published):
    formula = published["accepted"][1].content
    rows = read_csv(client.get(export_url(published["consultation"], "proposals")))
    assert rows[1]["content"] == "'" + formula
    table = read_parquet(client.get(export_url(published["consultation"], "proposals", "parquet")))
    assert table.column("content").to_pylist()[1] == formula


def test_votes_export_counts_per_accepted_proposal(client, published):
    rows = read_csv(client.get(export_url(published["consultation"], "votes")))
    first, second = published["accepted"]
    by_id = {int(r["proposal_id"]): r for r in rows}
    assert set(by_id) == {first.pk, second.pk}
    assert (by_id[first.pk]["agree"], by_id[first.pk]["disagree"], by_id[first.pk]["neutral"]) == ("3", "1", "1")
    assert by_id[first.pk]["total"] == "5"
    # The untrusted neutral vote is not among the scored ones.
    assert by_id[first.pk]["scored_neutral"] == "0" and by_id[first.pk]["scored_agree"] == "3"
    assert by_id[second.pk]["disagree"] == "2" and by_id[second.pk]["agree"] == "0"


def test_run_datasets_leave_out_proposals_no_longer_accepted(client, published):
    consultation = published["consultation"]
    accepted_ids = {p.pk for p in published["accepted"]}
    scores = read_csv(client.get(export_url(consultation, "scores")))
    assert {int(r["proposal_id"]) for r in scores} == accepted_ids
    assert {r["run_id"] for r in scores} == {str(published["run"].pk)}
    memberships = read_csv(client.get(export_url(consultation, "memberships")))
    assert {int(r["proposal_id"]) for r in memberships} == accepted_ids
    ideas = read_csv(client.get(export_url(consultation, "ideas")))
    assert ideas[0]["label"] == "Open museums" and ideas[0]["keywords"] == "museum; evening"
    assert ideas[0]["zone"] == "consensus"
    assert (ideas[0]["theme_number"], ideas[0]["theme_label"]) == ("0", "Culture")


def test_groups_export_has_a_row_per_accepted_proposal_and_opinion_group(client, published):
    run, (first, second), refused = published["run"], published["accepted"], published["refused"]
    OpinionGroup.objects.create(run=run, number=0, size=12)
    OpinionGroup.objects.create(run=run, number=1, size=9)
    ProposalScore.objects.filter(run=run, proposal=first).update(group_counts=[[3, 1, 5], [0, 2, 2]])
    ProposalScore.objects.filter(run=run, proposal=refused).update(group_counts=[[1, 0, 1], [0, 0, 0]])
    rows = read_csv(client.get(export_url(published["consultation"], "groups")))
    # the second proposal has no counts (scored before the run had groups): no row; the
    # refused one is not published
    assert [(int(r["proposal_id"]), r["group"], r["group_participants"]) for r in rows] == [
        (first.pk, "1", "12"),
        (first.pk, "2", "9"),
    ]
    assert [(r["agree"], r["disagree"], r["votes"]) for r in rows] == [("3", "1", "5"), ("0", "2", "2")]
    assert {r["run_id"] for r in rows} == {str(run.pk)}
    assert second.pk not in {int(r["proposal_id"]) for r in rows}


@pytest.mark.parametrize("dataset", sorted(set(exports.DATASETS) - {"segments"}))
def test_parquet_and_csv_have_the_same_rows(client, published, dataset):
    consultation = published["consultation"]
    rows = read_csv(client.get(export_url(consultation, dataset)))
    table = read_parquet(client.get(export_url(consultation, dataset, "parquet")))
    assert table.num_rows == len(rows)
    assert table.column_names == [c.name for c in exports.DATASETS[dataset].columns]


def test_parquet_is_written_in_row_groups():
    columns = exports.DATASETS["memberships"].columns
    rows = ((1, i, 0, 0.5, True) for i in range(2_500))
    chunks = list(exports.parquet_stream(columns, rows, row_group_size=1_000))
    # One chunk per full group as soon as it is written, then the last group with the footer.
    assert len(chunks) == 3 and all(chunks)
    parquet = pq.ParquetFile(io.BytesIO(b"".join(chunks)))
    assert parquet.num_row_groups == 3
    assert parquet.read().column("proposal_id").to_pylist() == list(range(2_500))


def test_run_datasets_are_404_before_any_published_run(client):
    consultation = ConsultationFactory()
    ProposalFactory(consultation=consultation)
    for dataset in ("ideas", "memberships", "scores", "groups"):
        response = client.get(export_url(consultation, dataset))
        assert response.status_code == 404
        assert "no published results" in response.json()["error"]["message"]
    assert len(read_csv(client.get(export_url(consultation, "proposals")))) == 1


@pytest.mark.parametrize(
    ("dataset", "fmt", "query", "status"),
    [
        ("nope", "csv", {}, 404),
        ("proposals", "xlsx", {}, 404),
        ("segments", "csv", {}, 400),
        ("segments", "csv", {"dimension": "religion"}, 400),
    ],
)
def test_bad_export_requests_get_a_json_error(client, published, dataset, fmt, query, status):
    response = client.get(export_url(published["consultation"], dataset, fmt, **query))
    assert response.status_code == status
    assert response["Content-Type"] == "application/json"
    assert response.json()["error"]["status"] == status


def test_private_consultation_is_exported_to_members_only(client):
    cause = CauseFactory(kind=Cause.Kind.PRIVATE_CONSULTATION)
    consultation = ConsultationFactory(cause=cause)
    ProposalFactory(consultation=consultation, content="Il faut un secret bien gardé")
    url = export_url(consultation, "proposals")
    assert client.get(url).status_code == 404  # anonymous
    outsider = UserFactory()
    client.force_login(outsider)
    response = client.get(url)
    assert response.status_code == 404
    assert b"secret" not in response.content
    member = UserFactory()
    cause.members.add(member)
    client.force_login(member)
    response = client.get(url)
    rows = read_csv(response)
    assert rows[0]["content"] == "Il faut un secret bien gardé"
    assert "no-store" in response["Cache-Control"]


def test_draft_cause_is_not_exported(client):
    consultation = ConsultationFactory(cause=CauseFactory(status=Cause.Status.DRAFT))
    ProposalFactory(consultation=consultation)
    assert client.get(export_url(consultation, "proposals")).status_code == 404


@pytest.mark.parametrize("proposals_per_query", [1, 10_000])
def test_segments_suppress_small_cells_and_the_cell_that_would_reveal_them(
    client, settings, monkeypatch, proposals_per_query
):
    settings.CONSENSUS_MIN_SEGMENT_SIZE = 3
    monkeypatch.setattr(exports, "SEGMENT_SLICE", proposals_per_query)
    consultation = ConsultationFactory()
    proposal = ProposalFactory(consultation=consultation)
    add_votes(proposal, [VoteKey.AGREE] * 5, gender=Participant.Gender.FEMALE)
    add_votes(proposal, [VoteKey.DISAGREE] * 3 + [VoteKey.AGREE], gender=Participant.Gender.MALE)
    add_votes(proposal, [VoteKey.AGREE], gender=Participant.Gender.OTHER)  # 1 < k
    add_votes(proposal, [VoteKey.AGREE] * 4, gender="")  # no gender: in no segment
    add_votes(proposal, [VoteKey.AGREE] * 5, gender=Participant.Gender.MALE, trust=Trust.UNTRUSTED)
    other = ProposalFactory(consultation=consultation)
    add_votes(other, [VoteKey.AGREE] * 3, gender=Participant.Gender.FEMALE)
    add_votes(other, [VoteKey.DISAGREE] * 4, gender=Participant.Gender.MALE)
    add_votes(other, [VoteKey.NEUTRAL] * 3, gender=Participant.Gender.OTHER)

    rows = read_csv(client.get(export_url(consultation, "segments", dimension="gender")))
    cells = {(int(r["proposal_id"]), r["segment"]): r for r in rows}
    # "o" has 1 participant: suppressed; the smallest published cell ("m", 4) goes too, so that
    # "o" cannot be recomputed from the proposal's totals; "f" (5) stays.
    assert set(cells) == {(proposal.pk, "f"), (other.pk, "f"), (other.pk, "m"), (other.pk, "o")}
    f = cells[(proposal.pk, "f")]
    assert (f["participants"], f["agree"], f["disagree"], f["agreement"]) == ("5", "5", "0", "1.0")
    assert all(int(r["participants"]) >= 3 for r in rows)
    assert {r["dimension"] for r in rows} == {"gender"}


def test_suppress_keeps_everything_when_no_cell_is_small():
    cells = [["a", 10, 5, 5, 0], ["b", 12, 6, 6, 0]]
    assert exports._suppress(cells, 10) == cells
    assert exports._suppress([["a", 3, 3, 0, 0], ["b", 4, 0, 4, 0]], 10) == []
    # Suppressed cells already adding up to k need no secondary suppression.
    cells = [["a", 6, 0, 0, 6], ["b", 6, 0, 0, 6], ["c", 20, 10, 10, 0]]
    assert exports._suppress(cells, 10) == [["c", 20, 10, 10, 0]]


def test_exports_stream_without_loading_the_table(published, django_assert_max_num_queries):
    """The response body is an iterator: nothing is read before the first chunk is asked for."""
    chunks, content_type, filename = exports.export_stream(
        consultation=published["consultation"], dataset="proposals", fmt="csv"
    )
    assert content_type.startswith("text/csv") and filename.endswith("-proposals.csv")
    assert not isinstance(chunks, list | tuple)
    with django_assert_max_num_queries(3):
        body = "".join(chunks)
    assert body.count("\n") == 1 + len(published["accepted"])
