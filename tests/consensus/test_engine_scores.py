"""Make.org scoring formulas (consensus/engine/scores.py), on hand-computed values."""

import math

import numpy as np
import pytest

from consensus.engine import scores as sc


def _rate(n, s, total):
    return min((n + s) / (1 + total), 1.0)


def _conf(p, total):
    q = (total * p + 2) / (total + 4)
    return 2 * math.sqrt(q * (1 - q) / (total + 4))


def test_rates_use_all_three_vote_keys_and_key_smoothing():
    counts = {"agree": 6, "disagree": 3, "neutral": 1, "like_it": 2}
    result = sc.score_proposal(verified=counts, sequence=counts)

    assert result["agree"].score == pytest.approx(6.33 / 11)
    assert result["disagree"].score == pytest.approx(3.33 / 11)
    assert result["neutral"].score == pytest.approx(1.33 / 11)
    assert result["like_it"].score == pytest.approx(2.01 / 11)
    assert result["no_way"].score == pytest.approx(0.01 / 11)


def test_point_score_weights_verified_against_sequence_counts():
    verified = {"agree": 20}
    sequence = {}

    half = sc.score_proposal(verified=verified, sequence=sequence)
    quarter = sc.score_proposal(verified=verified, sequence=sequence, weight=0.25)

    # p_ver = 20.33 / 21, p_seq = 0.33 / 1
    assert half["agree"].score == pytest.approx(0.5 * 20.33 / 21 + 0.5 * 0.33)
    assert quarter["agree"].score == pytest.approx(0.25 * 20.33 / 21 + 0.75 * 0.33)
    assert half["agree"].score == pytest.approx(0.649048, abs=1e-6)


def test_confidence_is_agresti_coull_on_sequence_counts_only():
    no_sequence_votes = sc.score_proposal(verified={"agree": 500}, sequence={})
    # N_seq = 0: q = 2 / 4, conf = 2 * sqrt(0.25 / 4) = 0.5, whatever the verified votes.
    assert no_sequence_votes["agree"].conf == pytest.approx(0.5)
    assert no_sequence_votes["like_it"].conf == pytest.approx(0.5)

    counts = {"agree": 6, "disagree": 3, "neutral": 1}
    result = sc.score_proposal(verified=counts, sequence=counts)
    p = 6.33 / 11
    q = (10 * p + 2) / 14
    expected = 2 * math.sqrt(q * (1 - q) / 14)
    assert result["agree"].conf == pytest.approx(expected)
    assert result["agree"].conf == pytest.approx(0.265704, abs=1e-6)
    assert result["agree"].lower_bound == pytest.approx(p - expected)
    assert result["agree"].upper_bound == pytest.approx(p + expected)


def test_rate_is_capped_at_one():
    # Inconsistent data (more qualifications than votes) must not give rates above 1.
    counts = {"agree": 1, "like_it": 5}
    result = sc.score_proposal(verified=counts, sequence=counts)
    assert result["like_it"].score == 1.0


def test_composites_add_scores_and_combine_confidences_in_quadrature():
    counts = {
        "agree": 40,
        "disagree": 25,
        "neutral": 5,
        "like_it": 12,
        "doable": 9,
        "platitude_agree": 3,
        "no_way": 7,
        "impossible": 4,
        "platitude_disagree": 2,
    }
    total = 70
    p = {k: _rate(counts.get(k, 0), 0.33 if k in sc.VOTE_KEYS else 0.01, total) for k in sc.KEYS}
    c = {k: _conf(p[k], total) for k in sc.KEYS}
    result = sc.score_proposal(verified=counts, sequence=counts)

    top_keys_plus = ("agree", "like_it", "doable")
    top_keys_minus = ("no_way", "impossible", "platitude_agree", "platitude_disagree")
    expected_top = sum(p[k] for k in top_keys_plus) - sum(p[k] for k in top_keys_minus)
    expected_top_conf = math.sqrt(sum(c[k] ** 2 for k in top_keys_plus + top_keys_minus))
    assert result["top_score"].score == pytest.approx(expected_top)
    assert result["top_score"].conf == pytest.approx(expected_top_conf)

    assert result["platitude"].score == pytest.approx(
        p["platitude_agree"] + p["platitude_disagree"]
    )
    assert result["greatness"].score == pytest.approx(p["like_it"] - p["no_way"])
    assert result["realistic"].score == pytest.approx(p["doable"] - p["impossible"])
    assert result["engagement"].score == pytest.approx(
        p["like_it"]
        - p["no_way"]
        + p["doable"]
        - p["impossible"]
        - p["platitude_agree"]
        - p["platitude_disagree"]
    )
    # top_score = adhesion + engagement
    assert result["top_score"].score == pytest.approx(
        result["adhesion"].score + result["engagement"].score
    )
    assert result["agreement"].score == result["adhesion"].score == pytest.approx(p["agree"])
    assert result["rejection"].score == pytest.approx(
        p["disagree"]
        + p["no_way"]
        + p["impossible"]
        - p["like_it"]
        - p["doable"]
        - p["platitude_agree"]
        - p["platitude_disagree"]
    )


