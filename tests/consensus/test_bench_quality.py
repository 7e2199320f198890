"""bench/engine_quality.py's tally (means over the draws, draw-by-draw pairs) and the tuning sets
of bench/engine_tuning.py."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "engine_quality.py"


@pytest.fixture
def eq():
    spec = importlib.util.spec_from_file_location("engine_quality_under_test", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def tuning():
    spec = importlib.util.spec_from_file_location(
        "engine_tuning_under_test", BENCH.with_name("engine_tuning.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_draw_zero_is_the_single_draw_seed(eq):
    assert eq.draw_seeds(0, 1) == [0]
    assert eq.draw_seeds(2, 3) == [2, 102, 202]


def test_tally_compares_means_and_counts_every_draw(eq):
    # Two draws, two metrics. ARI: Concorde 0.5/0.3 (mean 0.4) vs BERTopic 0.2/0.5 (mean 0.35):
    # the mean is a win although one draw is a loss.
    concorde = np.array([[0.5, 0.6], [0.3, 0.6]])
    bertopic = np.array([[0.2, 0.7], [0.5, 0.7]])
    eq.tally("set", "question", ("ARI", "NMI"), concorde, bertopic)
    assert eq.TALLY == [
        ("set", "question", "ARI", pytest.approx(0.4), pytest.approx(0.35)),
        ("set", "question", "NMI", pytest.approx(0.6), pytest.approx(0.7)),
    ]
    assert sum(c > b for c, b in eq.PAIRED) == 1 and len(eq.PAIRED) == 4


def test_draw_summary_reads_a_bimodal_method_both_ways(eq):
    # BERTopic's draws in two modes (3 high, 1 low), Concorde's tight: BERTopic's mean is
    # lower but its median and most pairs of draws are higher
    concorde = np.array([[0.24], [0.25], [0.25], [0.26]])
    bertopic = np.array([[0.27], [0.28], [0.26], [0.10]])
    (row,) = eq.draw_summary(concorde, bertopic)
    assert row["concorde"]["mean"] == pytest.approx(0.25)
    assert row["bertopic"]["mean"] == pytest.approx(0.2275)
    assert row["concorde"]["median"] == pytest.approx(0.25)
    assert row["bertopic"]["median"] == pytest.approx(0.265)
    # Student's t, 3 degrees of freedom: 3.182 x sd / 2
    half = 3.182446 * np.std([0.24, 0.25, 0.25, 0.26], ddof=1) / 2
    assert row["concorde"]["low"] == pytest.approx(0.25 - half, abs=1e-6)
    assert row["concorde"]["high"] == pytest.approx(0.25 + half, abs=1e-6)
    assert row["above_mean"] == 3
    # 0.27 and 0.28 beat all 4; 0.26 beats 3 (not 0.26 itself); 0.10 none
    assert row["pairs_higher"] == 11 and row["pairs"] == 16


def test_scores_count_noise_as_a_label_and_apart(eq):
    truth = ["a", "a", "b", "b"]
    full, nn = eq.scores(truth, np.array([0, 0, 1, -1]))
    assert full[0] < 1.0  # the noise row is a third label
    assert nn == [pytest.approx(1.0)] * 3  # the three kept rows are clustered perfectly


def test_tuning_sets_stay_in_the_tuning_half(tuning):
    eq = tuning.eq
    default = [name for name, _, _ in tuning.tuning_sets(True)]
    every = [name for name, _, _ in tuning.tuning_sets(True, all_singles=True)]
    singles = [name.removesuffix(" alone") for name in every if name.endswith(" alone")]
    # --all-singles adds the 4 transition questions to the 11 organisation ones, all tuning-half.
    assert every[: len(default)] == default and len(every) == len(default) + 4
    assert singles == eq.GD_TUNE and not set(singles) & set(eq.GD_HELDOUT)


def test_tuning_scores_are_read_by_kind_of_label(tuning):
    kinds = {
        (name, label): tuning.score_kind(name, label)
        for name, _, _ in tuning.tuning_sets(True, all_singles=True)
        for label in (
            ("reference cluster",) if name.endswith(" alone") else ("question", "reference cluster")
        )
    }
    # 8 mixtures, each against the question and against the reference clusters; 15 alone
    assert list(kinds.values()).count("question") == 8
    assert list(kinds.values()).count("mixture") == 8
    assert list(kinds.values()).count("alone") == 15
    assert set(kinds.values()) == set(tuning.KINDS)


def test_tuning_variants_are_typed_by_their_field(tuning):
    name, kwargs = tuning.parse_variant("words:lexical_skip_frame=false,edge_power=2,method=graph")
    assert name == "words"
    assert kwargs == {"lexical_skip_frame": False, "edge_power": 2.0, "method": "graph"}
    assert tuning.parse_variant("x:lexical_skip_frame=True")[1] == {"lexical_skip_frame": True}
    assert tuning.parse_variant("x:lexical_skip_frame=auto")[1] == {"lexical_skip_frame": "auto"}
    for bad in ("x:edge_power=high", "x:nothing=1"):
        with pytest.raises(SystemExit):
            tuning.parse_variant(bad)


def test_proposal_frames_counts_each_verbs_share_in_its_largest_idea():
    spec = importlib.util.spec_from_file_location(
        "proposal_frames_under_test", BENCH.with_name("proposal_frames.py")
    )
    frames = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(frames)
    texts = [f"Il faut {verb} {thing}" for verb in frames.VERBS for thing in ("a", "b", "c", "d")]
    labels = np.array([i % 4 for i in range(len(texts))])  # by thing: each verb spread on 4
    assert set(frames.verb_shares(texts, labels).values()) == {0.25}
    labels = np.array([i // 4 for i in range(len(texts))])  # by verb: each in one idea
    assert set(frames.verb_shares(texts, labels).values()) == {1.0}
