"""The read-only JSON API of published results."""

import pytest
from django.urls import reverse
from django.utils import timezone

from causes.models import Cause
from consensus.models import EngineRun, Idea, IdeaMembership, ProposalScore, Theme
from consultations.models import Proposal, Vote, VoteKey
from consultations.services import counters_rebuild
from tests.factories import (
    CauseFactory,
    ConsultationFactory,
    ParticipantFactory,
    ProposalFactory,
    UserFactory,
)

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("english")]


def publish(consultation, proposals):
    run = EngineRun.objects.create(
        consultation=consultation, status=EngineRun.Status.DONE, finished_at=timezone.now()
    )
    theme = Theme.objects.create(run=run, number=0, label="", keywords=["idea"])
    ideas = [
        Idea.objects.create(
            run=run, consultation=consultation, number=n, label=f"Idea {n}", size=n + 1, share=0.5,
            scores={"zone": "consensus", "agreement": 0.5}, theme=theme if n else None,
        )
        for n in range(2)
    ]
    for i, proposal in enumerate(proposals):
        IdeaMembership.objects.create(
            run=run, idea=ideas[i % 2], proposal=proposal, similarity=0.5, is_central=True
        )
        ProposalScore.objects.create(
            run=run, proposal=proposal, zone="consensus" if i % 2 else "rejection", agreement=0.5,
            disagreement=0.3, neutral=0.2, top_score=i / 10, top_score_lower=0, top_score_upper=1,
            controversy=0, rejection=0,
        )
    consultation.current_run = run
    consultation.save(update_fields=["current_run"])
    return run


@pytest.fixture
def public():
    consultation = ConsultationFactory(question="How to open museums?")
    proposals = [ProposalFactory(consultation=consultation) for _ in range(5)]
    ProposalFactory(consultation=consultation, status=Proposal.Status.PENDING, content="pending one")
    for key in (VoteKey.AGREE, VoteKey.AGREE, VoteKey.DISAGREE):
        Vote.objects.create(participant=ParticipantFactory(), proposal=proposals[0], key=key)
    counters_rebuild(consultation=consultation)
    run = publish(consultation, proposals)
    return {"consultation": consultation, "proposals": proposals, "run": run}


@pytest.fixture
def private():
    cause = CauseFactory(kind=Cause.Kind.PRIVATE_CONSULTATION)
    consultation = ConsultationFactory(cause=cause, slug="private-one")
    proposals = [ProposalFactory(consultation=consultation, content="Il faut un secret")]
    publish(consultation, proposals)
    return consultation


def url(name, consultation=None, **query):
    path = reverse(f"api:{name}", kwargs={"slug": consultation.slug} if consultation else {})
    if query:
        path += "?" + "&".join(f"{k}={v}" for k, v in query.items())
    return path


def test_list_shows_public_consultations_only(client, public, private):
    ConsultationFactory(cause=CauseFactory(status=Cause.Status.DRAFT), slug="draft-one")
    data = client.get(url("consultations")).json()
    slugs = [c["slug"] for c in data["results"]]
    assert slugs == [public["consultation"].slug]
    assert data["results"][0]["results_published"] is True
    assert data["count"] == 1 and data["pages"] == 1


def test_private_consultation_is_404_even_for_members_and_staff(client, public, private):
    member = UserFactory(is_staff=True)
    private.cause.members.add(member)
    client.force_login(member)
    for name in ("consultation", "ideas", "proposals", "scores"):
        response = client.get(url(name, private))
        assert response.status_code == 404
        assert b"secret" not in response.content
    assert private.slug not in str(client.get(url("consultations")).json())


def test_detail_has_counters_run_and_links(client, public):
    data = client.get(url("consultation", public["consultation"])).json()
    assert data["question"] == "How to open museums?"
    assert data["stats"]["proposals"] == 5
    assert data["published_run"]["id"] == public["run"].pk
    assert data["links"]["ideas"].endswith(url("ideas", public["consultation"]))
    assert data["exports"]["votes"]["parquet"].endswith("/export/votes.parquet")


def test_ideas_are_paginated_with_central_proposals(client, public):
    data = client.get(url("ideas", public["consultation"], page_size=1)).json()
    assert data["count"] == 2 and data["pages"] == 2 and data["run_id"] == public["run"].pk
    assert data["results"][0]["label"] == "Idea 1"  # the larger one first
    assert data["next"].endswith("page=2") and data["previous"] is None
    page2 = client.get(url("ideas", public["consultation"], page_size=1, page=2)).json()
    assert page2["results"][0]["label"] == "Idea 0"
    assert page2["results"][0]["central_proposals"][0]["id"] == public["proposals"][0].pk
    # the theme of each idea, by number and stored label (empty here: no translated stand-in
    # in a response cached for every language)
    assert data["results"][0]["theme"] == {"number": 0, "label": ""}
    assert page2["results"][0]["theme"] is None