def test_controversy_takes_min_of_scores_and_max_of_confidences():
    counts = {"agree": 40, "disagree": 25, "neutral": 5, "like_it": 12, "no_way": 7}
    total = 70
    p_agree, p_disagree = 40.33 / 71, 25.33 / 71
    p_like, p_noway = 12.01 / 71, 7.01 / 71
    result = sc.score_proposal(verified=counts, sequence=counts)

    assert result["controversy"].score == pytest.approx(p_disagree + p_noway)
    conf_first = max(_conf(p_agree, total), _conf(p_disagree, total))
    conf_second = max(_conf(p_like, total), _conf(p_noway, total))
    assert result["controversy"].conf == pytest.approx(math.hypot(conf_first, conf_second))
    # The larger rate has the larger half-width here (rates below 0.5).
    assert conf_first == pytest.approx(_conf(p_agree, total))


def test_composite_samples_follow_the_same_rules():
    counts = {"agree": 40, "disagree": 25, "neutral": 5, "like_it": 12, "no_way": 7, "doable": 9}
    scores = sc.score_proposals(
        verified=sc.counts_matrix(counts),
        sequence=sc.counts_matrix(counts),
        rng=np.random.default_rng(3),
    )
    k = {name: float(scores.keys[name].sample[0]) for name in sc.SAMPLED_KEYS}
    expected_top = (k["agree"] + k["like_it"] + k["doable"] - k["no_way"] - k["impossible"]) - (
        k["platitude_agree"] + k["platitude_disagree"]
    )
    assert scores.top_score.sample[0] == pytest.approx(expected_top)
    expected_controversy = min(k["agree"], k["disagree"]) + min(k["like_it"], k["no_way"])
    assert scores.controversy.sample[0] == pytest.approx(expected_controversy)
    # Neutral qualifications are not sampled by default.
    assert scores.keys["no_opinion"].sample is None


@pytest.mark.parametrize(
    ("agree", "disagree", "neutral", "zone"),
    [
        (0.6, 0.3, 0.5, "consensus"),  # a >= 0.6, even with many neutral votes
        (0.6, 0.6, 0.0, "consensus"),  # consensus is tested before rejection
        (0.59, 0.3, 0.5, "limbo"),
        (0.3, 0.1, 0.39, "consensus"),  # n < 0.4 and d < 0.15
        (0.3, 0.1, 0.4, "limbo"),  # n = 0.4 is not below 0.4
        (0.3, 0.15, 0.3, "controversy"),  # d = 0.15 is not below 0.15
        (0.3, 0.6, 0.5, "rejection"),  # d >= 0.6
        (0.3, 0.59, 0.5, "limbo"),
        (0.14, 0.5, 0.3, "rejection"),  # n < 0.4 and a < 0.15
        (0.15, 0.5, 0.3, "controversy"),  # a = 0.15 is not below 0.15
        (0.1, 0.5, 0.4, "limbo"),  # n = 0.4 blocks the low-agree rejection
        (0.4, 0.4, 0.2, "controversy"),
    ],
)
def test_zone_thresholds_at_their_boundaries(agree, disagree, neutral, zone):
    codes = sc.zones(agree=[agree], disagree=[disagree], neutral=[neutral])
    assert sc.ZONES[int(codes[0])] == zone


def test_point_zone_of_a_scored_proposal():
    consensual = sc.score_proposal(verified={"agree": 90, "disagree": 5, "neutral": 5}, sequence={})
    # agree = 0.5 * 90.33 / 101 + 0.5 * 0.33 = 0.612
    assert consensual.zone == "consensus"
    assert consensual.sampled_zone is None
    split = {"agree": 50, "disagree": 45, "neutral": 5}
    assert sc.score_proposal(verified=split, sequence=split).zone == "controversy"
    rejected = {"agree": 5, "disagree": 90, "neutral": 5}
    assert sc.score_proposal(verified=rejected, sequence=rejected).zone == "rejection"
    unclear = {"agree": 30, "disagree": 20, "neutral": 50}
    assert sc.score_proposal(verified=unclear, sequence=unclear).zone == "limbo"


