"""bench/engine_quality.py's tally: means over the draws, and the draw-by-draw pairs."""

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


def test_scores_count_noise_as_a_label_and_apart(eq):
    truth = ["a", "a", "b", "b"]
    full, nn = eq.scores(truth, np.array([0, 0, 1, -1]))
    assert full[0] < 1.0  # the noise row is a third label
    assert nn == [pytest.approx(1.0)] * 3  # the three kept rows are clustered perfectly


def test_tuning_sets_stay_in_the_tuning_half():
    spec = importlib.util.spec_from_file_location(
        "engine_tuning_under_test", BENCH.with_name("engine_tuning.py")
    )
    tuning = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tuning)
    eq = tuning.eq
    default = [name for name, _, _ in tuning.tuning_sets(True)]
    every = [name for name, _, _ in tuning.tuning_sets(True, all_singles=True)]
    singles = [name.removesuffix(" alone") for name in every if name.endswith(" alone")]
    # --all-singles adds the 4 transition questions to the 11 organisation ones, all tuning-half.
    assert every[: len(default)] == default and len(every) == len(default) + 4
    assert singles == eq.GD_TUNE and not set(singles) & set(eq.GD_HELDOUT)
