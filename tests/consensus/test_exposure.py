"""Exposure accounting: the voting sequence's cards counted as they are displayed, then read by
the engine into per-proposal and per-position figures for the results, the proposal pages and
the staff's run page."""

import csv
import itertools
import statistics

import pytest
from django.core.cache import cache
from django.test import Client
from django.urls import reverse
from scipy.stats import binomtest

from consensus import selectors, services
from consensus.models import EngineRun, ProposalScore
from consultations.models import Exposure, Proposal

from ..factories import ConsultationFactory, ProposalFactory, UserFactory

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("english")]

HX = {"HTTP_HX_REQUEST": "true"}


@pytest.fixture(autouse=True)
def _clear_cache():
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def consultation(data_dir):
    """Four cards a sequence, six real Make.org proposals."""
    consultation = ConsultationFactory(sequence_size=4, language="fr")
    path = data_dir / "opentext" / "makeorg_monde_dapres_2020" / "proposals.csv"
    with path.open(newline="", encoding="utf-8") as handle:
        for row in itertools.islice(csv.DictReader(handle), 6):
            ProposalFactory(consultation=consultation, content=row["text"][:140])
    return consultation


def page(response) -> str:
    return " ".join(response.content.decode().split())


def walk(consultation, plan: list[str]) -> list[tuple[int, bool, bool]]:
    """A participant starts a sequence (with HTMX, as the page does) and, card after card,
    votes or skips as ``plan`` says, then leaves. Returns (proposal, displayed, voted on it in
    the sequence) for each card dealt, as the participant lived it."""
    client = Client()
    response = client.post(reverse("consultations:sequence", args=[consultation.slug]), **HX)
    assert 'data-card="vote"' in page(response)
    items = client.session[f"concorde_sequence:{consultation.pk}"]["items"]
    lived = []
    next_url = reverse("consultations:sequence_next", args=[consultation.slug])
    for position, (proposal_id, token, _pool) in enumerate(items, start=1):
        step = plan[position - 1] if position <= len(plan) else None
        lived.append((proposal_id, position <= len(plan) + 1, step == "vote"))
        if step is None:
            continue  # left before this card, or it is the card on screen when leaving
        if step == "vote":
            url = reverse("consultations:vote", args=[consultation.slug, proposal_id])
            client.post(url, {"key": "agree", "token": token, "from": "sequence"}, **HX)
        if position < len(items):
            assert f"{position + 1} / 4" in page(
                client.post(next_url, {"position": position}, **HX)
            )
    return lived


def expected_counts(walks):
    shown, answered = {}, {}
    for proposal_id, displayed, voted in itertools.chain.from_iterable(walks):
        shown[proposal_id] = shown.get(proposal_id, 0) + displayed
        answered[proposal_id] = answered.get(proposal_id, 0) + voted
    return shown, answered


def votes_run(consultation, django_capture_on_commit_callbacks) -> EngineRun:
    with django_capture_on_commit_callbacks(execute=True):
        run = services.engine_run_start(consultation=consultation, kind="votes")
    run.refresh_from_db()
    assert run.status == EngineRun.Status.DONE, run.error
    return run


def test_a_card_counts_as_shown_once_displayed_and_once_only(consultation):
    client = Client()
    client.post(reverse("consultations:sequence", args=[consultation.slug]), **HX)
    assert Exposure.objects.count() == 4  # dealt
    assert list(
        Exposure.objects.filter(shown_at__isnull=False).values_list("position", flat=True)
    ) == [1]
    first = Exposure.objects.get(position=1).shown_at
    client.get(reverse("consultations:sequence", args=[consultation.slug]), **HX)  # reloaded
    assert Exposure.objects.get(position=1).shown_at == first
    client.post(
        reverse("consultations:sequence_next", args=[consultation.slug]), {"position": 1}, **HX
    )
    assert sorted(
        Exposure.objects.filter(shown_at__isnull=False).values_list("position", flat=True)
    ) == [1, 2]


