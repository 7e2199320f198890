"""Engine services: validation, input hash, one active run per consultation, state changes."""

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from django.db import connection
from django.utils import translation

from consensus import services
from consensus.models import EngineChunk, EngineRun
from consultations.models import Proposal

from ..factories import ConsultationFactory, ProposalFactory, UserFactory
from .engine_data import HASHING, consultation_with_themes

pytestmark = pytest.mark.django_db


@pytest.fixture
def consultation():
    consultation = ConsultationFactory()
    for i in range(5):
        ProposalFactory(
            consultation=consultation, content=f"Il faut plus de bibliothèques ouvertes le soir {i}"
        )
    return consultation


def test_start_creates_one_pending_run_and_enqueues_it_after_commit(
    consultation, django_capture_on_commit_callbacks
):
    user = UserFactory(is_staff=True)
    with django_capture_on_commit_callbacks() as callbacks:
        run = services.engine_run_start(
            consultation=consultation, kind="ideas", user=user, **HASHING
        )

    assert len(callbacks) == 1
    assert run.status == EngineRun.Status.PENDING
    assert run.model_name == "hashing" and run.seed == 0 and run.created_by == user
    assert (
        run.input_count == 5 and run.input_max_id == consultation.proposals.order_by("pk").last().pk
    )
    assert len(run.input_hash) == 64
    # every parameter is stored, defaults filled in
    assert run.parameters["chunk_size"] == 10 and run.parameters["near_threshold"] == 0.95
    assert set(run.parameters) == set(services.PARAMETERS)


def test_default_model_follows_the_consultation_language(django_capture_on_commit_callbacks):
    french = ConsultationFactory(language="fr")
    english = ConsultationFactory(language="en")
    for c in (french, english):
        ProposalFactory(consultation=c)
    assert services.engine_run_start(consultation=french, kind="ideas").model_name == "usem3"
    assert services.engine_run_start(consultation=english, kind="ideas").model_name == "minilm"
    votes_only = ConsultationFactory()
    ProposalFactory(consultation=votes_only)
    assert (
        services.engine_run_start(
            consultation=votes_only, kind="votes", model_name="minilm"
        ).model_name
        == ""
    )


@pytest.mark.parametrize(
    ("parameters", "field"),
    [
        ({"chunk_size": 5}, "chunk_size"),
        ({"chunk_size": "2000"}, "chunk_size"),
        ({"chunk_size": True}, "chunk_size"),
        ({"chunk_size": 2.5}, "chunk_size"),
        ({"near_threshold": float("nan")}, "near_threshold"),
        ({"near_threshold": 1.5}, "near_threshold"),
        ({"method": "kmeans"}, "method"),
        ({"make_current": "yes"}, "make_current"),
        ({"n_keywords": None}, "n_keywords"),
        ({"colour": "blue"}, "colour"),
        ({"noise_reassign_threshold": "sometimes"}, "noise_reassign_threshold"),
        ({"resolution": 0}, "resolution"),
    ],
)
def test_bad_parameters_raise_a_clear_error_and_enqueue_nothing(
    consultation, parameters, field, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks() as callbacks:
        with pytest.raises(services.EngineInputError) as error:
            services.engine_run_start(
                consultation=consultation, parameters=parameters, model_name="hashing"
            )
    assert field in error.value.errors
    assert field in str(error.value)
    assert callbacks == [] and not EngineRun.objects.exists()


def test_clustering_knobs_left_empty_keep_the_engine_defaults():
    from consensus.engine.ideas import ClusterParams

    params = services.engine_parameters_validate({})
    assert services._cluster_params(params, seed=3) == ClusterParams(seed=3)
    chosen = services.engine_parameters_validate(
        {
            "method": services._cluster_methods()[-1],
            "noise_reassign_threshold": "off",
            "min_points": 4,
            "merge_ratio": 0.8,
            "edge_power": 1,
            "ensemble_runs": 3,
            "large_graph": "micro",
            "lexical_weight": 0,
            "persistence_ratio": 1.5,
        }
    )
    built = services._cluster_params(chosen, seed=0)
    assert built.method == services._cluster_methods()[-1]
    assert built.noise_reassign_threshold is None and built.min_points == 4
    assert built.merge_ratio == 0.8 and built.edge_power == 1.0 and built.ensemble_runs == 3
    assert built.large_graph == "micro" and built.lexical_weight == 0
    assert built.persistence_ratio == 1.5
    assert services._cluster_params(
        services.engine_parameters_validate({"persistence_ratio": "off"}), seed=0
    ) == ClusterParams(seed=0, persistence_ratio=None)
    for bad in (
        {"lexical_weight": -0.5},
        {"lexical_weight": 3},
        {"lexical_weight": "words"},
        {"merge_ratio": 2},
        {"edge_power": 0},
        {"edge_power": "sharp"},
        {"ensemble_runs": 0},
        {"ensemble_runs": 51},
        {"ensemble_runs": "many"},
        {"large_graph": "hdbscan"},
        {"large_graph": 1},
        {"persistence_ratio": 0},
        {"persistence_ratio": "wide"},
    ):
        with pytest.raises(services.EngineInputError):
            services.engine_parameters_validate(bad)
    assert (
        services.engine_parameters_validate({"noise_reassign_threshold": "auto"})[
            "noise_reassign_threshold"
        ]
        == "auto"
    )


def test_parameters_must_be_a_mapping(consultation):
    with pytest.raises(services.EngineInputError):
        services.engine_run_start(consultation=consultation, parameters=["chunk_size", 10])


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"kind": "everything"}, "kind"),
        ({"seed": -1}, "seed"),
        ({"seed": "7"}, "seed"),
        ({"seed": 2**40}, "seed"),
        ({"model_name": "gpt-5"}, "model_name"),
        ({"model_name": "st:"}, "model_name"),
        ({"model_name": "hashing-3"}, "model_name"),
    ],
)
def test_bad_kind_seed_or_model_is_refused(consultation, kwargs, field):
    with pytest.raises(services.EngineInputError) as error:
        services.engine_run_start(consultation=consultation, **kwargs)
    assert field in error.value.errors
    assert not EngineRun.objects.exists()


