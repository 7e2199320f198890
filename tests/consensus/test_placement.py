"""Staff move proposals between the ideas of the published run, and the next runs keep the move."""

import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from unittest import mock

import numpy as np
import pytest
from django.db import connection
from django.db.models import Sum
from django.urls import reverse
from django.utils import translation

from accounts.models import AuditEntry
from consensus import selectors, services, tasks
from consensus.engine import ideas as engine_ideas
from consensus.engine.compare import compare_runs
from consensus.models import EngineRun, Idea, IdeaMembership, IdeaPlacement, ProposalEmbedding
from consensus.tasks import engine_nightly, refresh_ideas
from consultations.models import Proposal

from ..factories import ProposalFactory, UserFactory
from .engine_data import HASHING, add_votes, consultation_with_themes
from .test_tasks import idea_with_keyword, run_labelling, start

pytestmark = pytest.mark.django_db


@pytest.fixture
def themed():
    consultation = consultation_with_themes()
    add_votes(consultation)
    return consultation


def members(idea):
    return set(IdeaMembership.objects.filter(idea=idea).values_list("proposal_id", flat=True))


def a_member(idea):
    """A member of the idea that is not its label (so the label stays what it was)."""
    return (
        IdeaMembership.objects.filter(idea=idea)
        .exclude(proposal__content=idea.label)
        .order_by("proposal_id")
        .values_list("proposal_id", flat=True)
        .first()
    )


def test_a_moved_proposal_changes_idea_and_the_next_run_keeps_it_there(
    themed, django_capture_on_commit_callbacks
):
    first = start(themed, django_capture_on_commit_callbacks)
    cycling, museums = idea_with_keyword(first, "cyclables"), idea_with_keyword(first, "musées")
    votes_before = museums.scores["trusted_votes"]
    moved = a_member(cycling)
    staff = UserFactory(is_staff=True)

    with django_capture_on_commit_callbacks(execute=True):  # the idea scores task runs
        n = services.proposals_place(
            run=first, proposal_ids=[moved], number=museums.number, actor=staff
        )

    assert n == 1
    membership = IdeaMembership.objects.get(run=first, proposal_id=moved)
    assert membership.idea_id == museums.pk and not membership.is_central
    assert -1.0 <= membership.similarity <= 1.0 and membership.similarity != 0.0
    cycling_after, museums_after = Idea.objects.get(pk=cycling.pk), Idea.objects.get(pk=museums.pk)
    assert (cycling_after.size, museums_after.size) == (cycling.size - 1, museums.size + 1)
    assert museums_after.share == pytest.approx(museums_after.size / 48)
    assert museums_after.scores["trusted_votes"] > votes_before  # its votes came along
    placement = IdeaPlacement.objects.get(run=first, proposal_id=moved)
    assert placement.placed_by == staff
    entry = AuditEntry.objects.get(action="idea.proposals_placed")
    assert entry.before["ideas"] == {str(moved): cycling.number}
    assert entry.after == {"idea": museums.number, "proposals": [moved]}

    # The next run clusters the text with the cycling ideas again; the staff choice wins.
    second = start(themed, django_capture_on_commit_callbacks)
    museums_2 = idea_with_keyword(second, "musées")
    assert moved in members(museums_2)
    assert museums_2.size == len(members(museums_2)) == museums_after.size
    assert second.metrics["staff_placements_kept"] == 1
    assert second.metrics["staff_placements_stopped"] == 0
    # the name staff gave the merged idea goes with it (matched once the placements are carried)
    assert IdeaPlacement.objects.get(run=second, proposal_id=moved).placed_by == staff
    # and a votes-only run after it copies the placements with the ideas
    votes = start(themed, django_capture_on_commit_callbacks, kind="votes")
    assert IdeaPlacement.objects.filter(run=votes, proposal_id=moved).exists()


def test_a_proposal_put_in_no_idea_stays_out_and_can_come_back(
    themed, django_capture_on_commit_callbacks
):
    first = start(themed, django_capture_on_commit_callbacks, kind="ideas")
    trees = idea_with_keyword(first, "arbres")
    out = a_member(trees)

    assert services.proposals_place(run=first, proposal_ids=[out], number=None) == 1
    assert not IdeaMembership.objects.filter(run=first, proposal_id=out).exists()
    assert Idea.objects.get(pk=trees.pk).size == trees.size - 1

    second = start(themed, django_capture_on_commit_callbacks, kind="ideas")
    assert not IdeaMembership.objects.filter(run=second, proposal_id=out).exists()
    assert second.metrics["n_noise"] == first.metrics["n_noise"] + 1

    # Back into the trees idea of the new run, from the proposals in no idea.
    trees_2 = idea_with_keyword(second, "arbres")
    assert services.proposals_place(run=second, proposal_ids=[out], number=trees_2.number) == 1
    assert out in members(trees_2)
    # Already there: nothing moves, and the choice is still recorded.
    assert services.proposals_place(run=second, proposal_ids=[out], number=trees_2.number) == 0
    assert IdeaPlacement.objects.filter(run=second, proposal_id=out).count() == 1
    # two proposals from two ideas in one move: each loses one, the target gains both
    cycling_2, museums_2 = (
        idea_with_keyword(second, "cyclables"),
        idea_with_keyword(second, "musées"),
    )
    pair = [a_member(cycling_2), a_member(museums_2)]
    before = dict(Idea.objects.filter(run=second).values_list("pk", "size"))
    assert services.proposals_place(run=second, proposal_ids=pair, number=trees_2.number) == 2
    after = dict(Idea.objects.filter(run=second).values_list("pk", "size"))
    assert after == {
        **before,
        cycling_2.pk: before[cycling_2.pk] - 1,
        museums_2.pk: before[museums_2.pk] - 1,
        trees_2.pk: before[trees_2.pk] + 2,
    }
    assert Idea.objects.get(pk=trees_2.pk).share == pytest.approx(after[trees_2.pk] / 48)


