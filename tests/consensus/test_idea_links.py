"""From a proposal to its idea, from an idea to its theme and its closest ideas."""

import re

import numpy as np
import pytest
from django.urls import reverse
from django.utils import translation
from django.utils.html import escape

from consensus import selectors
from consensus.models import EngineRun, Idea, IdeaMembership
from consultations.models import Proposal

from .engine_data import consultation_with_themes
from .test_results_views import start

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("english")]


def page(client, proposal, **headers):
    url = reverse("consultations:proposal", args=[proposal.consultation.slug, proposal.pk])
    return client.get(url, headers=headers)


def links(body):
    return re.findall(r'href="([^"]+)"', body)


@pytest.fixture
def published(django_capture_on_commit_callbacks):
    consultation = consultation_with_themes()
    return consultation, start(consultation, django_capture_on_commit_callbacks)


def test_each_proposal_names_its_idea_and_three_others_closest_to_its_centre(client, published):
    consultation, run = published
    memberships = IdeaMembership.objects.filter(run=run).select_related("idea", "proposal")
    assert memberships.count() == 48
    for membership in memberships:
        idea, proposal = membership.idea, membership.proposal
        body = page(client, proposal).content.decode()
        idea_url = reverse("consensus:results_idea", args=[consultation.slug, idea.number])
        assert (
            f'puts this one in the idea <a href="{idea_url}">{escape(idea.label)}</a>, '
            f"with {idea.size} proposals ({round(idea.share * 100)}&nbsp;% of all proposals)"
            in body
        )
        for word in idea.keywords[:6]:
            assert f'<span class="keyword">{escape(word)}</span>' in body
        section = body[body.index('id="idea-title"') :]
        # the others: the idea's members closest to its centre, neither this proposal nor the
        # one whose text names the idea
        expected = [
            m.proposal_id
            for m in IdeaMembership.objects.filter(idea=idea)
            .exclude(proposal=proposal)
            .exclude(proposal__content=idea.label)
            .order_by("-similarity", "pk")[:3]
        ]
        assert len(expected) == 3
        shown = [
            int(m) for m in re.findall(rf"/c/{consultation.slug}/p/(\d+)/", "".join(links(section)))
        ]
        assert shown == expected
        assert f'<a href="{idea_url}">All its {idea.size} proposals</a>' in section


def test_the_others_leave_out_a_proposal_refused_since_the_run(client, published):
    consultation, run = published
    idea = Idea.objects.filter(run=run).order_by("number").first()
    members = list(idea.memberships.order_by("-similarity", "pk").select_related("proposal"))
    proposal = members[-1].proposal
    shown_before = selectors.idea_others(idea=idea, proposal=proposal)
    refused = shown_before[0].proposal
    refused.status, refused.refusal_reason = Proposal.Status.REFUSED, "personal_data"
    refused.save(update_fields=["status", "refusal_reason"])
    body = page(client, proposal).content.decode()
    assert escape(refused.content) not in body
    assert len(selectors.idea_others(idea=idea, proposal=proposal)) == 3


def test_no_idea_section_without_a_published_run_or_outside_every_idea(
    client, published, django_capture_on_commit_callbacks
):
    consultation, run = published
    membership = IdeaMembership.objects.filter(run=run).select_related("proposal").first()
    proposal = membership.proposal
    assert "The idea it belongs to" in page(client, proposal).content.decode()

    # the analysis put it in no idea
    membership.delete()
    assert "The idea it belongs to" not in page(client, proposal).content.decode()

    # an idea staff emptied (its page is gone): no link to it
    other = IdeaMembership.objects.filter(run=run).select_related("proposal").first()
    Idea.objects.filter(pk=other.idea_id).update(size=0)
    assert "The idea it belongs to" not in page(client, other.proposal).content.decode()

    # a run that is not published yet: nothing from it
    other = (
        IdeaMembership.objects.filter(run=run, idea__size__gt=0)
        .select_related("proposal")
        .first()
        .proposal
    )
    consultation.current_run = None
    consultation.save(update_fields=["current_run"])
    assert selectors.proposal_idea(proposal=other) is None
    assert "The idea it belongs to" not in page(client, other).content.decode()

    # a published run that failed afterwards is not read
    consultation.current_run = run
    consultation.save(update_fields=["current_run"])
    EngineRun.objects.filter(pk=run.pk).update(status=EngineRun.Status.FAILED)
    assert "The idea it belongs to" not in page(client, other).content.decode()


def test_a_consultation_never_analysed_shows_no_idea(client):
    consultation = consultation_with_themes()
    proposal = Proposal.objects.filter(
        consultation=consultation, status=Proposal.Status.ACCEPTED
    ).first()
    response = page(client, proposal)
    assert response.status_code == 200
    assert "The idea it belongs to" not in response.content.decode()


def test_the_idea_of_the_latest_published_run(
    client, published, django_capture_on_commit_callbacks
):
    consultation, first = published
    second = start(consultation, django_capture_on_commit_callbacks)
    assert second.pk != first.pk
    membership = IdeaMembership.objects.filter(run=second).select_related("idea", "proposal")[0]
    # rename the idea in the second run only: the page shows that name
    Idea.objects.filter(pk=membership.idea_id).update(label="Renamed in the second run")
    body = page(client, membership.proposal).content.decode()
    assert "Renamed in the second run" in body