def test_proposals_have_votes_and_idea_and_leave_out_unaccepted(client, public):
    data = client.get(url("proposals", public["consultation"], page_size=2)).json()
    assert data["count"] == 5 and data["pages"] == 3
    first = data["results"][0]
    assert first["id"] == public["proposals"][0].pk
    assert first["votes"] == {"agree": 2, "disagree": 1, "neutral": 0, "total": 3}
    assert first["idea"] == 0
    assert "author" not in str(first) and "Camille" not in str(first)
    everything = client.get(url("proposals", public["consultation"], page_size=200)).json()
    assert "pending one" not in str(everything)
    of_idea = client.get(url("proposals", public["consultation"], idea=1)).json()
    assert [p["idea"] for p in of_idea["results"]] == [1, 1]


def test_scores_best_first_and_zone_filter(client, public):
    data = client.get(url("scores", public["consultation"])).json()
    tops = [s["top_score"] for s in data["results"]]
    assert tops == sorted(tops, reverse=True) and len(tops) == 5
    rejection = client.get(url("scores", public["consultation"], zone="rejection")).json()
    assert {s["zone"] for s in rejection["results"]} == {"rejection"} and rejection["count"] == 3


@pytest.mark.parametrize(
    ("name", "query", "status"),
    [
        ("proposals", {"page": "abc"}, 400),
        ("proposals", {"page": "0"}, 400),
        ("proposals", {"page_size": "1000"}, 400),
        ("proposals", {"page": "99"}, 404),
        ("proposals", {"idea": "x"}, 400),
        ("scores", {"zone": "nowhere"}, 400),
        ("ideas", {"page_size": "-1"}, 400),
    ],
)
def test_bad_parameters_get_a_clear_json_error(client, public, name, query, status):
    response = client.get(url(name, public["consultation"], **query))
    assert response.status_code == status
    error = response.json()["error"]
    assert error["status"] == status and error["message"]


def test_unknown_consultation_and_endpoint_are_json_404(client, public):
    response = client.get(reverse("api:consultation", kwargs={"slug": "nope"}))
    assert response.status_code == 404 and "nope" in response.json()["error"]["message"]
    response = client.get("/api/whatever/")
    assert response.status_code == 404 and response.json()["error"]["status"] == 404


def test_results_endpoints_are_404_before_a_published_run(client):
    consultation = ConsultationFactory()
    for name in ("ideas", "scores"):
        response = client.get(url(name, consultation))
        assert response.status_code == 404
        assert "no published results" in response.json()["error"]["message"]
    assert client.get(url("consultation", consultation)).json()["published_run"] is None


def test_writes_are_refused(client, public):
    response = client.post(url("consultations"))
    assert response.status_code == 405 and response.json()["error"]["status"] == 405
    assert client.delete(url("consultation", public["consultation"])).status_code == 405


def test_responses_are_cached_until_a_new_run_is_published(client, public, settings):
    settings.CONCORDE_API_CACHE_SECONDS = 60
    consultation = public["consultation"]
    first = client.get(url("ideas", consultation))
    assert "max-age=60" in first["Cache-Control"]
    Idea.objects.filter(run=public["run"]).update(label="Changed")
    assert client.get(url("ideas", consultation)).json() == first.json()  # from the cache
    new_run = publish(consultation, public["proposals"])
    Idea.objects.filter(run=new_run).update(label="New run")
    assert {i["label"] for i in client.get(url("ideas", consultation)).json()["results"]} == {"New run"}


def test_a_consultation_made_private_disappears_at_once_despite_the_cache(client, public):
    consultation = public["consultation"]
    assert client.get(url("consultation", consultation)).status_code == 200
    Cause.objects.filter(pk=consultation.cause_id).update(kind=Cause.Kind.PRIVATE_CONSULTATION)
    assert client.get(url("consultation", consultation)).status_code == 404


def test_proposal_page_reads_a_fixed_number_of_queries(client, public, django_assert_num_queries):
    # visibility, published run, count, page, vote counters, idea memberships
    with django_assert_num_queries(6):
        client.get(url("proposals", public["consultation"], page_size=1))
    with django_assert_num_queries(6):
        client.get(url("proposals", public["consultation"], page_size=5))