def test_a_placement_follows_the_larger_part_of_its_split_idea_and_stops_when_it_disappears(
    themed, django_capture_on_commit_callbacks
):
    base = start(themed, django_capture_on_commit_callbacks, kind="ideas")
    cycling = idea_with_keyword(base, "cyclables")
    placed = a_member(cycling)
    kept_out = a_member(idea_with_keyword(base, "arbres"))
    services.proposals_place(run=base, proposal_ids=[placed], number=cycling.number)
    services.proposals_place(run=base, proposal_ids=[kept_out], number=None)
    after = start(themed, django_capture_on_commit_callbacks, kind="ideas")
    cycling_after = idea_with_keyword(after, "cyclables").number

    # the cycling idea splits in two: its first half (the placed proposal among it) goes to the
    # museums idea, the other half stays; the placed proposal follows the half holding most of
    # the idea's other proposals
    ids, labels = run_labelling(after, split=True)
    row = list(ids).index(placed)
    assert labels[row] != cycling_after
    # as if this run had put the proposal kept out into the trees idea again
    ids = np.append(ids, kept_out)
    labels = np.append(labels, idea_with_keyword(after, "arbres").number)
    comparison = compare_runs(*services._base_members(base), ids, labels)
    assert cycling.number not in comparison.successor  # it split
    kept, stopped, created = services._carry_placements(
        base, comparison, ids, labels, first_new=int(labels.max()) + 1
    )
    assert stopped == 0 and created == {}
    assert sorted(r[0] for r in kept) == sorted([placed, kept_out])
    assert labels[row] == cycling_after
    assert labels[list(ids).index(kept_out)] == -1  # "in no idea" always holds

    # the cycling idea disappears (its proposals in no idea): no idea to follow, it stops
    ids, labels = run_labelling(after)
    labels[labels == cycling_after] = -1
    comparison = compare_runs(*services._base_members(base), ids, labels)
    kept, stopped, _created = services._carry_placements(
        base, comparison, ids, labels, first_new=int(labels.max()) + 1
    )
    assert stopped == 1 and placed not in [r[0] for r in kept]


def test_staff_split_proposals_out_into_a_new_idea_that_the_next_runs_keep(
    themed, django_capture_on_commit_callbacks
):
    first = start(themed, django_capture_on_commit_callbacks)
    cycling = idea_with_keyword(first, "cyclables")
    two = sorted(members(cycling) - {a_member_named(cycling)})[:2]
    top = max(Idea.objects.filter(run=first).values_list("number", flat=True))
    staff = UserFactory(is_staff=True)

    with django_capture_on_commit_callbacks(execute=True):  # the refresh describes it
        split, moved = services.idea_split(run=first, proposal_ids=two, actor=staff)

    assert moved == 2 and split.number == top + 1
    split.refresh_from_db()
    assert split.created_by_staff and not split.named_by_staff and not split.members_changed
    assert members(split) == set(two) and (split.size, split.share) == (2, pytest.approx(2 / 48))
    assert Idea.objects.get(pk=cycling.pk).size == cycling.size - 2
    assert split.label in Proposal.objects.filter(pk__in=two).values_list("content", flat=True)
    assert "cyclables" in split.keywords  # described from its own words
    assert split.centroid is not None
    assert cycling.theme_id and split.theme_id == cycling.theme_id  # its proposals' theme
    assert set(
        IdeaPlacement.objects.filter(run=first, placed_by=staff).values_list(
            "proposal_id", flat=True
        )
    ) == set(two)
    entry = AuditEntry.objects.get(action="idea.split")
    assert entry.after == {"idea": split.number, "proposals": two}
    services.idea_label_set(idea=split, label="Des pistes cyclables sûres", actor=staff)

    # The engine alone puts them back with the cycling proposals; the split stays an idea of
    # its own, with its name, numbered after the engine's ideas of the new run.
    second = start(themed, django_capture_on_commit_callbacks)
    (again,) = {m.idea for m in IdeaMembership.objects.filter(run=second, proposal_id__in=two)}
    assert members(again) == set(two)
    assert again.created_by_staff and again.number == second.metrics["n_ideas"] - 1
    assert (again.label, again.named_by_staff) == ("Des pistes cyclables sûres", True)
    assert again.theme.run_id == second.pk  # the run's themes group it with the others
    assert second.metrics["staff_placements_kept"] == 2
    again.refresh_from_db()
    assert not again.members_changed and "cyclables" in again.keywords
    assert IdeaMembership.objects.filter(idea=again).exclude(similarity=0).count() == 2
    # and the run after that, and a votes-only run, keep it too
    third = start(themed, django_capture_on_commit_callbacks)
    (kept,) = {m.idea for m in IdeaMembership.objects.filter(run=third, proposal_id__in=two)}
    assert kept.created_by_staff and members(kept) == set(two)
    votes = start(themed, django_capture_on_commit_callbacks, kind="votes")
    assert Idea.objects.get(run=votes, number=kept.number).created_by_staff


def test_the_refresh_recomputes_the_vote_figures_of_the_ideas_it_describes_only(
    themed, django_capture_on_commit_callbacks
):
    run = start(themed, django_capture_on_commit_callbacks)
    trees, cycling = idea_with_keyword(run, "arbres"), idea_with_keyword(run, "cyclables")
    others = dict(Idea.objects.exclude(pk__in=[trees.pk, cycling.pk]).values_list("pk", "scores"))
    with django_capture_on_commit_callbacks(execute=True):  # the merge, then its one refresh
        services.idea_merge(run_id=run.pk, idea_id=trees.pk, into_id=cycling.pk)
    scoped = dict(Idea.objects.filter(run=run).values_list("pk", "scores"))
    assert scoped[trees.pk]["trusted_votes"] == 0 and scoped[trees.pk]["consensus_share"] is None
    assert scoped[cycling.pk]["trusted_votes"] == (
        trees.scores["trusted_votes"] + cycling.scores["trusted_votes"]
    )
    assert {pk: scoped[pk] for pk in others} == others  # the other ideas keep theirs
    # the figures of every idea computed afresh are the same: each idea's come from its members
    Idea.objects.filter(run=run).update(scores={})
    services._idea_aggregates(run)
    assert dict(Idea.objects.filter(run=run).values_list("pk", "scores")) == scoped


def a_member_named(idea):
    """The member the idea is named after (left where it is, so the idea keeps its label)."""
    return (
        IdeaMembership.objects.filter(idea=idea, proposal__content=idea.label)
        .values_list("proposal_id", flat=True)
        .first()
    )


def test_a_split_refuses_bad_input_and_leaves_no_idea_behind(
    themed, django_capture_on_commit_callbacks
):
    run = start(themed, django_capture_on_commit_callbacks, kind="ideas")
    cycling = idea_with_keyword(run, "cyclables")
    mine = a_member(cycling)
    pending = ProposalFactory(consultation=themed, status=Proposal.Status.PENDING)
    before = Idea.objects.count()
    for proposal_ids, message in (
        ([], "at least one proposal"),
        (["abc"], "given by their numbers"),
        ([mine, pending.pk], "not an accepted proposal"),
        ([mine, 10**9], "not an accepted proposal"),
        (list(range(1, services.PLACE_MAX + 2)), "At most"),
    ):
        with translation.override("en"), pytest.raises(services.EngineInputError, match=message):
            services.idea_split(run=run, proposal_ids=proposal_ids)
    assert Idea.objects.count() == before
    assert members(cycling) == members(Idea.objects.get(pk=cycling.pk))
    assert not IdeaPlacement.objects.exists()

    start(themed, django_capture_on_commit_callbacks, kind="ideas")  # published instead
    n_ideas = Idea.objects.filter(run=run).count()
    with translation.override("en"), pytest.raises(services.EngineStateError, match="published"):
        services.idea_split(run=run, proposal_ids=[mine])
    assert Idea.objects.filter(run=run).count() == n_ideas
    assert not Idea.objects.filter(created_by_staff=True).exists()


