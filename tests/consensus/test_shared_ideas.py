"""The same idea in several consultations of a cause (consensus/engine/shared.py): matched by
meaning across runs, shown on the cause's page and on each idea's page."""

import numpy as np
import pytest
from django.urls import reverse

from consensus import selectors
from consensus.engine.shared import shared_ideas
from consensus.models import EngineRun, Idea, IdeaMembership

from ..factories import CauseFactory
from .engine_data import THEMES, consultation_with_themes
from .test_results_views import start

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("english")]


def unit(*rows):
    x = np.asarray(rows, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def test_ideas_are_matched_when_each_is_the_others_nearest():
    a = unit([1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0])
    b = unit([0.1, 0, 1, 0], [1, 0.1, 0, 0], [0, 0, 0, 1])
    assert [(i, j) for i, j, _ in shared_ideas(a, b)] == [(0, 1), (2, 0)]
    cosines = [c for _i, _j, c in shared_ideas(a, b)]
    assert cosines == pytest.approx([float(a[0] @ b[1]), float(a[2] @ b[0])])


def test_an_idea_closer_to_one_of_its_own_run_is_not_the_same_idea():
    # a0 and a1 are two ideas the clustering kept apart, 0.98 close; b0 is 0.94 close to a0
    a = unit([1, 0, 0], [1, 0.2, 0], [0, 0, 1])
    b = unit([1, -0.35, 0], [0, 0, 1])
    assert float(a[0] @ a[1]) > float(a[0] @ b[0]) > 0.9
    assert [(i, j) for i, j, _ in shared_ideas(a, b)] == [(2, 1)]


def test_a_one_sided_nearest_is_no_match_and_zero_centres_match_nothing():
    a = unit([1, 0, 0], [0.9, 0.1, 0])  # both nearest to b0, which prefers a0
    b = unit([1, 0, 0], [0, 1, 0])
    assert [(i, j) for i, j, _ in shared_ideas(a, b)] == [(0, 0)]
    zero = np.zeros((1, 3), np.float32)
    assert shared_ideas(zero, b) == [] and shared_ideas(a, np.zeros((0, 3))) == []
    with pytest.raises(ValueError, match="same dimension"):
        shared_ideas(a, np.zeros((2, 4)))


@pytest.fixture
def two_consultations(django_capture_on_commit_callbacks):
    """Two consultations of one cause with proposals on the same four themes."""
    cause = CauseFactory()
    first = consultation_with_themes(cause=cause, question="Comment se déplacer demain ?")
    second = consultation_with_themes(cause=cause, question="Que faire pour nos villes ?")
    runs = [start(c, django_capture_on_commit_callbacks) for c in (first, second)]
    return cause, (first, second), runs


def theme_of(idea) -> set[int]:
    """The themes (THEMES index) of the idea's proposals."""
    heads = [head for head, _tails in THEMES]
    contents = IdeaMembership.objects.filter(idea=idea).values_list("proposal__content", flat=True)
    return {next(i for i, head in enumerate(heads) if text.startswith(head)) for text in contents}


def test_the_cause_page_lists_the_ideas_its_consultations_share(client, two_consultations):
    cause, (first, second), runs = two_consultations
    pairs = selectors.shared_ideas_across(consultations=[first, second])
    assert pairs
    for pair in pairs:
        (ca, idea_a), (cb, idea_b) = pair["ideas"]
        assert (ca, cb) == (first, second)
        assert (idea_a.run_id, idea_b.run_id) == (runs[0].pk, runs[1].pk)
        assert theme_of(idea_a) == theme_of(idea_b)  # the same theme: the same idea
    html = " ".join(client.get(cause.get_absolute_url()).content.decode().split())
    assert "Ideas that came up in several consultations" in html
    (ca, idea_a), (cb, idea_b) = pairs[0]["ideas"]
    for consultation, idea in pairs[0]["ideas"]:
        url = reverse("consensus:results_idea", args=[consultation.slug, idea.number])
        assert f'<a href="{url}">{idea.label}</a>' in html


def test_an_ideas_page_names_the_same_idea_in_the_other_consultation(client, two_consultations):
    _cause, (first, second), _runs = two_consultations
    pair = selectors.shared_ideas_across(consultations=[first, second])[0]
    (_ca, idea_a), (_cb, idea_b) = pair["ideas"]
    html = " ".join(
        client.get(reverse("consensus:results_idea", args=[first.slug, idea_a.number]))
        .content.decode()
        .split()
    )
    assert "The same idea in other consultations" in html
    other = reverse("consensus:results_idea", args=[second.slug, idea_b.number])
    assert f'<a href="{other}">{idea_b.label}</a>' in html
    assert "Que faire pour nos villes ?" in html


def test_only_the_consultations_of_the_same_cause_are_compared(
    client, two_consultations, django_capture_on_commit_callbacks
):
    _cause, (first, second), _runs = two_consultations
    elsewhere = consultation_with_themes(question="Une autre cause ?")  # its own cause
    start(elsewhere, django_capture_on_commit_callbacks)
    (_ca, idea_a), _b = selectors.shared_ideas_across(consultations=[first, second])[0]["ideas"]
    html = client.get(
        reverse("consensus:results_idea", args=[first.slug, idea_a.number])
    ).content.decode()
    assert "Que faire pour nos villes" in html and "Une autre cause" not in html


def test_ideas_found_with_different_models_are_not_compared(client, two_consultations):
    _cause, (first, second), runs = two_consultations
    EngineRun.objects.filter(pk=runs[1].pk).update(model_name="usem3")
    assert selectors.shared_ideas_across(consultations=[first, second]) == []
    idea = Idea.objects.filter(run=runs[0]).order_by("number").first()
    assert selectors.idea_elsewhere(idea=idea, consultations=[second]) == []
