"""Results weighted to the population: raking (consensus/engine/weighting.py), the engine's
weighted counts, the results page's section, and the population shares staff enter."""

from decimal import Decimal

import numpy as np
import pytest
from django.core.cache import cache
from django.forms import inlineformset_factory
from django.urls import reverse

from consensus.engine.weighting import rake
from consensus.models import Idea, IdeaMembership, ProposalScore
from consultations.admin import PopulationSharesFormSet
from consultations.models import Consultation, Participant, PopulationShare, Proposal, Trust, Vote

from ..admin_forms import consultation_admin_post
from .engine_data import add_votes, consultation_with_themes
from .test_results_views import published, start  # noqa: F401 - published: the fixture

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("english")]


# Raking ----------------------------------------------------------------------------------------


def margins(codes, weights, mask, k):
    m = np.bincount(codes[mask], weights=weights[mask], minlength=k)
    return m / m.sum()


def test_one_dimension_weights_each_category_by_its_share_ratio():
    # 30 young, 10 old; the population half and half
    codes = np.array([0] * 30 + [1] * 10)
    result = rake({"age": codes}, {"age": np.array([0.5, 0.5])})
    assert result.converged
    assert result.weights[:30] == pytest.approx(np.full(30, 0.5 / 0.75))
    assert result.weights[30:] == pytest.approx(np.full(10, 0.5 / 0.25))
    assert result.weights.mean() == pytest.approx(1.0)
    # Kish: (sum w)^2 / sum w^2
    w = result.weights
    assert result.effective == pytest.approx(w.sum() ** 2 / (w**2).sum())


def test_two_dimensions_match_both_margins():
    rng = np.random.default_rng(3)
    age = rng.choice(4, size=2_000, p=[0.4, 0.3, 0.2, 0.1])
    gender = rng.choice(2, size=2_000, p=[0.7, 0.3])
    age[:50] = -1  # did not say: not weighted
    targets = {"age": np.array([0.2, 0.3, 0.3, 0.2]), "gender": np.array([0.52, 0.48])}
    result = rake({"age": age, "gender": gender}, targets)
    assert result.converged
    assert not result.weighted[:50].any() and (result.weights[:50] == 0).all()
    for dim, codes in (("age", age), ("gender", gender)):
        reached = margins(codes, result.weights, result.weighted, len(targets[dim]))
        assert reached == pytest.approx(targets[dim], abs=1e-5)
        assert result.margins[dim] == pytest.approx(reached)


def test_weights_are_trimmed_at_the_cap():
    codes = np.array([0] * 99 + [1])  # one participant for half the population
    uncapped = rake({"a": codes}, {"a": np.array([0.5, 0.5])}, cap=1_000)
    capped = rake({"a": codes}, {"a": np.array([0.5, 0.5])}, cap=5)
    assert uncapped.max_weight == pytest.approx(50.0)
    assert capped.max_weight <= 5 + 1e-6
    assert capped.weights[capped.weighted].mean() == pytest.approx(1.0)
    assert capped.effective > uncapped.effective


def test_a_category_with_no_population_share_weighs_nothing():
    codes = np.array([0, 0, 1, 1, 2])
    result = rake({"a": codes}, {"a": np.array([0.5, 0.5, 0.0])})
    assert result.weights[4] == 0
    assert margins(codes, result.weights, result.weighted, 3) == pytest.approx([0.5, 0.5, 0.0])


@pytest.mark.parametrize(
    ("codes", "targets", "message"),
    [
        ({"a": np.array([0, 0])}, {"a": np.array([0.5, 0.5])}, "no participant in categories"),
        ({"a": np.array([-1, -1])}, {"a": np.array([0.5, 0.5])}, "no participant gave"),
        ({"a": np.array([0, 1])}, {"a": np.array([0.5, 0.2])}, "sum to 1"),
        ({"a": np.array([0, 2])}, {"a": np.array([0.5, 0.5])}, "has no population share"),
        ({"a": np.array([0, 1])}, {"b": np.array([0.5, 0.5])}, "same dimensions"),
    ],
)
def test_impossible_weightings_say_why(codes, targets, message):
    with pytest.raises(ValueError, match=message):
        rake(codes, targets)


# The engine and the results ---------------------------------------------------------------------

YOUNG, OLD = "18-24", "65+"


def shares(consultation, **percents):
    for value, percent in percents.items():
        PopulationShare.objects.create(
            consultation=consultation,
            dimension="age_range",
            value=value.replace("_", "-").replace("plus", "+"),
            percent=Decimal(percent),
        )


