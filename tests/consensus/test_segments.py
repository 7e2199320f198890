"""Per-segment agreement with k-anonymity suppression, and the key ideas selector."""

import numpy as np
import pytest

from consensus import selectors, services
from consensus.engine.segments import segment_cells
from consensus.models import EngineRun
from consultations.models import Participant

from .engine_data import HASHING, add_votes, consultation_with_themes


def test_suppression_exactly_at_k():
    k = 5
    # statement 0: k-1 voters of segment 0; statement 1: k voters of segment 0
    part = np.r_[np.arange(k - 1), np.arange(k)]
    st = np.r_[np.zeros(k - 1, int), np.ones(k, int)]
    val = np.ones(part.size, int)
    cells = segment_cells(st, part, val, np.zeros(k, int), n_statements=2, n_segments=1, k=k)
    assert (
        cells.suppressed[0, 0] and np.isnan(cells.agreement[0, 0]) and np.isnan(cells.agree[0, 0])
    )
    assert not cells.suppressed[0, 1]
    assert cells.agree[0, 1] == k
    assert cells.agreement[0, 1] == pytest.approx((k + 0.33) / (k + 1))


def test_counts_equal_brute_force_and_missing_segment_left_out():
    rng = np.random.default_rng(1)
    n_p, n_s, n_seg = 300, 7, 4
    seg_of = rng.integers(-1, n_seg, n_p)  # -1: no demographic
    pairs = rng.choice(n_p * n_s, 1500, replace=False)
    part, st = pairs // n_s, pairs % n_s
    val = rng.integers(-1, 2, pairs.size)
    cells = segment_cells(st, part, val, seg_of, n_statements=n_s, n_segments=n_seg, k=3)
    for s in range(n_seg):
        for j in range(n_s):
            m = (seg_of[part] == s) & (st == j)
            if m.sum() < 3:
                assert cells.suppressed[s, j]
                continue
            assert cells.agree[s, j] == (val[m] == 1).sum()
            assert cells.disagree[s, j] == (val[m] == -1).sum()
            assert cells.neutral[s, j] == (val[m] == 0).sum()
            assert cells.participants[s, j] == m.sum()
    total = np.nansum(cells.agree + cells.disagree + cells.neutral)
    assert total <= (seg_of[part] >= 0).sum()


def test_large_input_is_fast():
    rng = np.random.default_rng(0)
    n = 1_000_000
    cells = segment_cells(
        rng.integers(0, 500, n),
        rng.integers(0, 50_000, n),
        rng.integers(-1, 2, n),
        rng.integers(0, 6, 50_000),
        n_statements=500,
        n_segments=6,
    )
    assert cells.agree.shape == (6, 500)


@pytest.mark.django_db
def test_unknown_dimension_refused():
    consultation = consultation_with_themes()
    with pytest.raises(ValueError, match="unknown segment dimension"):
        selectors.segment_scores(run_or_consultation=consultation, dimension="income")


@pytest.mark.django_db
def test_segment_scores_from_votes():
    consultation = consultation_with_themes()
    proposals = add_votes(consultation, n_participants=40)
    voters = list(
        Participant.objects.filter(session_key__startswith=f"{consultation.slug}-voter-").order_by(
            "pk"
        )
    )
    # 10 women, 9 men, the rest without gender; untrusted voters (last 5) are women too
    for i, p in enumerate(voters):
        p.gender = "f" if i < 10 or i >= 40 else ("m" if i < 19 else "")
        p.save(update_fields=["gender"])
    out = selectors.segment_scores(run_or_consultation=consultation, dimension="gender", k=10)
    cell = out[proposals[0].pk]
    assert cell["m"] is None  # 9 < k
    assert cell["f"]["participants"] == 10  # untrusted votes and genderless voters left out
    assert set(cell) == {"f", "m"}


@pytest.mark.django_db
def test_key_ideas(django_capture_on_commit_callbacks):
    consultation = consultation_with_themes()
    assert selectors.key_ideas(consultation=consultation) == {
        "consensual": [],
        "controversial": [],
        "rejected": [],
    }
    add_votes(consultation)
    with django_capture_on_commit_callbacks(execute=True):
        run = services.engine_run_start(consultation=consultation, **{**HASHING, "kind": "full"})
    run.refresh_from_db()
    assert run.status == EngineRun.Status.DONE
    consultation.refresh_from_db()
    out = selectors.key_ideas(consultation=consultation)
    assert out["consensual"], "the trees theme is consensual"
    assert all(i.scores["zone"] == "consensus" for i in out["consensual"])
    assert all(i.scores["zone"] == "controversy" for i in out["controversial"])
    tops = [i.scores["top_score"] for i in out["consensual"]]
    assert tops == sorted(tops, reverse=True)