@pytest.mark.realservices
def test_a_run_leaves_fresh_planner_statistics_for_what_it_wrote(
    themed, django_capture_on_commit_callbacks
):
    start(themed, django_capture_on_commit_callbacks)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT reltuples FROM pg_class WHERE oid = %s::regclass",
            [IdeaMembership._meta.db_table],
        )
        assert cursor.fetchone()[0] == IdeaMembership.objects.count() == 48


def published_run():
    """The themes consultation's ideas run, done and published (eager Celery runs it when its
    start commits)."""
    themed = consultation_with_themes()
    run = services.engine_run_start(consultation=themed, kind="ideas", **HASHING)
    run.refresh_from_db()
    assert run.status == EngineRun.Status.DONE, run.error
    return run


def two_at_once(attempt, items):
    """``attempt(item)`` for both items in two threads that start together; each move holds its
    transaction open 0.3 s, so the second arrives while the first holds its locks."""
    barrier = threading.Barrier(2)
    real_move = services._move_memberships

    def slow_move(*args, **kwargs):
        time.sleep(0.3)
        return real_move(*args, **kwargs)

    def one(item):
        try:
            barrier.wait(timeout=10)
            return attempt(item)
        finally:
            connection.close()

    with mock.patch.object(services, "_move_memberships", side_effect=slow_move):
        with ThreadPoolExecutor(max_workers=2) as pool:
            return list(pool.map(one, items))


@pytest.mark.realservices
@pytest.mark.django_db(transaction=True)
def test_two_staff_moving_one_proposal_at_once_leave_it_in_one_idea_counted_once():
    run = published_run()
    cycling = idea_with_keyword(run, "cyclables")
    targets = [idea_with_keyword(run, "musées").number, idea_with_keyword(run, "arbres").number]
    moved = a_member(cycling)

    def move(number):
        return services.proposals_place(run=run, proposal_ids=[moved], number=number)

    assert two_at_once(move, targets) == [1, 1]

    assert IdeaMembership.objects.filter(run=run, proposal_id=moved).count() == 1
    assert Idea.objects.get(pk=cycling.pk).size == cycling.size - 1
    sizes = Idea.objects.filter(run=run).aggregate(total=Sum("size"))["total"]
    assert sizes == IdeaMembership.objects.filter(run=run).count()


@pytest.mark.realservices
@pytest.mark.django_db(transaction=True)
def test_a_refresh_and_a_move_at_once_queue_and_leave_every_idea_right():
    run = published_run()
    cycling, museums = idea_with_keyword(run, "cyclables"), idea_with_keyword(run, "musées")
    Idea.objects.filter(pk__in=[cycling.pk, museums.pk]).update(members_changed=True)
    moved = a_member(cycling)
    started = threading.Event()
    real_write = services._set_similarities

    def slow_write(rows):
        started.set()  # the refresh holds the ideas' rows: the move must wait for them
        time.sleep(0.5)
        return real_write(rows)

    def refresh():
        try:
            return services.ideas_refresh(run_id=run.pk)
        finally:
            connection.close()

    def move():
        try:
            assert started.wait(timeout=10)
            with mock.patch.object(tasks.refresh_ideas, "delay_on_commit"):
                return services.proposals_place(
                    run=run, proposal_ids=[moved], number=museums.number
                )
        finally:
            connection.close()

    with mock.patch.object(services, "_set_similarities", side_effect=slow_write):
        with ThreadPoolExecutor(max_workers=2) as pool:
            done = [pool.submit(refresh), pool.submit(move)]
            assert [f.result(timeout=30) for f in done] == [True, 1]

    # the move came after the refresh's write: its ideas are flagged for the next refresh
    assert set(Idea.objects.filter(members_changed=True).values_list("pk", flat=True)) == {
        cycling.pk,
        museums.pk,
    }
    assert services.ideas_refresh(run_id=run.pk)
    for idea in (cycling, museums):
        after = Idea.objects.get(pk=idea.pk)
        assert after.size == len(members(idea)) and not after.members_changed
    assert moved in members(museums)


def centre_of(run, idea):
    """The normalised mean of the idea's members' embeddings, as the refresh computes it."""
    vectors = ProposalEmbedding.objects.filter(
        run=run, proposal__idea_memberships__idea=idea
    ).values_list("vector", flat=True)
    x = np.stack([np.frombuffer(bytes(v), dtype=np.float16) for v in vectors]).astype(np.float32)
    centre = x.mean(axis=0)
    return centre / np.linalg.norm(centre)


def test_the_ideas_a_move_touches_are_described_again(themed, django_capture_on_commit_callbacks):
    run = start(themed, django_capture_on_commit_callbacks, kind="ideas")
    cycling, museums = idea_with_keyword(run, "cyclables"), idea_with_keyword(run, "musées")
    trees = idea_with_keyword(run, "arbres")
    untouched = Idea.objects.get(pk=trees.pk)
    sizes = {cycling.pk: cycling.size, museums.pk: museums.size}

    # staff put every cycling proposal with the museums: one idea by hand
    with django_capture_on_commit_callbacks(execute=True):
        services.proposals_place(
            run=run, proposal_ids=sorted(members(cycling)), number=museums.number
        )

    cycling.refresh_from_db()
    museums.refresh_from_db()
    # the emptied idea keeps its description, at size 0
    assert (cycling.size, cycling.share) == (0, 0.0)
    assert "cyclables" in cycling.keywords and cycling.centroid is not None
    # the merged idea: centre, similarities, central proposals, keywords and label follow
    centre = np.frombuffer(bytes(museums.centroid), dtype=np.float32)
    assert np.allclose(centre, centre_of(run, museums), atol=1e-5)
    rows = IdeaMembership.objects.filter(idea=museums).select_related("proposal")
    assert museums.size == len(rows) == sizes[cycling.pk] + sizes[museums.pk]
    sims = {row.proposal_id: row.similarity for row in rows}
    for row in rows:
        vector = ProposalEmbedding.objects.get(run=run, proposal_id=row.proposal_id).vector
        v = np.frombuffer(bytes(vector), dtype=np.float16).astype(np.float32)
        assert row.similarity == pytest.approx(float(v @ centre), abs=1e-5)
    central = sorted(row.proposal_id for row in rows if row.is_central)
    assert central == sorted(sorted(sims, key=lambda pid: (-sims[pid], pid))[:3])
    assert {"cyclables", "musées"} <= set(museums.keywords)
    assert museums.label == max(rows, key=lambda row: row.similarity).proposal.content
    # an idea the move did not touch is left as the engine wrote it
    assert Idea.objects.get(pk=trees.pk).keywords == untouched.keywords
    assert Idea.objects.get(pk=trees.pk).centroid == untouched.centroid