@pytest.fixture
def walked(consultation, django_capture_on_commit_callbacks):
    walks = [
        walk(consultation, ["vote", "vote", "vote", "vote"]),  # the whole sequence
        walk(consultation, ["vote", "vote"]),  # leaves on card 3
        # moves past card 1 without a vote (the page offers "next" only after a vote; the
        # address takes it), votes on card 2, leaves on card 3
        walk(consultation, ["skip", "vote"]),
    ]
    # A fourth starts without HTMX and never follows the redirect: four cards dealt, none shown.
    Client().post(reverse("consultations:sequence", args=[consultation.slug]))
    run = votes_run(consultation, django_capture_on_commit_callbacks)
    return consultation, run, walks


def test_the_engine_counts_each_proposals_cards_shown_and_voted_on(walked):
    consultation, run, walks = walked
    shown, answered = expected_counts(walks)
    scores = {s.proposal_id: s for s in ProposalScore.objects.filter(run=run)}
    assert {pid: (s.shown, s.answered) for pid, s in scores.items() if s.shown} == {
        pid: (n, answered[pid]) for pid, n in shown.items() if n
    }
    assert sum(s.shown for s in scores.values()) == 4 + 3 + 3
    assert sum(s.answered for s in scores.values()) == 4 + 2 + 1

    exposure = run.metrics["exposure"]
    assert (exposure["sequences"], exposure["dealt"], exposure["shown"], exposure["answered"]) == (
        4,
        16,
        10,
        7,
    )
    # [position, dealt, shown, answered]: card 1 passed by the third, never seen by the fourth
    assert exposure["positions"] == [[1, 4, 3, 2], [2, 4, 3, 3], [3, 4, 3, 1], [4, 4, 1, 1]]
    assert sum(pool[1] for pool in exposure["pools"].values()) == 10
    spread = exposure["per_proposal"]
    assert spread["proposals"] == 6
    assert spread["never_shown"] == sum(1 for pid in scores if not shown.get(pid))
    ever = sorted(n for n in shown.values() if n)
    assert spread["max"] == ever[-1]
    assert spread["median"] == pytest.approx(statistics.median(ever))
    assert spread["q1"] <= spread["median"] <= spread["q3"] <= spread["max"]


def test_a_vote_from_the_proposal_page_is_no_answer_to_its_card(
    consultation, django_capture_on_commit_callbacks
):
    lived = walk(consultation, ["vote", "vote"])  # leaves on card 3
    third = lived[2][0]
    client = Client()
    client.post(reverse("consultations:sequence", args=[consultation.slug]), **HX)
    url = reverse("consultations:vote", args=[consultation.slug, third])
    assert client.post(url, {"key": "disagree"}).status_code == 302  # no token: the page
    run = votes_run(consultation, django_capture_on_commit_callbacks)
    score = ProposalScore.objects.get(run=run, proposal_id=third)
    assert score.shown >= 1 and score.answered == 0


def test_runs_before_any_sequence_have_no_exposure_figures(
    client, consultation, django_capture_on_commit_callbacks
):
    run = votes_run(consultation, django_capture_on_commit_callbacks)
    assert "exposure" not in run.metrics
    assert selectors.exposure_summary(run=run) is None
    assert set(ProposalScore.objects.filter(run=run).values_list("shown", "answered")) == {(0, 0)}


def publish(run):
    services.engine_run_make_current(run=run)


def test_the_results_say_how_the_sequence_shared_attention(client, walked):
    consultation, run, _walks = walked
    publish(run)
    html = page(client.get(reverse("consensus:results", args=[consultation.slug])))
    method = html.split('id="method-title"', 1)[1]
    assert "How the voting sequence shared attention" in method
    assert (
        "4 voting sequences started; 10 cards shown, 70 % of them voted on (at the others, the "
        "participant stopped)." in method
    )
    # card 1 reached in 3 of 4 sequences, 2 of its 3 cards voted on
    assert '<th scope="row">1</th><td><meter min="0" max="100" value="75"' in method
    assert "75 % of sequences (3)</td><td>67&nbsp;%</td>" in method
    assert "25 % of sequences (1)</td><td>100&nbsp;%</td>" in method  # card 4