def test_a_vote_from_the_page_swaps_the_vote_box_only(client, published):
    consultation, run = published
    proposal = IdeaMembership.objects.filter(run=run).first().proposal
    response = page(client, proposal, **{"HX-Request": "true"})
    body = response.content.decode()
    assert 'id="vote-box"' in body
    assert "The idea it belongs to" not in body


def test_the_page_reads_the_idea_in_a_few_queries(client, published, django_assert_max_num_queries):
    consultation, run = published
    proposal = IdeaMembership.objects.filter(run=run).first().proposal
    page(client, proposal)
    with django_assert_max_num_queries(12):
        assert page(client, proposal).status_code == 200


def test_in_french(client, published):
    consultation, run = published
    membership = IdeaMembership.objects.filter(run=run).select_related("idea", "proposal")[0]
    with translation.override("fr"):
        body = page(client, membership.proposal, **{"Accept-Language": "fr"}).content.decode()
    assert "L’idée dont elle fait partie" in body or "L'idée dont elle fait partie" in body
    assert f"avec {membership.idea.size}" in body


def test_a_one_proposal_idea_reads_in_the_singular(client, published):
    consultation, run = published
    membership = IdeaMembership.objects.filter(run=run).select_related("idea", "proposal")[0]
    idea = membership.idea
    # one of the run's ideas, left with this proposal alone
    IdeaMembership.objects.filter(idea=idea).exclude(pk=membership.pk).delete()
    Idea.objects.filter(pk=idea.pk).update(size=1)
    body = page(client, membership.proposal).content.decode()
    assert "its only proposal." in body
    assert "Other representative proposals" not in body


# An idea's page: its theme and the ideas closest to it


def idea_page(client, consultation, number):
    return client.get(reverse("consensus:results_idea", args=[consultation.slug, number]))


def centre(idea):
    vector = np.frombuffer(bytes(idea.centroid), dtype=np.float32).astype(np.float64)
    return vector / np.linalg.norm(vector)


def test_an_ideas_page_links_its_theme_and_the_three_ideas_closest_to_its_centre(client, published):
    consultation, run = published
    ideas = list(Idea.objects.filter(run=run, size__gt=0).select_related("theme"))
    assert len(ideas) >= 4 and all(i.centroid for i in ideas)
    for idea in ideas:
        body = idea_page(client, consultation, idea.number).content.decode()
        related = body[body.index('id="related-title"') : body.index('id="members-title"')]
        theme_url = reverse("consensus:results_ideas", args=[consultation.slug])
        assert f'<a href="{theme_url}?theme={idea.theme.number}">{escape(idea.theme)}</a>' in (
            related
        )
        others = [o for o in ideas if o.pk != idea.pk]
        expected = sorted(others, key=lambda o: (-float(centre(o) @ centre(idea)), o.number))[:3]
        shown = [int(n) for n in re.findall(r"/results/ideas/(\d+)/", related)]
        assert shown == [o.number for o in expected]
        # fewer than all the others: the farthest are left out
        closest = selectors.idea_neighbours(idea=idea, limit=2)
        assert [o.pk for o in closest] == [o.pk for o in expected[:2]]
        for other in expected:
            assert f'{escape(other.label)}</a> <span class="meta">({other.size} proposals)' in (
                related
            )


def test_no_neighbour_is_an_emptied_idea_or_one_without_a_centre(client, published):
    consultation, run = published
    idea, *others = Idea.objects.filter(run=run, size__gt=0).order_by("number")
    first = selectors.idea_neighbours(idea=idea)
    assert len(first) == 3 and all(o.cosine <= 1.0 + 1e-6 for o in first)
    assert [o.cosine for o in first] == sorted((o.cosine for o in first), reverse=True)
    Idea.objects.filter(pk=first[0].pk).update(size=0)  # staff moved all its proposals out
    Idea.objects.filter(pk=first[1].pk).update(centroid=None)
    after = [o.pk for o in selectors.idea_neighbours(idea=idea)]
    assert first[0].pk not in after and first[1].pk not in after
    assert after[0] == first[2].pk
    # an idea without a centre has no neighbours: the section keeps its theme only
    Idea.objects.filter(pk=idea.pk).update(centroid=None)
    assert selectors.idea_neighbours(idea=idea) == []
    body = idea_page(client, consultation, idea.number).content.decode()
    assert "Its theme:" in body and "closest to it in meaning" not in body


def test_a_run_of_one_idea_shows_no_related_section(client, published):
    consultation, run = published
    idea = Idea.objects.filter(run=run, size__gt=0).order_by("number").first()
    Idea.objects.filter(run=run).exclude(pk=idea.pk).update(size=0)
    Idea.objects.filter(pk=idea.pk).update(theme=None)
    body = idea_page(client, consultation, idea.number).content.decode()
    assert 'id="related-title"' not in body


def test_the_related_ideas_in_french(client, published):
    consultation, run = published
    idea = Idea.objects.filter(run=run, size__gt=0).order_by("number").first()
    with translation.override("fr"):
        url = reverse("consensus:results_idea", args=[consultation.slug, idea.number])
        body = client.get(url, HTTP_ACCEPT_LANGUAGE="fr").content.decode()
    assert "Idées proches" in body and "Son thème" in body