def test_model_names_are_normalised_without_loading_anything():
    assert services.engine_model_name_normalize("USE-M3") == "usem3"
    assert services.engine_model_name_normalize("all-MiniLM-L6-v2") == "minilm"
    assert services.engine_model_name_normalize("hashing-512") == "hashing-512"
    assert services.engine_model_name_normalize("st:/models/mine") == "st:/models/mine"
    assert services.engine_model_name_normalize("", language="en") == "minilm"


def test_a_consultation_without_accepted_proposals_cannot_start():
    consultation = ConsultationFactory()
    ProposalFactory(consultation=consultation, status=Proposal.Status.PENDING)
    with (
        translation.override("en"),
        pytest.raises(services.EngineInputError, match="no accepted proposal"),
    ):
        services.engine_run_start(consultation=consultation, **HASHING)
    assert not EngineRun.objects.exists()


def test_input_hash_follows_texts_seed_and_parameters_only(consultation):
    def digest(**kwargs):
        options = {"kind": "ideas", "parameters": {}, "model_name": "hashing", "seed": 0, **kwargs}
        return services._input_fingerprint(consultation=consultation, **options)[0]

    base = digest()
    assert digest() == base
    assert digest(seed=1) != base
    assert digest(model_name="usem3") != base
    assert digest(parameters={"chunk_size": 10}) != base
    ProposalFactory(
        consultation=consultation, status=Proposal.Status.REFUSED, refusal_reason="test"
    )
    assert digest() == base  # not accepted: not an input
    proposal = consultation.proposals.filter(status="accepted").first()
    Proposal.objects.filter(pk=proposal.pk).update(content=proposal.content + " !")
    assert digest() != base


def test_a_second_start_while_one_is_active_is_refused(consultation):
    first = services.engine_run_start(consultation=consultation, **HASHING)
    with pytest.raises(services.EngineBusy):
        services.engine_run_start(consultation=consultation, **HASHING)
    EngineRun.objects.filter(pk=first.pk).update(status=EngineRun.Status.RUNNING)
    with pytest.raises(services.EngineBusy):
        services.engine_run_start(consultation=consultation, **HASHING)
    EngineRun.objects.filter(pk=first.pk).update(status=EngineRun.Status.FAILED)
    assert services.engine_run_start(consultation=consultation, **HASHING).status == "pending"


def test_other_consultations_are_not_blocked(consultation):
    services.engine_run_start(consultation=consultation, **HASHING)
    other = ConsultationFactory()
    ProposalFactory(consultation=other)
    assert services.engine_run_start(consultation=other, **HASHING).status == "pending"


