"""A proposal's page says what the published analysis found of its votes: its category and
agreement score, and how each opinion group voted on it."""

import numpy as np
import pytest
from django.test import Client
from django.urls import reverse

from consensus import selectors, services
from consensus.models import (
    Idea,
    IdeaMembership,
    OpinionGroup,
    ParticipantProjection,
    ProposalEmbedding,
    ProposalScore,
)
from consultations.models import Proposal, Trust, Vote
from consultations.services import SESSION_PARTICIPANT

from ..factories import ConsultationFactory, ProposalFactory
from .engine_data import consultation_with_themes
from .test_results_views import published, start  # noqa: F401 - published: the fixture

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("english")]


def page_of(client, proposal):
    return " ".join(client.get(proposal.get_absolute_url()).content.decode().split())


def counted_by_group(run, proposal):
    """{group number: (agree, disagree, votes)}, counted from the votes the engine reads
    (trusted and sequence) of the participants the run put in each group."""
    group_of = dict(
        ParticipantProjection.objects.filter(run=run, group__isnull=False).values_list(
            "participant_id", "group"
        )
    )
    counts = {}
    for participant_id, key in Vote.objects.filter(
        proposal=proposal, trust__in=[Trust.TRUSTED, Trust.SEQUENCE]
    ).values_list("participant_id", "key"):
        if participant_id not in group_of:
            continue
        agree, disagree, votes = counts.get(group_of[participant_id], (0, 0, 0))
        counts[group_of[participant_id]] = (
            agree + (key == "agree"),
            disagree + (key == "disagree"),
            votes + 1,
        )
    return counts


def test_a_proposal_page_shows_how_each_opinion_group_voted(client, published):  # noqa: F811
    consultation, run = published
    assert OpinionGroup.objects.filter(run=run).count() >= 2
    # A proposal of the first theme: one camp agrees with it, the other disagrees.
    proposal = Proposal.objects.filter(consultation=consultation).order_by("pk").first()
    expected = counted_by_group(run, proposal)
    assert len(expected) >= 2

    page = page_of(client, proposal)

    assert "What the analysis of the votes says" in page
    shares = set()
    for number, (agree, disagree, votes) in sorted(expected.items()):
        said = (
            f"Group {number + 1}</span>",
            f"{round(100 * agree / votes)} % agree, {round(100 * disagree / votes)} % disagree, "
            f"of {votes} votes",
        )
        assert said[1] in page.split(said[0], 1)[1].split("</li>", 1)[0]
        shares.add(round(100 * agree / votes))
    assert shares == {0, 100}  # the two camps, each in a group of its own
    score = ProposalScore.objects.get(run=run, proposal=proposal)
    votes = score.n_trusted + score.n_sequence
    assert f"Agreement score {round(100 * score.agreement)} % · {votes} votes" in page
    assert f"<strong>{score.get_zone_display()}</strong>" in page
    assert "#method-title" in page


def test_a_proposal_everybody_agrees_with_is_agreed_in_every_group(client, published):  # noqa: F811
    consultation, run = published
    agreed = Proposal.objects.filter(consultation=consultation).order_by("pk")[36]  # trees
    analysis = selectors.proposal_analysis(proposal=agreed)

    assert analysis["score"].zone == ProposalScore.Zone.CONSENSUS
    assert [row["disagree"] for row in analysis["groups"]] == [0] * len(analysis["groups"])
    assert all(row["agree"] == row["votes"] > 0 for row in analysis["groups"])
    page = page_of(client, agreed)
    assert page.count("100 % agree, 0 % disagree") == len(analysis["groups"])
    assert "Consensus across opinion groups:" in page


def test_without_enough_votes_the_page_says_so_rather_than_a_category(client, published):  # noqa: F811
    consultation, run = published
    proposal = Proposal.objects.filter(consultation=consultation).order_by("pk").first()
    scores = ProposalScore.objects.filter(run=run, proposal=proposal)
    scores.update(zone=ProposalScore.Zone.UNSCORED)

    page = page_of(client, proposal)

    assert "Not enough votes yet on this site to place this proposal in a category." in page
    assert "Agreement score" not in page
    assert "By opinion group" in page  # what the groups' votes say still shows
    # with no vote from any group either, there is nothing to say: no section
    scores.update(group_counts=[])
    assert selectors.proposal_analysis(proposal=proposal) is None
    assert "What the analysis of the votes says" not in page_of(client, proposal)


def test_no_analysis_before_a_run_nor_for_a_proposal_accepted_since(client, published):  # noqa: F811
    consultation, _run = published
    later = ProposalFactory(consultation=consultation, content="Il faut ouvrir les musées le soir")
    assert selectors.proposal_analysis(proposal=later) is None
    assert "What the analysis of the votes says" not in page_of(client, later)

    fresh = ProposalFactory(consultation=ConsultationFactory(), content="Il faut des bancs")
    assert selectors.proposal_analysis(proposal=fresh) is None
    assert "What the analysis of the votes says" not in page_of(client, fresh)


def idea_counted_by_group(run, idea):
    """{group number: (agree, disagree, votes)} over the idea's proposals, from the votes."""
    total = {}
    for membership in IdeaMembership.objects.filter(run=run, idea=idea).select_related("proposal"):
        for number, counts in counted_by_group(run, membership.proposal).items():
            total[number] = tuple(
                a + b for a, b in zip(total.get(number, (0, 0, 0)), counts, strict=True)
            )
    return total


def as_group_counts(run, expected):
    """``expected`` as an idea's scores keep it: [agree, disagree, votes] per group, in order."""
    numbers = (
        OpinionGroup.objects.filter(run=run).order_by("number").values_list("number", flat=True)
    )
    return [list(expected.get(number, (0, 0, 0))) for number in numbers]