def _random_counts(rng, n):
    votes = rng.integers(0, 300, size=(n, 3))
    matrix = np.zeros((n, len(sc.KEYS)))
    matrix[:, :3] = votes
    for v, vote_key in enumerate(sc.VOTE_KEYS):
        for qualification in sc.QUALIFICATIONS[vote_key]:
            matrix[:, sc.KEY_INDEX[qualification]] = rng.binomial(votes[:, v], 0.3)
    return matrix


def test_vectorised_scores_equal_single_proposal_scores():
    rng = np.random.default_rng(7)
    sequence = _random_counts(rng, 40)
    verified = sequence + _random_counts(rng, 40)
    many = sc.score_proposals(verified=verified, sequence=sequence, weight=0.3)

    for row in range(40):
        one = sc.score_proposal(
            verified=dict(zip(sc.KEYS, verified[row], strict=True)),
            sequence=dict(zip(sc.KEYS, sequence[row], strict=True)),
            weight=0.3,
        )
        for name in (*sc.KEYS, *sc.COMPOSITES):
            assert many[name].score[row] == pytest.approx(one[name].score)
            assert many[name].conf[row] == pytest.approx(one[name].conf)
        assert sc.ZONES[int(many.zone[row])] == one.zone


def test_mapping_of_arrays_equals_matrix_input():
    rng = np.random.default_rng(8)
    matrix = _random_counts(rng, 10)
    as_mapping = {key: matrix[:, i] for i, key in enumerate(sc.KEYS)}
    a = sc.score_proposals(verified=as_mapping, sequence=as_mapping)
    b = sc.score_proposals(verified=matrix, sequence=matrix)
    np.testing.assert_allclose(a.top_score.score, b.top_score.score)
    np.testing.assert_array_equal(a.zone, b.zone)


def test_unknown_key_is_rejected():
    with pytest.raises(KeyError):
        sc.counts_matrix({"agree": [1], "love_it": [2]})


def test_thompson_samples_follow_the_beta_posterior():
    n = 20_000
    counts = {"agree": np.full(n, 80), "disagree": np.full(n, 15), "neutral": np.full(n, 5)}
    scores = sc.score_proposals(verified=counts, sequence=counts, rng=np.random.default_rng(11))
    a, b = 80.33, 100 - 80 + 1
    mean = a / (a + b)
    sd = math.sqrt(a * b / ((a + b) ** 2 * (a + b + 1)))
    samples = scores.keys["agree"].sample
    assert samples.mean() == pytest.approx(mean, abs=4 * sd / math.sqrt(n))
    assert samples.std() == pytest.approx(sd, rel=0.05)
    assert ((samples > 0) & (samples < 1)).all()
    # Mostly consensus (agree sample >= 0.6), a few draws elsewhere.
    share = np.mean(scores.sampled_zone == sc.ZONE_CONSENSUS)
    assert 0.99 < share <= 1.0


def test_borderline_proposal_moves_between_sampled_zones():
    n = 5_000
    counts = {"agree": np.full(n, 12), "disagree": np.full(n, 6), "neutral": np.full(n, 2)}
    scores = sc.score_proposals(verified=counts, sequence=counts, rng=np.random.default_rng(5))
    zones = set(np.unique(scores.sampled_zone).tolist())
    assert {sc.ZONE_CONSENSUS, sc.ZONE_CONTROVERSY} <= zones
    # ... while the point zone of identical rows is one and the same.
    assert len(np.unique(scores.zone)) == 1


def test_samples_are_reproducible_with_the_same_seed():
    counts = {"agree": np.arange(50), "disagree": np.arange(50)[::-1], "neutral": np.full(50, 3)}
    first = sc.score_proposals(verified=counts, sequence=counts, rng=np.random.default_rng(42))
    second = sc.score_proposals(verified=counts, sequence=counts, rng=np.random.default_rng(42))
    other = sc.score_proposals(verified=counts, sequence=counts, rng=np.random.default_rng(43))
    np.testing.assert_array_equal(first.top_score.sample, second.top_score.sample)
    assert not np.array_equal(first.top_score.sample, other.top_score.sample)


def test_no_rng_means_no_samples():
    scores = sc.score_proposals(verified={"agree": [3]}, sequence={"agree": [3]})
    assert scores.keys["agree"].sample is None
    assert scores.top_score.sample is None
    assert scores.sampled_zone is None