@pytest.mark.realservices
@pytest.mark.django_db(transaction=True)
def test_two_concurrent_starts_give_one_run():
    consultation = ConsultationFactory()
    for i in range(3):
        ProposalFactory(consultation=consultation, content=f"Il faut des trains de nuit {i}")
    barrier = threading.Barrier(2)
    real_fingerprint = services._input_fingerprint

    def fingerprint(**kwargs):
        result = real_fingerprint(**kwargs)
        barrier.wait(timeout=10)  # both requests passed the "no active run" check
        return result

    def attempt(_):
        try:
            return services.engine_run_start(consultation=consultation, kind="ideas", **HASHING)
        except services.EngineBusy as exc:
            return exc
        finally:
            connection.close()

    from unittest import mock

    with mock.patch.object(services, "_input_fingerprint", side_effect=fingerprint):
        with mock.patch("consensus.tasks.run_engine.delay_on_commit") as enqueue:
            with ThreadPoolExecutor(max_workers=2) as pool:
                results = list(pool.map(attempt, range(2)))

    runs = [r for r in results if isinstance(r, EngineRun)]
    busy = [r for r in results if isinstance(r, services.EngineBusy)]
    assert len(runs) == 1 and len(busy) == 1
    assert EngineRun.objects.filter(consultation=consultation).count() == 1
    enqueue.assert_called_once_with(runs[0].pk)


def test_resume_needs_a_failed_or_cancelled_run_and_keeps_finished_chunks(
    django_capture_on_commit_callbacks,
):
    consultation = consultation_with_themes()
    run = services.engine_run_start(consultation=consultation, kind="ideas", **HASHING)
    with pytest.raises(services.EngineStateError):
        services.engine_run_resume(run=run)
    services.engine_run_begin(run_id=run.pk)
    EngineChunk.objects.filter(run=run, number__lt=2).update(done_at="2026-01-01T00:00:00Z")
    services.engine_run_fail(run_id=run.pk, error="boom")

    with django_capture_on_commit_callbacks() as callbacks:
        services.engine_run_resume(run=run)
    assert len(callbacks) == 1
    assert run.status == EngineRun.Status.PENDING and run.error == ""
    assert services.engine_run_begin(run_id=run.pk) == list(
        EngineChunk.objects.filter(run=run, number__gte=2)
        .order_by("number")
        .values_list("lo_id", "hi_id")
    )
    run.refresh_from_db()
    assert run.done_chunks == 2 and run.total_chunks == 5


def test_resume_is_refused_while_another_run_is_active(consultation):
    failed = services.engine_run_start(consultation=consultation, **HASHING)
    services.engine_run_fail(run_id=failed.pk, error="boom")
    services.engine_run_start(consultation=consultation, **HASHING)
    with pytest.raises(services.EngineBusy):
        services.engine_run_resume(run=failed)


def test_fail_and_cancel_only_touch_active_runs(consultation):
    run = services.engine_run_start(consultation=consultation, **HASHING)
    assert services.engine_run_cancel(run=run) is True
    assert services.engine_run_fail(run_id=run.pk, error="late") is False
    run.refresh_from_db()
    assert run.status == EngineRun.Status.CANCELLED and run.error == ""
    assert services.engine_run_cancel(run=run) is False


def test_make_current_publishes_a_done_run_and_rolls_back(consultation):
    older = services.engine_run_start(consultation=consultation, **HASHING)
    EngineRun.objects.filter(pk=older.pk).update(status=EngineRun.Status.DONE)
    newer = services.engine_run_start(consultation=consultation, **HASHING)
    with pytest.raises(services.EngineStateError):
        services.engine_run_make_current(run=newer)
    EngineRun.objects.filter(pk=newer.pk).update(status=EngineRun.Status.DONE)

    services.engine_run_make_current(run=newer)
    consultation.refresh_from_db()
    assert consultation.current_run_id == newer.pk
    services.engine_run_make_current(run=older)
    consultation.refresh_from_db()
    assert consultation.current_run_id == older.pk


def test_prune_keeps_recent_current_and_active_runs(consultation):
    runs = []
    for _ in range(4):
        run = services.engine_run_start(consultation=consultation, **HASHING)
        EngineRun.objects.filter(pk=run.pk).update(status=EngineRun.Status.DONE)
        runs.append(run)
    services.engine_run_make_current(run=runs[0])
    active = services.engine_run_start(consultation=consultation, **HASHING)

    assert services.engine_runs_prune(consultation=consultation, keep=2) == 1
    left = set(EngineRun.objects.values_list("pk", flat=True))
    assert left == {runs[0].pk, runs[2].pk, runs[3].pk, active.pk}