@pytest.fixture
def weighted_run(django_capture_on_commit_callbacks):
    """The two camps of ``add_votes``: the 20 of camp A (even) said they are 18-24, 5 of camp B
    said 65+, the 15 others nothing; the population half 18-24, half 65+."""
    consultation = consultation_with_themes(population_source="Census 2025 (test)")
    add_votes(consultation)
    voters = list(
        Participant.objects.filter(session_key__startswith=f"{consultation.slug}-voter-").order_by(
            "pk"
        )
    )[:40]
    for n, participant in enumerate(voters):
        if n % 2 == 0:
            participant.age_range = YOUNG
        elif n < 10:
            participant.age_range = OLD
        participant.save()
    shares(consultation, **{"18_24": "50", "65plus": "50"})
    run = start(consultation, django_capture_on_commit_callbacks)
    return consultation, run


def expected_counts(proposal_ids, weight_of):
    """[agree, votes, weighted agree, weighted votes] of the scored votes on the proposals, from
    the votes themselves and the weight of each age range."""
    agree = votes = w_agree = w_votes = 0.0
    rows = Vote.objects.filter(
        proposal_id__in=proposal_ids, trust__in=[Trust.TRUSTED, Trust.SEQUENCE]
    ).values_list("participant__age_range", "key")
    for age, key in rows:
        if age not in weight_of:
            continue
        votes += 1
        w_votes += weight_of[age]
        if key == "agree":
            agree += 1
            w_agree += weight_of[age]
    return agree, votes, w_agree, w_votes


def test_the_engine_weights_each_proposals_votes_to_the_population(weighted_run):
    consultation, run = weighted_run
    weighting = run.metrics["weighting"]
    assert (weighting["voters"], weighting["weighted"]) == (40, 25)
    assert weighting["composition"]["age_range"] == [[YOUNG, 0.8, 0.5], [OLD, 0.2, 0.5]]
    # one dimension: each weight is the population share over the participants' share
    weight_of = {YOUNG: 0.5 / 0.8, OLD: 0.5 / 0.2}
    w = np.array([weight_of[YOUNG]] * 20 + [weight_of[OLD]] * 5)
    assert weighting["effective"] == pytest.approx(w.sum() ** 2 / (w**2).sum(), abs=0.05)
    first = Proposal.objects.filter(consultation=consultation).order_by("pk").first()
    score = ProposalScore.objects.get(run=run, proposal=first)
    agree, votes, w_agree, w_votes = expected_counts([first.pk], weight_of)
    assert score.weighted_counts[:2] == [agree, votes] == [20, 25]  # camp A agrees, B not
    assert score.weighted_counts[2:] == pytest.approx([w_agree, w_votes], abs=1e-3)
    assert w_agree / w_votes == pytest.approx(0.5)  # 80 % as voted, half once weighted


def test_each_ideas_agreement_is_given_as_voted_and_weighted(weighted_run):
    consultation, run = weighted_run
    weight_of = {YOUNG: 0.5 / 0.8, OLD: 0.5 / 0.2}
    checked = 0
    for idea in Idea.objects.filter(run=run):
        members = list(
            IdeaMembership.objects.filter(run=run, idea=idea).values_list("proposal_id", flat=True)
        )
        agree, votes, w_agree, w_votes = expected_counts(members, weight_of)
        figures = idea.scores.get("weighted")
        if not votes:
            assert figures is None
            continue
        assert figures["votes"] == votes
        assert figures["agree"] == pytest.approx(agree / votes, abs=1e-4)
        assert figures["weighted_agree"] == pytest.approx(w_agree / w_votes, abs=1e-4)
        checked += 1
    assert checked >= 2


def page_text(client, consultation) -> str:
    url = reverse("consensus:results", args=[consultation.slug])
    return " ".join(client.get(url).content.decode().split())


def test_the_results_page_puts_the_weighted_agreement_next_to_the_votes(client, weighted_run):
    consultation, run = weighted_run
    html = page_text(client, consultation)
    assert 'href="#weighting-title"' in html
    section = html.split('id="weighting-title"', 1)[1].split("</section>", 1)[0]
    assert "Population shares: Census 2025 (test)." in section
    assert "25 participants of 40 (62 %) said who they are and are weighted" in section
    assert '<th scope="row">18–24</th><td>80&nbsp;%</td><td>50&nbsp;%</td>' in section
    assert '<th scope="row">65 and over</th><td>20&nbsp;%</td><td>50&nbsp;%</td>' in section
    shown = [
        idea
        for idea in Idea.objects.filter(run=run)
        if (idea.scores.get("weighted") or {}).get("votes", 0) >= 10
    ]
    assert shown
    for idea in shown:
        figures = idea.scores["weighted"]
        voted, weighted = round(100 * figures["agree"]), round(100 * figures["weighted_agree"])
        row = section.split(f">{idea.label}</a></th>", 1)[1].split("</tr>", 1)[0]
        assert f"<td>{voted}&nbsp;%</td><td>{weighted}&nbsp;%" in row