def test_a_proposal_page_says_how_often_its_card_was_shown_and_voted_on(client, walked):
    consultation, run, walks = walked
    publish(run)
    shown, answered = expected_counts(walks)
    pid = max(shown, key=lambda p: (shown[p], p))
    proposal = Proposal.objects.get(pk=pid)
    text = page(client.get(proposal.get_absolute_url()))
    times = "time" if shown[pid] == 1 else "times"
    assert (
        f"Shown {shown[pid]} {times} in the voting sequence: {answered[pid]} of those who saw it "
        f"voted on it there ({round(100 * answered[pid] / shown[pid])} %). All cards shown: 70 % "
        "voted on." in text
    )
    never = Proposal.objects.filter(consultation=consultation).exclude(pk__in=list(shown)).first()
    if never is not None:
        assert "in the voting sequence" not in page(client.get(never.get_absolute_url()))


def test_staff_see_the_cards_by_position_on_the_run_page(client, walked):
    consultation, run, _walks = walked
    client.force_login(UserFactory(is_staff=True))
    html = page(client.get(reverse("consensus:run", args=[consultation.slug, run.pk])))
    assert "The voting sequence's cards" in html and "10 cards shown" in html
    assert "How far sequences went" in html
    assert "None: no proposal shown at least 10 times" in html  # too few cards for a verdict


def wilson_upper(k, n):
    return binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson").high


def test_the_proposals_left_unanswered_are_those_clearly_below_the_cards_as_a_whole(
    consultation, django_capture_on_commit_callbacks
):
    run = votes_run(consultation, django_capture_on_commit_callbacks)
    run.metrics["exposure"] = {"sequences": 100, "shown": 1000, "answered": 900}
    run.save(update_fields=["metrics"])
    # (shown, answered) per proposal: 40 % of 50; 50 % of 200; 88 % of 100 (within chance of
    # 90 %); none of 5 (too few cards to judge); 60 % of 10
    figures = [(50, 20), (200, 100), (100, 88), (5, 0), (10, 6), (0, 0)]
    scores = list(ProposalScore.objects.filter(run=run).order_by("proposal_id"))
    for score, (n, k) in zip(scores, figures, strict=True):
        score.shown, score.answered = n, k
        score.save(update_fields=["shown", "answered"])
    listed = selectors.most_left_unanswered(run=run, min_shown=10)
    expected = sorted(
        (
            s
            for s, (n, k) in zip(scores, figures, strict=True)
            if n >= 10 and wilson_upper(k, n) < 0.9
        ),
        key=lambda s: wilson_upper(s.answered, s.shown),
    )
    assert [s.pk for s in listed] == [s.pk for s in expected]
    assert len(listed) == 3  # 40 % of 50, 50 % of 200, 60 % of 10
    low, high = selectors.wilson_interval(20, 50)
    ci = binomtest(20, 50).proportion_ci(method="wilson")
    assert (low, high) == pytest.approx((ci.low, ci.high))
    first = next(s for s in listed if s.shown == 50)
    assert (first.answered_percent, first.low_percent, first.high_percent) == (
        40,
        round(100 * ci.low),
        round(100 * ci.high),
    )
    # a proposal refused since the run is no longer listed (its page is gone)
    Proposal.objects.filter(pk=first.proposal_id).update(
        status=Proposal.Status.REFUSED, refusal_reason="insulting"
    )
    assert first.pk not in [s.pk for s in selectors.most_left_unanswered(run=run, min_shown=10)]
