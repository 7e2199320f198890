"""How well keywords describe their ideas (consensus/engine/coherence.py): NPMI coherence,
coverage, exclusivity and diversity, by hand on small texts and on a real Grand Débat slice."""

import math
import random
from collections import defaultdict

import numpy as np
import pytest

from consensus.engine.coherence import keyword_diversity, keyword_repeats, keyword_scores
from consensus.engine.ideas import top_keywords

from .test_engine_ideas import GD_ANSWERS, _read_rows

TEXTS = [
    "Des bus et des trains partout",  # idea 0
    "Plus de bus, plus de trains",  # idea 0
    "Des trains de nuit",  # idea 0
    "Des pistes cyclables et des vélos",  # idea 1
    "Des vélos en libre service",  # idea 1
    "Un bus pour les vélos",  # noise
]
LABELS = np.array([0, 0, 0, 1, 1, -1])


def npmi(p_ab, p_a, p_b):
    return math.log(p_ab / (p_a * p_b)) / -math.log(p_ab)


def test_each_score_is_the_share_counted_by_hand():
    got = keyword_scores(TEXTS, LABELS, [["bus", "trains"], ["vélos", "pistes cyclables"]])
    # bus: 3 of 6 answers, trains: 3, both: 2; vélos: 3, "pistes cyclables": 1, both: 1
    assert got.coherence == pytest.approx([npmi(2 / 6, 3 / 6, 3 / 6), npmi(1 / 6, 3 / 6, 1 / 6)])
    # idea 0: its 3 answers all use "bus" or "trains"; idea 1: both use "vélos"
    assert got.coverage == pytest.approx([1.0, 1.0])
    # "bus": 2 of its 3 answers in idea 0, "trains": 3 of 3; "vélos": 2 of 3, "pistes
    # cyclables": 1 of 1
    assert got.exclusivity == pytest.approx([(2 / 3 + 1) / 2, (2 / 3 + 1) / 2])


def test_words_never_in_one_answer_score_minus_one_and_always_together_one():
    got = keyword_scores(TEXTS, LABELS, [["nuit", "cyclables"], ["libre", "service"]])
    assert got.coherence[0] == -1.0
    # "libre" and "service" are in one answer only, together: as associated as they can be
    assert got.coherence[1] == pytest.approx(1.0)
    assert got.coverage == pytest.approx([1 / 3, 1 / 2])


def test_a_two_word_keyword_counts_only_where_its_words_are_side_by_side():
    texts = ["des transports en commun", "en commun, les transports", "les transports"]
    got = keyword_scores(texts, np.array([0, 0, 0]), [["transports commun"]])
    assert got.coverage[0] == pytest.approx(1 / 3)  # stop words ("en") do not separate them


def test_weights_count_an_answer_as_often_as_its_duplicates():
    words = [["bus"], ["vélos"]]
    once = keyword_scores(TEXTS + ["Plus de bus, plus de trains"], np.append(LABELS, 0), words)
    weighted = keyword_scores(TEXTS, LABELS, words, weights=np.array([1, 2, 1, 1, 1, 1]))
    assert weighted.coverage == pytest.approx(once.coverage)
    assert weighted.exclusivity == pytest.approx(once.exclusivity)
    assert weighted.exclusivity[0] == pytest.approx(3 / 4)


def test_ideas_without_usable_keywords_get_nan_and_bad_input_is_refused():
    got = keyword_scores(TEXTS, LABELS, [["bus"], ["tramway"]])
    assert got.coverage[0] == pytest.approx(2 / 3)
    assert np.isnan(got.coverage[1]) and np.isnan(got.exclusivity[1])
    assert np.isnan(got.coherence).all()  # one keyword: no pair
    got = keyword_scores(TEXTS, LABELS, [[], ["vélos"]])
    assert np.isnan(got.coverage[0]) and got.coverage[1] == 1.0
    # an idea of no answer (here idea 2) has no coverage either
    assert np.isnan(keyword_scores(TEXTS, LABELS, [["bus"], ["vélos"], ["bus"]]).coverage[2])
    empty = keyword_scores([], np.zeros(0, dtype=int), [])
    assert empty.coverage.shape == (0,)
    with pytest.raises(ValueError, match="6 texts but 2 labels"):
        keyword_scores(TEXTS, np.array([0, 1]), [["bus"], ["vélos"]])
    with pytest.raises(ValueError, match="labels name idea 1 but keywords are given for 1"):
        keyword_scores(TEXTS, LABELS, [["bus"]])