def test_without_population_shares_there_is_no_weighting(client, published):  # noqa: F811
    consultation, run = published
    assert "weighting" not in run.metrics
    assert not any(ProposalScore.objects.filter(run=run).values_list("weighted_counts", flat=True))
    assert 'id="weighting-title"' not in page_text(client, consultation)


def test_a_population_category_nobody_is_in_is_said_not_hidden(
    client, django_capture_on_commit_callbacks
):
    consultation = consultation_with_themes()
    add_votes(consultation)
    Participant.objects.filter(session_key__startswith=f"{consultation.slug}-voter-").update(
        age_range=YOUNG
    )
    shares(consultation, **{"18_24": "60", "65plus": "40"})
    run = start(consultation, django_capture_on_commit_callbacks)
    assert "no participant in categories" in run.metrics["weighting"]["skipped"]
    assert all(
        not wc
        for wc in ProposalScore.objects.filter(run=run).values_list("weighted_counts", flat=True)
    )
    html = page_text(client, consultation)
    assert "The participants could not be weighted" in html


# The population shares staff enter ------------------------------------------------------------

SharesFormSet = inlineformset_factory(
    Consultation,
    PopulationShare,
    formset=PopulationSharesFormSet,
    fields=["dimension", "value", "percent"],
    extra=0,
)


def formset_data(rows):
    data = {
        "population_shares-TOTAL_FORMS": str(len(rows)),
        "population_shares-INITIAL_FORMS": "0",
    }
    for i, (dimension, value, percent) in enumerate(rows):
        data.update(
            {
                f"population_shares-{i}-dimension": dimension,
                f"population_shares-{i}-value": value,
                f"population_shares-{i}-percent": percent,
            }
        )
    return data


def test_shares_of_a_dimension_must_sum_to_100():
    consultation = consultation_with_themes()
    ok = SharesFormSet(
        formset_data(
            [("gender", "f", "51.6"), ("gender", "m", "48.4"), ("age_range", "65+", "100")]
        ),
        instance=consultation,
    )
    assert ok.is_valid(), ok.errors
    bad = SharesFormSet(
        formset_data([("gender", "f", "51.6"), ("gender", "m", "40")]), instance=consultation
    )
    assert not bad.is_valid()
    assert "The shares of the gender sum to 91.6 %, not 100 %." in bad.non_form_errors()


@pytest.mark.parametrize(
    ("row", "message"),
    [
        (("gender", "65+", "100"), "is not a category of the gender"),
        (("age_range", "f", "100"), "is not a category of the age range"),
        (("age_range", "65+", "120"), "less than or equal to 100"),
        (("age_range", "65+", "-1"), "greater than or equal to 0"),
        (("age_range", "65+", "lots"), "Enter a number"),
    ],
)
def test_a_share_that_is_none_is_refused(row, message):
    formset = SharesFormSet(formset_data([row]), instance=consultation_with_themes())
    assert not formset.is_valid()
    assert message in str(formset.errors)


def admin_save(client, consultation, rows):
    """Saves the consultation's admin page with ``rows`` of population shares."""
    return consultation_admin_post(
        client,
        consultation,
        fields={"population_source": "Census 2025 (test)"},
        inlines={
            "population_shares": [
                {"dimension": dimension, "value": value, "percent": percent}
                for dimension, value, percent in rows
            ]
        },
    )


def test_staff_enter_the_population_shares_in_the_consultations_admin(admin_client):
    consultation = consultation_with_themes()
    refused = admin_save(admin_client, consultation, [("gender", "f", "60"), ("gender", "m", "30")])
    assert refused.status_code == 200
    assert "The shares of the gender sum to 90 %, not 100 %." in refused.content.decode()
    assert not PopulationShare.objects.exists()
    saved = admin_save(
        admin_client, consultation, [("gender", "f", "51.6"), ("gender", "m", "48.4")]
    )
    assert saved.status_code == 302
    assert sorted(
        PopulationShare.objects.filter(consultation=consultation).values_list("value", "percent")
    ) == [("f", Decimal("51.60")), ("m", Decimal("48.40"))]
    consultation.refresh_from_db()
    assert consultation.population_source == "Census 2025 (test)"


def test_weights_capped_short_of_the_population_are_said(client, weighted_run):
    consultation, run = weighted_run
    assert run.metrics["weighting"]["converged"] is True
    assert "were capped" not in page_text(client, consultation)
    run.metrics["weighting"]["converged"] = False
    run.save(update_fields=["metrics"])
    cache.clear()
    assert "their weights were capped at 5 times the mean" in page_text(client, consultation)