def test_the_binary_copy_loader_reads_the_same_votes_as_the_orm():
    from .engine_data import add_votes

    if connection.vendor != "postgresql":
        pytest.skip("binary COPY needs PostgreSQL")
    themed = consultation_with_themes()
    add_votes(themed, n_participants=30, untrusted=4)
    fast = services._vote_triples_copy(themed.pk)
    slow = services._vote_triples_orm(themed.pk)
    assert fast[0].shape[0] == slow[0].shape[0] > 0
    order_fast = np.lexsort((fast[1], fast[0]))
    order_slow = np.lexsort((slow[1], slow[0]))
    for a, b in zip(fast, slow, strict=True):
        np.testing.assert_array_equal(a[order_fast], b[order_slow])
    assert set(np.unique(fast[2])) <= {-1, 0, 1}


def test_the_binary_projection_copy_writes_groups_nulls_and_positions():
    from types import SimpleNamespace

    from consensus.models import ParticipantProjection

    from ..factories import ParticipantFactory

    if connection.vendor != "postgresql":
        pytest.skip("binary COPY needs PostgreSQL")
    themed = consultation_with_themes()
    run = EngineRun.objects.create(consultation=themed, kind="votes", status="running")
    people = [ParticipantFactory() for _ in range(5)]
    ids = np.array([p.pk for p in people], dtype=np.int64)
    result = SimpleNamespace(
        labels=np.array([0, -1, 3, 1, -1]),
        positions=np.array([[0.5, -1.25], [1e-9, 2.0], [-3.5, 0.0], [7.0, 8.0], [0.0, -0.0]]),
        in_conv=np.array([True, False, True, True, False]),
    )
    services._copy_projections(run.pk, ids, result)
    got = {
        row[0]: row[1:]
        for row in ParticipantProjection.objects.filter(run=run).values_list(
            "participant_id", "x", "y", "group", "in_conv"
        )
    }
    assert got == {
        int(ids[i]): (
            float(result.positions[i, 0]),
            float(result.positions[i, 1]),
            None if result.labels[i] < 0 else int(result.labels[i]),
            bool(result.in_conv[i]),
        )
        for i in range(5)
    }


@pytest.mark.parametrize("language", ["fr", "en"])
def test_ideas_are_labelled_with_the_word_forms_of_the_consultation_language(
    language, django_capture_on_commit_callbacks
):
    from unittest import mock

    from consensus.engine import ideas

    consultation = consultation_with_themes(language=language)
    with (
        mock.patch.object(ideas, "top_keywords", wraps=ideas.top_keywords) as keywords,
        django_capture_on_commit_callbacks(execute=True),
    ):
        run = services.engine_run_start(consultation=consultation, kind="ideas", **HASHING)
    run.refresh_from_db()
    assert run.status == EngineRun.Status.DONE, run.error
    assert keywords.call_args.kwargs["language"] == language
    assert all(idea.keywords for idea in run.ideas.all())


@pytest.mark.parametrize("path", ["database", "orm"])
def test_load_vectors_reads_the_runs_rows_in_id_order_with_their_texts(path, monkeypatch):
    """The final step's read (a binary COPY on PostgreSQL, the ORM elsewhere, forced here by the
    "orm" case): the run's rows only, in proposal id order across batches, each vector with its
    own text, texts that COPY must escape coming back as written."""
    from consensus.models import ProposalEmbedding

    if path == "orm":
        monkeypatch.setattr(connection, "vendor", "orm")
    monkeypatch.setattr(services, "READ_BATCH", 2)
    consultation = ConsultationFactory()
    texts = [
        "Il faut\tdes tabulations",
        "Il faut des lignes\net des retours\r\n",
        "Il faut un \\N et des \\\\ barres",
        "Il faut des « guillemets » et des 'apostrophes' 😀",
        "Il faut plus de vélos",
    ]
    proposals = [ProposalFactory(consultation=consultation, content=t) for t in texts]
    done = EngineRun.Status.DONE
    run = EngineRun.objects.create(consultation=consultation, kind="ideas", status=done)
    other = EngineRun.objects.create(consultation=consultation, kind="ideas", status=done)
    for i in (3, 0, 4, 1, 2):  # stored out of order
        vector = np.full(8, i, dtype=np.float16).tobytes()
        ProposalEmbedding.objects.create(run=run, proposal=proposals[i], vector=vector)
        ProposalEmbedding.objects.create(run=other, proposal=proposals[i], vector=vector[:8])

    ids, read, x = services._load_vectors(run)

    assert ids.tolist() == [p.pk for p in proposals]
    assert read == texts
    assert x.dtype == np.float16 and x.shape == (5, 8)
    assert x[:, 0].tolist() == [0, 1, 2, 3, 4] and (x == x[:, :1]).all()