def test_the_themes_words_follow_a_move_between_two_themes(
    themed, django_capture_on_commit_callbacks
):
    run = start(themed, django_capture_on_commit_callbacks, kind="ideas")
    ideas = list(Idea.objects.filter(run=run).select_related("theme"))
    # an idea and an idea of another theme (4 ideas in 2 themes)
    source = next(i for i in ideas if any(j.theme_id != i.theme_id for j in ideas))
    target = next(i for i in ideas if i.theme_id != source.theme_id)
    word = next(
        w for w in source.keywords if w in source.theme.keywords and w not in target.theme.keywords
    )
    staff_named = target.theme
    services.theme_label_set(theme=staff_named, label="Named by staff")
    left = source.theme

    with django_capture_on_commit_callbacks(execute=True):
        services.proposals_place(
            run=run, proposal_ids=sorted(members(source)), number=target.number
        )

    staff_named.refresh_from_db()
    left.refresh_from_db()
    # the moved proposals' words now describe the theme they joined, not the one they left
    assert word in staff_named.keywords and word not in left.keywords
    assert staff_named.label == "Named by staff"  # a name staff gave stays
    # the other theme is named by its words again: three of them, the moved word not among them
    named = left.label.split(", ")
    assert len(named) == 3 and set(named) <= set(left.keywords) and word not in named


def test_a_move_during_the_refresh_leaves_the_descriptions_to_its_own_refresh(
    themed, django_capture_on_commit_callbacks
):
    run = start(themed, django_capture_on_commit_callbacks, kind="ideas")
    cycling, museums = idea_with_keyword(run, "cyclables"), idea_with_keyword(run, "musées")
    moved = a_member(cycling)
    real_keywords = engine_ideas.top_keywords

    def keywords_while_staff_move(*args, **kwargs):
        services.proposals_place(run=run, proposal_ids=[moved], number=museums.number)
        return real_keywords(*args, **kwargs)

    before = dict(Idea.objects.filter(run=run).values_list("pk", "keywords"))
    with mock.patch.object(engine_ideas, "top_keywords", side_effect=keywords_while_staff_move):
        assert (
            services._describe_ideas(
                run, {i.pk: i for i in Idea.objects.filter(run=run)}, {cycling.pk, museums.pk}
            )
            is False
        )
    assert dict(Idea.objects.filter(run=run).values_list("pk", "keywords")) == before
    assert set(Idea.objects.filter(members_changed=True).values_list("pk", flat=True)) == {
        cycling.pk,
        museums.pk,
    }
    # the move's own refresh (run here by hand) then describes both ideas
    assert services.ideas_refresh(run_id=run.pk)
    assert Idea.objects.get(pk=museums.pk).size == museums.size + 1
    assert not Idea.objects.filter(members_changed=True).exists()
    assert moved in {
        row.proposal_id for row in IdeaMembership.objects.filter(idea=museums) if row.similarity
    }


def test_a_burst_of_moves_is_described_by_one_refresh(themed, django_capture_on_commit_callbacks):
    run = start(themed, django_capture_on_commit_callbacks, kind="ideas")
    cycling, museums = idea_with_keyword(run, "cyclables"), idea_with_keyword(run, "musées")
    trees = idea_with_keyword(run, "arbres")
    queued = []
    with mock.patch.object(refresh_ideas, "delay_on_commit", side_effect=queued.append):
        services.proposals_place(run=run, proposal_ids=[a_member(cycling)], number=museums.number)
        services.proposals_place(run=run, proposal_ids=[a_member(trees)], number=None)
    assert queued == [run.pk, run.pk]
    flagged = set(Idea.objects.filter(members_changed=True).values_list("pk", flat=True))
    assert flagged == {cycling.pk, museums.pk, trees.pk}

    with mock.patch.object(services, "_describe_ideas", wraps=services._describe_ideas) as describe:
        assert all(services.ideas_refresh(run_id=run_id) for run_id in queued)
    assert describe.call_count == 1  # the second refresh found nothing left to describe
    assert not Idea.objects.filter(members_changed=True).exists()
    assert Idea.objects.get(pk=trees.pk).size == trees.size - 1


def test_the_nightly_task_queues_again_a_refresh_that_was_lost(
    themed, django_capture_on_commit_callbacks
):
    run = start(themed, django_capture_on_commit_callbacks)
    cycling, museums = idea_with_keyword(run, "cyclables"), idea_with_keyword(run, "musées")
    with mock.patch.object(refresh_ideas, "delay_on_commit"):  # the broker lost it
        services.proposals_place(run=run, proposal_ids=[a_member(cycling)], number=museums.number)
    assert Idea.objects.filter(run=run, members_changed=True).count() == 2

    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        assert engine_nightly.apply().get() == []  # nothing new to cluster

    assert len(callbacks) == 1  # the refresh, queued again
    assert not Idea.objects.filter(members_changed=True).exists()
    assert services.ideas_refresh_requeue() == []


def test_a_votes_only_run_describes_the_changed_ideas_it_copied(
    themed, django_capture_on_commit_callbacks
):
    first = start(themed, django_capture_on_commit_callbacks)
    cycling, museums = idea_with_keyword(first, "cyclables"), idea_with_keyword(first, "musées")
    moved = a_member(cycling)
    with mock.patch.object(refresh_ideas, "delay_on_commit"):  # its refresh has not run yet
        services.proposals_place(run=first, proposal_ids=[moved], number=museums.number)
    assert Idea.objects.filter(run=first, members_changed=True).count() == 2

    votes = start(themed, django_capture_on_commit_callbacks, kind="votes")

    assert votes.status == EngineRun.Status.DONE
    copied = Idea.objects.get(run=votes, number=museums.number)
    assert not Idea.objects.filter(run=votes, members_changed=True).exists()
    assert moved in members(copied) and copied.size == len(members(copied))
    centre = np.frombuffer(bytes(copied.centroid), dtype=np.float32)
    assert np.allclose(centre, centre_of(first, copied), atol=1e-5)