def test_diversity_is_the_share_of_distinct_words():
    assert keyword_diversity([["bus", "transports commun"], ["transports", "vélos"]]) == 0.8
    assert keyword_diversity([["bus"], ["vélos"]]) == 1.0
    assert math.isnan(keyword_diversity([[], []]))


@pytest.fixture(scope="module")
def three_questions() -> tuple[list[str], np.ndarray]:
    """120 real answers to each of 3 Grand Débat questions, labelled by question."""
    questions = ["fiscalite_13", "transition_22", "organisation_16"]
    by_q: dict[str, list[str]] = defaultdict(list)
    for row in _read_rows(GD_ANSWERS):
        if row["question_code"] in questions:
            by_q[row["question_code"]].append(row["text"])
    rng = random.Random(0)
    texts = [t for q in questions for t in rng.sample(by_q[q], 120)]
    return texts, np.repeat(np.arange(3), 120)


def test_each_questions_own_keywords_describe_it_better_than_anothers(three_questions):
    texts, labels = three_questions
    own = top_keywords(texts, labels)
    other = own[1:] + own[:1]  # each question labelled with the next one's words
    got, swapped = keyword_scores(texts, labels, own), keyword_scores(texts, labels, other)
    assert (got.coverage > swapped.coverage + 0.2).all()
    assert (got.exclusivity > 0.7).all() and (swapped.exclusivity < 0.3).all()
    assert got.coverage.min() > 0.5


def test_repeats_count_the_keywords_that_say_an_earlier_word_again():
    got = keyword_repeats(
        [
            ["impôts", "baisser", "baisser impôts", "impôt", "taxes"],  # 2 of 5 repeat
            ["pollution air", "air", "saisons"],  # "air" is in the bigram
            ["vélos", "trains"],
            [],
        ]
    )
    assert got[:3] == pytest.approx([2 / 5, 1 / 3, 0.0])
    assert np.isnan(got[3])
    # Concorde's own keywords never repeat a word
    assert keyword_repeats(top_keywords(TEXTS, LABELS)).tolist() == [0.0, 0.0]


@pytest.mark.django_db
def test_a_run_records_how_well_its_keywords_describe_its_ideas(django_capture_on_commit_callbacks):
    from consensus.engine.ideas import _tokenizer
    from consensus.models import Idea, IdeaMembership

    from .engine_data import consultation_with_themes
    from .test_results_views import start

    run = start(consultation_with_themes(), django_capture_on_commit_callbacks)
    tokens = _tokenizer("fr")
    words = {
        m.proposal_id: f" {' '.join(tokens(m.proposal.content))} "
        for m in IdeaMembership.objects.filter(run=run).select_related("proposal")
    }
    ideas = {idea.pk: idea.keywords for idea in Idea.objects.filter(run=run)}
    assert run.metrics["n_near_duplicates"] == 0 and run.metrics["n_noise"] == 0
    members = dict(IdeaMembership.objects.filter(run=run).values_list("proposal_id", "idea_id"))

    def uses(proposal_id, term):
        return f" {term} " in words[proposal_id]

    covered = sum(any(uses(p, t) for t in ideas[idea]) for p, idea in members.items())
    exclusivity, sizes = [], []
    for idea, terms in ideas.items():
        shares = [
            sum(members[p] == idea for p in words if uses(p, t)) / sum(uses(p, t) for p in words)
            for t in terms
        ]
        exclusivity.append(sum(shares) / len(shares))
        sizes.append(sum(i == idea for i in members.values()))
    all_words = [w for terms in ideas.values() for t in terms for w in t.split()]
    got = run.metrics["keywords"]
    assert got["coverage"] == pytest.approx(covered / len(members), abs=1e-4)
    assert got["exclusivity"] == pytest.approx(np.average(exclusivity, weights=sizes), abs=1e-4)
    assert got["diversity"] == pytest.approx(len(set(all_words)) / len(all_words), abs=1e-4)
    assert got["coverage"] > 0.9 and got["exclusivity"] > 0.9  # four clear themes