def test_an_idea_page_shows_how_each_opinion_group_voted_on_its_proposals(client, published):  # noqa: F811
    consultation, run = published
    ideas = [
        idea
        for idea in Idea.objects.filter(run=run, size__gt=0)
        if idea_counted_by_group(run, idea)
    ]
    assert ideas
    for idea in ideas:
        expected = idea_counted_by_group(run, idea)
        assert idea.scores["group_counts"] == as_group_counts(run, expected)
        url = reverse("consensus:results_idea", args=[consultation.slug, idea.number])
        page = " ".join(client.get(url).content.decode().split())
        section = page.split('id="idea-groups-title"', 1)[1].split("</section>", 1)[0]
        for number, (agree, disagree, votes) in sorted(expected.items()):
            row = section.split(f"Group {number + 1}</span>", 1)[1].split("</li>", 1)[0]
            assert (
                f"{round(100 * agree / votes)} % agree, {round(100 * disagree / votes)} % "
                f"disagree, of {votes} votes"
            ) in row


def test_a_merge_counts_the_groups_votes_of_the_merged_idea_again(
    published,  # noqa: F811
    django_capture_on_commit_callbacks,
):
    _consultation, run = published
    first, second = Idea.objects.filter(run=run, size__gt=0).order_by("-size")[:2]
    with django_capture_on_commit_callbacks(execute=True):
        services.idea_merge(run_id=run.pk, idea_id=first.pk, into_id=second.pk)
    second.refresh_from_db()
    first.refresh_from_db()
    assert second.scores["group_counts"] == as_group_counts(run, idea_counted_by_group(run, second))
    assert first.scores["group_counts"] == as_group_counts(run, {})  # emptied


def test_no_group_section_for_an_idea_of_a_run_without_opinion_groups(
    client, django_capture_on_commit_callbacks
):
    consultation = consultation_with_themes()  # nobody voted: no opinion groups
    start(consultation, django_capture_on_commit_callbacks)
    idea = Idea.objects.filter(run=consultation.current_run, size__gt=0).first()
    assert idea.scores["group_counts"] == []
    url = reverse("consensus:results_idea", args=[consultation.slug, idea.number])
    assert "By opinion group" not in client.get(url).content.decode()


def vector_of(run, proposal):
    raw = ProposalEmbedding.objects.get(run=run, proposal=proposal).vector
    return np.frombuffer(bytes(raw), dtype=np.float16).astype(np.float32)


def test_the_ideas_just_as_close_are_those_whose_centre_is_as_close_as_its_own(published):  # noqa: F811
    _consultation, run = published
    ideas = list(Idea.objects.filter(run=run, size__gt=0, centroid__isnull=False))
    centres = {i.pk: np.frombuffer(bytes(i.centroid), dtype=np.float32) for i in ideas}

    def cosine(vector, idea):
        centre = centres[idea.pk]
        return float(vector @ centre / np.linalg.norm(centre))

    checked = 0
    for membership in IdeaMembership.objects.filter(run=run).select_related("proposal", "idea"):
        vector = vector_of(run, membership.proposal)
        own = cosine(vector, membership.idea)
        expected = sorted(
            (i for i in ideas if i.pk != membership.idea_id and cosine(vector, i) >= own),
            key=lambda i: (-cosine(vector, i), i.number),
        )[:2]
        found = selectors.proposal_also_close(proposal=membership.proposal, idea=membership.idea)
        assert [i.pk for i in found] == [i.pk for i in expected]
        checked += 1
    assert checked >= 40


def test_a_proposal_page_names_an_idea_whose_centre_is_its_very_meaning(client, published):  # noqa: F811
    consultation, run = published
    membership = IdeaMembership.objects.filter(run=run).select_related("proposal", "idea").first()
    other = Idea.objects.filter(run=run, size__gt=0).exclude(pk=membership.idea_id).first()
    other.centroid = vector_of(run, membership.proposal).tobytes()  # a cosine of 1
    other.save(update_fields=["centroid"])

    found = selectors.proposal_also_close(proposal=membership.proposal, idea=membership.idea)
    page = page_of(client, membership.proposal)

    assert found[0] == other
    section = page.split("Its meaning is just as close to:", 1)[1].split("</ul>", 1)[0]
    url = reverse("consensus:results_idea", args=[consultation.slug, other.number])
    assert f'<a href="{url}">{other.label}</a>' in section
    # without its vector, nothing is said
    ProposalEmbedding.objects.filter(proposal=membership.proposal).delete()
    assert selectors.proposal_also_close(proposal=membership.proposal, idea=membership.idea) == []
    assert "Its meaning is just as close to:" not in page_of(client, membership.proposal)


def test_a_voter_sees_where_they_stand_and_nobody_else_sees_it(client, published):  # noqa: F811
    consultation, run = published
    url = reverse("consensus:results", args=[consultation.slug])
    assert "Where you stand:" not in client.get(url).content.decode()  # fills the shared cache
    projection = (
        ParticipantProjection.objects.filter(run=run, group__isnull=False)
        .select_related("participant")
        .first()
    )
    group = OpinionGroup.objects.get(run=run, number=projection.group)
    session = client.session
    session[SESSION_PARTICIPANT] = projection.participant.session_key
    session.save()

    page = " ".join(client.get(url).content.decode().split())

    assert (
        "the last analysis of the votes put you in "
        f'<a href="#groups-title">opinion group {group.number + 1}</a>: '
        f"{group.size} participants who vote alike."
    ) in page
    # another browser is told nothing, and nor is a voter the run put in no group
    assert "Where you stand:" not in Client().get(url).content.decode()
    ParticipantProjection.objects.filter(pk=projection.pk).update(group=None)
    assert "Where you stand:" not in client.get(url).content.decode()