def test_an_idea_staff_emptied_leaves_the_public_results_and_takes_no_new_proposal(
    themed, django_capture_on_commit_callbacks, client
):
    from consultations.exports import ideas_rows

    run = start(themed, django_capture_on_commit_callbacks)
    trees, cycling = idea_with_keyword(run, "arbres"), idea_with_keyword(run, "cyclables")
    # before: a new proposal about trees joins the trees idea
    before = ProposalFactory(consultation=themed, content="Planter des arbres dans les cours")
    assert services.proposal_assign_to_idea(proposal_id=before.pk).idea_id == trees.pk

    # staff move every proposal of the trees idea into the cycling one (a merge by hand)
    with django_capture_on_commit_callbacks(execute=True):
        services.proposals_place(run=run, proposal_ids=members(trees), number=cycling.number)
    assert Idea.objects.get(pk=trees.pk).size == 0

    slug = themed.slug

    def link(idea):
        return f'href="{reverse("consensus:results_idea", args=[slug, idea.number])}"'

    listed = client.get(reverse("consensus:results_ideas", args=[slug])).content.decode()
    assert link(cycling) in listed and link(trees) not in listed
    page = client.get(reverse("consensus:results", args=[slug])).content.decode()
    assert link(cycling) in page and link(trees) not in page
    gone = client.get(reverse("consensus:results_idea", args=[slug, trees.number]))
    assert gone.status_code == 404
    csv_numbers = [
        line.split(",")[0]
        for line in b"".join(
            client.get(reverse("consensus:results", args=[slug]), {"format": "csv"})
        )
        .decode()
        .splitlines()[1:]
    ]
    api = client.get(reverse("api:ideas", args=[slug])).json()
    exported = [row[1] for row in ideas_rows(consultation=themed, run=run)]
    n_left = Idea.objects.filter(run=run).count() - 1
    for numbers in (csv_numbers, [i["number"] for i in api["results"]], exported):
        assert len(numbers) == n_left and str(trees.number) not in map(str, numbers)
    # the results page counts the ideas it can show
    assert selectors.largest_ideas(run=run)[0].n_published == n_left

    # a new proposal about trees no longer goes into the emptied idea
    after = ProposalFactory(consultation=themed, content="Planter des arbres dans les parcs")
    membership = services.proposal_assign_to_idea(proposal_id=after.pk)
    assert membership is None or membership.idea_id != trees.pk
    # staff still see it, and can move proposals back into it
    client.force_login(UserFactory(is_staff=True))
    staff_page = client.get(reverse("consensus:run_idea", args=[slug, run.pk, trees.number]))
    assert staff_page.status_code == 200
    assert services.proposals_place(run=run, proposal_ids=[before.pk], number=trees.number) == 1


def test_staff_merge_an_idea_into_another_in_batches(
    themed, django_capture_on_commit_callbacks, client, monkeypatch
):
    run = start(themed, django_capture_on_commit_callbacks)
    trees, cycling = idea_with_keyword(run, "arbres"), idea_with_keyword(run, "cyclables")
    moving = members(trees)
    refused = a_member(trees)  # refused since the run: it stays where it was
    Proposal.objects.filter(pk=refused).update(
        status=Proposal.Status.REFUSED, refusal_reason="test"
    )
    monkeypatch.setattr(services, "PLACE_MAX", 5)  # 11 accepted members: 3 batches
    refresh, refreshes = services.ideas_refresh, []
    monkeypatch.setattr(
        services, "ideas_refresh", lambda **kwargs: refreshes.append(kwargs) or refresh(**kwargs)
    )
    staff = UserFactory(is_staff=True)
    client.force_login(staff)
    url = reverse("consensus:merge_idea", args=[themed.slug, run.pk, trees.number])

    with translation.override("en"), django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            url, {"into": str(cycling.number)}, follow=True, HTTP_ACCEPT_LANGUAGE="en"
        )

    assert response.redirect_chain[-1][0] == reverse(
        "consensus:run_idea", args=[themed.slug, run.pk, cycling.number]
    )
    # the message counts the proposals that move, not the refused one
    assert f"The {len(moving) - 1} proposals of" in response.content.decode()
    assert "moving into this idea" in response.content.decode()
    assert members(trees) == {refused}
    assert moving - {refused} <= members(cycling)
    assert Idea.objects.get(pk=cycling.pk).size == cycling.size + len(moving) - 1
    placed = IdeaPlacement.objects.filter(run=run, proposal_id__in=moving - {refused})
    assert placed.count() == len(moving) - 1 and {p.placed_by for p in placed} == {staff}
    assert AuditEntry.objects.filter(action="idea.merge_started").count() == 1
    assert AuditEntry.objects.filter(action="idea.proposals_placed").count() == 3
    assert not Idea.objects.filter(run=run, members_changed=True).exists()  # described again
    assert len(refreshes) == 1  # once, after the last batch, not once per batch
    # idempotent: the task run again finds nothing left to move
    assert services.idea_merge(run_id=run.pk, idea_id=trees.pk, into_id=cycling.pk) == 0
    # and a merge of what is left (a refused proposal) is refused
    with translation.override("en"), pytest.raises(services.EngineInputError, match="left"):
        services.idea_merge_start(run=run, number=trees.number, into=cycling.number)


def test_an_idea_staff_merged_stays_merged_in_the_next_run(
    themed, django_capture_on_commit_callbacks
):
    first = start(themed, django_capture_on_commit_callbacks)
    trees, cycling = idea_with_keyword(first, "arbres"), idea_with_keyword(first, "cyclables")
    moved = members(trees)
    together = moved | members(cycling)
    with django_capture_on_commit_callbacks(execute=True):
        services.idea_merge(run_id=first.pk, idea_id=trees.pk, into_id=cycling.pk)
    assert members(Idea.objects.get(pk=cycling.pk)) == together
    services.idea_label_set(idea=Idea.objects.get(pk=cycling.pk), label="Arbres et vélos en ville")

    # the engine alone cuts them apart again; the merged idea "split", and the proposals staff
    # placed follow the part that holds the idea's own proposals
    second = start(themed, django_capture_on_commit_callbacks)
    (merged,) = {
        m.idea for m in IdeaMembership.objects.filter(run=second, proposal_id__in=together)
    }
    assert members(merged) == together
    assert second.metrics["staff_placements_kept"] == len(moved)
    assert second.metrics["staff_placements_stopped"] == 0
    # the name staff gave the merged idea goes with it (matched once the placements are carried)
    assert (merged.label, merged.named_by_staff) == ("Arbres et vélos en ville", True)
    assert second.metrics["staff_labels_kept"] == 1
    # and it is described from what it holds (the refresh queued when the run finished)
    merged.refresh_from_db()
    assert not merged.members_changed
    assert {"arbres", "cyclables"} <= set(merged.keywords)


def test_a_merge_reads_the_members_again_when_a_batch_is_refused(
    themed, django_capture_on_commit_callbacks, monkeypatch
):
    run = start(themed, django_capture_on_commit_callbacks)
    trees, cycling = idea_with_keyword(run, "arbres"), idea_with_keyword(run, "cyclables")
    place, calls = services.proposals_place, []

    def refused_once(**kwargs):  # a proposal refused between the read and the move
        calls.append(kwargs["proposal_ids"])
        if len(calls) == 1:
            raise services.EngineInputError("1 of the chosen proposals is not accepted")
        return place(**kwargs)

    monkeypatch.setattr(services, "proposals_place", refused_once)
    with django_capture_on_commit_callbacks(execute=True):
        moved = services.idea_merge(run_id=run.pk, idea_id=trees.pk, into_id=cycling.pk)

    assert moved == trees.size and len(calls) == 2 and not members(trees)


def test_a_merge_refuses_bad_input_and_moves_nothing(
    themed, django_capture_on_commit_callbacks, client
):
    run = start(themed, django_capture_on_commit_callbacks)
    trees, cycling = idea_with_keyword(run, "arbres"), idea_with_keyword(run, "cyclables")
    before = members(trees)
    client.force_login(UserFactory(is_staff=True))
    url = reverse("consensus:merge_idea", args=[themed.slug, run.pk, trees.number])
    for data, error in (
        ({}, "Choose the idea this one joins."),
        ({"into": str(trees.number)}, "This analysis has no such idea"),  # itself: not offered
        ({"into": "999"}, "This analysis has no such idea"),
        ({"into": "x"}, "This analysis has no such idea"),
    ):
        with translation.override("en"), django_capture_on_commit_callbacks(execute=True):
            page = client.post(url, data, follow=True, HTTP_ACCEPT_LANGUAGE="en")
        assert error in page.content.decode(), data
    assert client.get(url).status_code == 405
    missing = reverse("consensus:merge_idea", args=[themed.slug, run.pk, 999])
    assert client.post(missing, {"into": str(cycling.number)}).status_code == 404

    with pytest.raises(services.EngineInputError):
        services.idea_merge_start(run=run, number=trees.number, into=trees.number)
    with pytest.raises(services.EngineInputError):
        services.idea_merge(run_id="one", idea_id=trees.pk, into_id=cycling.pk)
    assert services.idea_merge(run_id=run.pk + 99, idea_id=trees.pk, into_id=cycling.pk) == 0
    # a run that is not the published one cannot be changed by hand
    second = start(themed, django_capture_on_commit_callbacks)
    assert second.pk != run.pk and Idea.objects.filter(run=second).exists()
    with pytest.raises(services.EngineStateError):
        services.idea_merge_start(run=run, number=trees.number, into=cycling.number)
    assert services.idea_merge(run_id=run.pk, idea_id=trees.pk, into_id=cycling.pk) == 0
    assert members(trees) == before
    client.force_login(UserFactory())  # signed in, not staff
    assert client.post(url, {"into": str(cycling.number)}).status_code == 404


def test_a_membership_deleted_in_the_admin_leaves_its_idea_described_again(
    themed, django_capture_on_commit_callbacks, client
):
    run = start(themed, django_capture_on_commit_callbacks, kind="ideas")
    trees = idea_with_keyword(run, "arbres")
    gone = IdeaMembership.objects.get(run=run, proposal_id=a_member(trees))
    client.force_login(UserFactory(is_staff=True, is_superuser=True))
    url = reverse("admin:consensus_ideamembership_delete", args=[gone.pk])

    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(url, {"post": "yes"})

    assert response.status_code == 302
    trees_after = Idea.objects.get(pk=trees.pk)
    assert trees_after.size == trees.size - 1 == len(members(trees))
    assert trees_after.share == pytest.approx(trees_after.size / run.metrics["n_proposals"])
    assert AuditEntry.objects.filter(action__endswith="delete").exists()
    assert not trees_after.members_changed

    # two memberships of two ideas at once, with the changelist's "delete selected" action
    cycling, museums = idea_with_keyword(run, "cyclables"), idea_with_keyword(run, "musées")
    chosen = IdeaMembership.objects.filter(
        run=run, proposal_id__in=[a_member(cycling), a_member(museums)]
    )
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            reverse("admin:consensus_ideamembership_changelist"),
            {
                "action": "delete_selected",
                "_selected_action": [m.pk for m in chosen],
                "post": "yes",
            },
        )
    assert response.status_code == 302
    for idea in (cycling, museums):
        after = Idea.objects.get(pk=idea.pk)
        assert after.size == idea.size - 1 == len(members(idea))
        assert not after.members_changed


def test_an_idea_named_after_a_moved_proposal_is_named_again(
    themed, django_capture_on_commit_callbacks
):
    run = start(themed, django_capture_on_commit_callbacks, kind="ideas")
    cantines = idea_with_keyword(run, "cantines")
    (label_proposal,) = Proposal.objects.filter(consultation=themed, content=cantines.label)
    services.proposals_place(run=run, proposal_ids=[label_proposal.pk], number=None)
    cantines.refresh_from_db()
    assert cantines.label != label_proposal.content and not cantines.named_by_staff
    assert Proposal.objects.filter(consultation=themed, content=cantines.label).exists()


def test_bad_moves_are_refused_with_a_reason_and_move_nothing(
    themed, django_capture_on_commit_callbacks
):
    run = start(themed, django_capture_on_commit_callbacks, kind="ideas")
    cycling = idea_with_keyword(run, "cyclables")
    mine = a_member(cycling)
    pending = Proposal.objects.get(consultation=themed, status=Proposal.Status.PENDING)
    other = ProposalFactory()  # another consultation
    before = sorted(IdeaMembership.objects.filter(run=run).values_list("proposal_id", "idea_id"))

    cases = [
        ({"proposal_ids": [], "number": None}, "at least one"),
        ({"proposal_ids": ["x"], "number": None}, "by their numbers"),
        ({"proposal_ids": list(range(1, 1100)), "number": None}, "At most 1000"),
        ({"proposal_ids": [mine], "number": 999}, "no idea number 999"),
        ({"proposal_ids": [mine], "number": "first"}, "by its number"),
        ({"proposal_ids": [mine, pending.pk], "number": None}, "1 of the chosen proposals"),
        ({"proposal_ids": [mine, other.pk], "number": None}, "nothing was moved"),
    ]
    newer = start(
        themed, django_capture_on_commit_callbacks, kind="ideas", parameters={"make_current": False}
    )
    assert newer.status == EngineRun.Status.DONE
    with translation.override("en"):
        for kwargs, message in cases:
            with pytest.raises(services.EngineInputError, match=message):
                services.proposals_place(run=run, **kwargs)
        with pytest.raises(services.EngineStateError, match="Only the published analysis"):
            services.proposals_place(run=newer, proposal_ids=[mine], number=None)

    after = sorted(IdeaMembership.objects.filter(run=run).values_list("proposal_id", "idea_id"))
    assert after == before and not IdeaPlacement.objects.exists()
    # the refresh task on a run that is gone, or not done, does nothing; a bad run is refused
    assert refresh_ideas.apply(args=[999_999]).get() is False
    pending = EngineRun.objects.create(consultation=themed, kind="ideas")
    assert services.ideas_refresh(run_id=pending.pk) is False
    with translation.override("en"), pytest.raises(services.EngineInputError, match="number"):
        refresh_ideas.apply(args=["first"]).get()


# --- the staff pages -------------------------------------------------------------------------


def idea_url(run, number=None):
    if number is None:
        return reverse("consensus:run_unassigned", args=[run.consultation.slug, run.pk])
    return reverse("consensus:run_idea", args=[run.consultation.slug, run.pk, number])


def test_staff_tick_proposals_and_move_them_from_the_idea_page(
    client, themed, django_capture_on_commit_callbacks
):
    run = start(themed, django_capture_on_commit_callbacks, kind="ideas")
    cycling, museums = idea_with_keyword(run, "cyclables"), idea_with_keyword(run, "musées")
    staff = UserFactory(is_staff=True)
    client.force_login(staff)
    assert (
        idea_url(run, cycling.number)
        in client.get(reverse("consensus:run", args=[themed.slug, run.pk])).content.decode()
    )

    page = client.get(idea_url(run, cycling.number), HTTP_ACCEPT_LANGUAGE="en")
    body = page.content.decode()
    assert page.status_code == 200
    assert body.count('name="proposals"') == cycling.size
    assert f'<option value="{museums.number}">' in body and '<option value="none">' in body
    # each idea offered with how many proposals it holds
    assert f"({museums.size} proposals)</option>" in body

    two = sorted(members(cycling))[:2]
    back = idea_url(run, cycling.number)
    response = client.post(
        reverse("consensus:place", args=[themed.slug, run.pk]),
        {"proposals": two, "idea": str(museums.number), "back": back},
        HTTP_ACCEPT_LANGUAGE="en",
        follow=True,
    )
    assert response.redirect_chain[-1][0] == back
    assert "2 proposals moved to" in response.content.decode()
    assert set(two) <= members(museums)
    page = client.get(idea_url(run, museums.number), HTTP_ACCEPT_LANGUAGE="en")
    assert "placed by staff" in page.content.decode()
    assert "being computed again" in page.content.decode()  # its refresh has not run yet
    assert services.ideas_refresh(run_id=run.pk)
    body = client.get(idea_url(run, museums.number), HTTP_ACCEPT_LANGUAGE="en").content.decode()
    assert "being computed again" not in body
    assert '<span class="keyword">musées</span>' in body

    # In no idea, then listed on the page of the proposals in no idea.
    client.post(
        reverse("consensus:place", args=[themed.slug, run.pk]),
        {"proposals": two[:1], "idea": "none", "back": back},
    )
    body = client.get(idea_url(run)).content.decode()
    assert f'name="proposals" value="{two[0]}"' in body
    assert f'name="proposals" value="{two[1]}"' not in body


def test_the_move_form_rejects_bad_input_and_strangers(
    client, themed, django_capture_on_commit_callbacks
):
    run = start(themed, django_capture_on_commit_callbacks, kind="ideas")
    cycling = idea_with_keyword(run, "cyclables")
    url = reverse("consensus:place", args=[themed.slug, run.pk])
    mine = a_member(cycling)

    assert client.post(url, {"proposals": [mine], "idea": "none"}).status_code == 302  # login
    client.force_login(UserFactory())  # signed in, not staff
    assert client.post(url, {"proposals": [mine], "idea": "none"}).status_code == 404
    assert client.get(idea_url(run, cycling.number)).status_code == 404

    client.force_login(UserFactory(is_staff=True))
    for data, message in (
        ({"idea": "none"}, "Tick at least one proposal"),
        ({"proposals": ["abc"], "idea": "none"}, "given by their numbers"),
        ({"proposals": [mine], "idea": "999"}, "no such idea"),
        ({"proposals": [mine]}, "Choose the idea"),
        ({"proposals": [mine], "idea": "none", "back": "https://evil.example/"}, ""),
    ):
        response = client.post(url, data, HTTP_ACCEPT_LANGUAGE="en", follow=True)
        assert response.redirect_chain[0][0] == reverse("consensus:run", args=[themed.slug, run.pk])
        assert message in response.content.decode()
    # only the last one (valid, with an unsafe way back) moved anything
    assert IdeaPlacement.objects.filter(run=run).count() == 1
    assert client.get(idea_url(run, 999)).status_code == 404
    assert client.get(idea_url(run, cycling.number) + "?page=x").status_code == 400
    # a page that moves emptied sends staff to the page that is last now
    response = client.get(idea_url(run, cycling.number) + "?page=3")
    assert response.status_code == 302 and response["Location"].endswith("?page=1")


def test_staff_find_the_ideas_whose_proposals_say_some_words(
    client, themed, monkeypatch, django_capture_on_commit_callbacks
):
    from consensus import views

    run = start(themed, django_capture_on_commit_callbacks, kind="ideas")
    cycling, museums = idea_with_keyword(run, "cyclables"), idea_with_keyword(run, "musées")
    services.proposals_place(run=run, proposal_ids=[a_member(cycling)], number=museums.number)
    services.idea_label_set(idea=Idea.objects.get(run=run, number=museums.number), label="Vélos?")
    client.force_login(UserFactory(is_staff=True))
    url = reverse("consensus:run", args=[themed.slug, run.pk])

    def shown(body):
        return [int(n) for n in re.findall(r'id="idea-title-(\d+)"', body)]

    def saying(words):
        return IdeaMembership.objects.filter(
            run=run, proposal__content__icontains=words, proposal__status="accepted"
        )

    with translation.override("en"):
        body = client.get(url, {"q": "vélo"}, HTTP_ACCEPT_LANGUAGE="en").content.decode()
    # the cycling idea (11 proposals say it), then the museums' (the one moved there)
    assert shown(body) == [cycling.number, museums.number]
    assert saying("vélo").filter(idea__number=cycling.number).count() == 11
    assert "2 ideas say “vélo” in their proposals or their name, the most first" in body
    to_idea = reverse("consensus:run_idea", args=[themed.slug, run.pk, cycling.number])
    assert f'<a href="{to_idea}?q=v%C3%A9lo">11 of its proposals say “vélo”</a>' in body
    assert 'name="q" value="vélo"' in body  # the box keeps the words
    # any case; on PostgreSQL accented capitals too
    assert shown(client.get(url, {"q": "PISTES"}).content.decode()) == shown(body)
    if connection.vendor == "postgresql":
        assert shown(client.get(url, {"q": "VÉLO"}).content.decode()) == shown(body)
    # an idea whose name says them, though none of its proposals does
    body = client.get(url, {"q": "vélos?"}, HTTP_ACCEPT_LANGUAGE="en").content.decode()
    assert shown(body) == [museums.number] and "of its proposals say" not in body
    # none: said so, with the way back to every idea
    body = client.get(url, {"q": "zorglub"}, HTTP_ACCEPT_LANGUAGE="en").content.decode()
    assert shown(body) == [] and "No idea says “zorglub” in its proposals or its name." in body
    assert f'href="{url}#ideas">Every idea of the run</a>' in body
    body = client.get(url, {"q": "zorglub"}, HTTP_ACCEPT_LANGUAGE="fr").content.decode()
    assert "Aucune idée ne dit «\xa0zorglub\xa0» dans ses propositions ou son nom." in body
    # with a theme: its ideas that say them; the pager keeps both
    theme = Idea.objects.get(pk=cycling.pk).theme
    monkeypatch.setattr(views, "IDEAS_PER_PAGE", 1)
    body = client.get(url, {"q": "l", "theme": theme.number}).content.decode()
    ideas_of_theme = set(Idea.objects.filter(run=run, theme=theme).values_list("number", flat=True))
    assert set(shown(body)) <= ideas_of_theme and f'name="theme" value="{theme.number}"' in body
    if len(ideas_of_theme) > 1:
        assert f'href="?theme={theme.number}&amp;q=l&amp;page=2"' in body
    # an empty search is no search; bad words: a clear error, never a crash
    assert client.get(url, {"q": "  "}).status_code == 200
    for bad in ("x" * 101, "vé\x00lo"):
        response = client.get(url, {"q": bad}, HTTP_ACCEPT_LANGUAGE="en")
        assert response.status_code == 400 and response.content


def test_staff_keep_the_proposals_of_an_idea_that_say_some_words_and_move_them(
    client, themed, django_capture_on_commit_callbacks
):
    run = start(themed, django_capture_on_commit_callbacks, kind="ideas")
    cycling, museums = idea_with_keyword(run, "cyclables"), idea_with_keyword(run, "musées")
    client.force_login(UserFactory(is_staff=True))
    url = idea_url(run, cycling.number)

    with translation.override("en"):
        body = client.get(url, {"q": "ENFANTS"}, HTTP_ACCEPT_LANGUAGE="en").content.decode()
    (kid,) = Proposal.objects.filter(consultation=themed, content__endswith="avec les enfants")
    assert re.findall(r'name="proposals" value="(\d+)"', body) == [str(kid.pk)]
    assert f"{cycling.size} proposals · " in body  # the idea's own count stays in the heading
    assert "1 proposal here says “ENFANTS”" in body and f'href="{url}">every proposal here' in body
    assert "data-tick-all" in body and f'name="back" value="{url}?q=ENFANTS"' in body
    body = client.get(url, {"q": "zorglub"}, HTTP_ACCEPT_LANGUAGE="en").content.decode()
    assert "No proposal here says “zorglub”." in body and 'name="proposals"' not in body
    # moving them comes back to the same search
    response = client.post(
        reverse("consensus:place", args=[themed.slug, run.pk]),
        {"proposals": [kid.pk], "idea": museums.number, "back": f"{url}?q=ENFANTS"},
    )
    assert response.status_code == 302 and response["Location"] == f"{url}?q=ENFANTS"
    assert IdeaMembership.objects.get(run=run, proposal=kid).idea_id == museums.pk
    # a page beyond the last keeps the search; the proposals in no idea are searched too
    response = client.get(url, {"q": "pistes", "page": 5})
    assert response.status_code == 302 and response["Location"] == f"{url}?q=pistes&page=1"
    services.proposals_place(run=run, proposal_ids=[kid.pk], number=None)
    body = client.get(idea_url(run), {"q": "enfants"}).content.decode()
    assert re.findall(r'name="proposals" value="(\d+)"', body) == [str(kid.pk)]
    assert client.get(idea_url(run), {"q": "x" * 101}).status_code == 400


def test_staff_split_ticked_proposals_out_into_a_new_idea_from_the_idea_page(
    client, themed, django_capture_on_commit_callbacks
):
    run = start(themed, django_capture_on_commit_callbacks, kind="ideas")
    cycling = idea_with_keyword(run, "cyclables")
    client.force_login(UserFactory(is_staff=True))
    body = client.get(idea_url(run, cycling.number), HTTP_ACCEPT_LANGUAGE="en").content.decode()
    assert '<option value="new">A new idea (split them out)</option>' in body

    two = sorted(members(cycling) - {a_member_named(cycling)})[:2]
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            reverse("consensus:place", args=[themed.slug, run.pk]),
            {"proposals": two, "idea": "new", "back": idea_url(run, cycling.number)},
            HTTP_ACCEPT_LANGUAGE="en",
            follow=True,
        )
    split = Idea.objects.get(run=run, created_by_staff=True)
    assert response.redirect_chain[-1][0] == idea_url(run, split.number)
    body = response.content.decode()
    assert "2 proposals split out into this new idea" in body
    assert "split out by staff" in body and body.count('name="proposals"') == 2
    assert members(split) == set(two)

    # a bad split goes back where it came from, says why, and creates nothing
    response = client.post(
        reverse("consensus:place", args=[themed.slug, run.pk]),
        {"proposals": [10**9], "idea": "new", "back": idea_url(run, cycling.number)},
        HTTP_ACCEPT_LANGUAGE="en",
        follow=True,
    )
    assert response.redirect_chain[-1][0] == idea_url(run, cycling.number)
    assert "not an accepted proposal of this analysis" in response.content.decode()
    assert Idea.objects.filter(run=run, created_by_staff=True).count() == 1


@pytest.mark.realservices
@pytest.mark.django_db(transaction=True)
def test_two_staff_splitting_at_once_make_two_ideas_with_their_own_numbers():
    run = published_run()
    top = max(Idea.objects.filter(run=run).values_list("number", flat=True))
    picks = [[a_member(idea_with_keyword(run, word))] for word in ("cyclables", "musées")]

    def split(ids):
        idea, moved = services.idea_split(run=run, proposal_ids=ids)
        return idea.number, moved

    # patched once for both threads: two patches racing would leave the mock in place
    with mock.patch.object(tasks.refresh_ideas, "delay_on_commit"):
        done = two_at_once(split, picks)

    assert sorted(done) == [(top + 1, 1), (top + 2, 1)]
    for number, _moved in done:
        idea = Idea.objects.get(run=run, number=number)
        assert idea.created_by_staff and idea.size == len(members(idea)) == 1
