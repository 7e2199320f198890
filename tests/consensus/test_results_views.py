"""The public results page of a consultation's current engine run."""

import csv
import io
import random
import re
from unittest import mock

import pytest
from django.core.cache import cache
from django.db.models import Count
from django.urls import reverse
from django.utils import timezone, translation
from django.utils.html import escape

from actions.models import Action
from causes.models import Cause
from consensus import charts, results_views, selectors, services
from consensus.models import EngineRun, Idea, IdeaMembership, OpinionGroup, ParticipantProjection
from consultations.models import Participant, Proposal
from consultations.selectors import consultation_stats
from partners.models import PartnerMembership

from ..actions.factories import ActionFactory, ActionPlanFactory
from ..factories import (
    CauseFactory,
    ConsultationFactory,
    PartnerFactory,
    ProposalFactory,
    UserFactory,
)
from .engine_data import HASHING, add_votes, consultation_with_themes

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("english")]


def results_url(consultation):
    return reverse("consensus:results", args=[consultation.slug])


def start(consultation, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        run = services.engine_run_start(consultation=consultation, kind="full", **HASHING)
    run.refresh_from_db()
    assert run.status == EngineRun.Status.DONE, run.error
    consultation.refresh_from_db()
    assert consultation.current_run_id == run.pk
    return run


@pytest.fixture
def published(django_capture_on_commit_callbacks):
    consultation = consultation_with_themes()
    add_votes(consultation)
    # 20 participants aged 25-34 (enough for k=10), 3 aged 65+ (too few), the rest unknown.
    voters = list(
        Participant.objects.filter(session_key__startswith=f"{consultation.slug}-voter-").order_by(
            "pk"
        )
    )
    Participant.objects.filter(pk__in=[p.pk for p in voters[:20]]).update(age_range="25-34")
    Participant.objects.filter(pk__in=[p.pk for p in voters[20:23]]).update(age_range="65+")
    run = start(consultation, django_capture_on_commit_callbacks)
    return consultation, run


def test_results_page_shows_real_ideas_groups_and_method(
    client, published, django_assert_max_num_queries
):
    consultation, run = published
    # cold cache: consultation, run, ideas by zone, largest ideas, ideas with votes at the
    # source, central proposals, vote shares, actions, themes (2), groups and their proposals,
    # map (2); the live counters are only peeked at in the cache
    with django_assert_max_num_queries(14):
        response = client.get(results_url(consultation))
    assert response.status_code == 200
    assert "HX-Request" in response["Vary"]
    body = response.content.decode()
    labels = list(Idea.objects.filter(run=run).values_list("label", flat=True))
    assert labels
    zoned = [
        i
        for i in Idea.objects.filter(run=run)
        if (i.scores or {}).get("zone") in ("consensus", "controversy", "rejection")
    ]
    assert zoned, "the themed votes should put some ideas in a zone"
    assert any(escape(i.label) in body for i in zoned)
    voted = max(zoned, key=lambda i: i.scores["trusted_votes"])
    assert f"· {voted.scores['trusted_votes']} trusted votes" in body
    assert f"#{run.pk}" in body
    assert "hashing" in body
    assert 'id="segments"' in body


def test_the_method_says_in_plain_words_how_ideas_were_found(client, published):
    consultation, run = published
    body = client.get(results_url(consultation)).content.decode()
    method = body[body.index('id="method-title"') :]
    assert "How ideas are found" in method
    assert "proposals closest to it in meaning" in method  # the default graph method
    assert run.metrics["lexical_weight"] == 0.6
    assert "the words proposals share bring them closer" in method
    assert run.metrics["lexical_skip_frame"] is False  # its proposals carry no "Il faut"
    assert "Not the opening words every proposal shares" not in method
    assert "Word-form hashing, no model" in method  # the model, named for people
    metrics = run.metrics
    assert f"{metrics['n_proposals']} proposals, {metrics['n_unique_texts']} distinct texts" in (
        method
    )
    # the raw settings stay, folded away, for anyone reproducing the run
    details = method[method.index("<details>") : method.index("</details>")]
    assert f"<code>{run.model_name}</code>" in details and "chunk_size=" in details
    assert "stay together when the grouping is made coarser" not in method
    run.parameters = {**run.parameters, "persistence_ratio": 1.5}  # the opt-in gathering
    run.save(update_fields=["parameters"])
    run.metrics = {**run.metrics, "lexical_skip_frame": True}  # as for "Il faut ..." proposals
    run.save(update_fields=["metrics"])
    cache.clear()
    body = client.get(results_url(consultation)).content.decode()
    assert "stay together when the grouping is made coarser" in body
    assert "Not the opening words every proposal shares, nor the verb after them" in body
    run.parameters = {**run.parameters, "method": "agglomerative"}
    run.save(update_fields=["parameters"])
    cache.clear()
    body = client.get(results_url(consultation)).content.decode()
    assert "grouped into ideas" in body and "closest to it in meaning" not in body
    run.metrics = {**run.metrics, "lexical_weight": 0.0}  # a run on the embeddings alone
    run.save(update_fields=["metrics"])
    cache.clear()
    assert "words proposals share" not in client.get(results_url(consultation)).content.decode()
    with translation.override("fr"):
        french = client.get(results_url(consultation), HTTP_ACCEPT_LANGUAGE="fr").content.decode()
    assert "Comment les idées sont trouvées" in french
    assert f"{metrics['n_unique_texts']} textes distincts" in french
    assert "<code>persistence_ratio=1.5</code>" in french  # settings as typed, not "1,5"


def test_the_method_says_how_the_agreement_score_sets_an_ideas_category(
    client, published, django_capture_on_commit_callbacks
):
    consultation, run = published
    assert run.metrics["non_sequence_votes_weight"] == 0.5  # the consultation's, when it ran
    body = client.get(results_url(consultation)).content.decode()
    method = body[body.index('id="method-title"') :]
    assert "An idea's agreement score is the share of its votes that agree" in method
    assert "All trusted votes weigh 50 % of the score, the sequence's votes the rest." in method
    assert "Key ideas have an agreement score of at least 60 %" in method
    assert f"An idea needs {services.min_zone_votes()} trusted votes to have a category." in method
    n_votes, n_participants = run.metrics["n_votes"], run.metrics["n_participants"]
    assert n_votes >= 1000  # grouped by the language: "1,920", "1 920"
    assert f"<dt>Trusted votes analysed</dt><dd>{n_votes:,}</dd>" in method
    # not "Participants": the live counters above count every participant, now
    assert f"<dt>Participants whose votes were analysed</dt><dd>{n_participants:,}</dd>" in method
    # each card's score is the one the category reads, named as such
    voted = max(
        (i for i in Idea.objects.filter(run=run) if i.scores.get("trusted_votes")),
        key=lambda i: i.scores["trusted_votes"],
    )
    card = body[body.index(escape(voted.label)) :]
    assert f"agreement score:</abbr> {round(voted.scores['agreement'] * 100)} %" in card
    assert "agreement:" not in body

    # the weight of the run that made the results, not the consultation's since
    consultation.non_sequence_votes_weight = 1.0
    consultation.save(update_fields=["non_sequence_votes_weight"])
    cache.clear()
    assert "weigh 50 % of the score" in client.get(results_url(consultation)).content.decode()
    second = start(consultation, django_capture_on_commit_callbacks)
    assert second.metrics["non_sequence_votes_weight"] == 1.0
    assert "weigh 100 % of the score" in client.get(results_url(consultation)).content.decode()
    # a run made before the weight was recorded says nothing of it
    second.metrics = {k: v for k, v in second.metrics.items() if k != "non_sequence_votes_weight"}
    second.save(update_fields=["metrics"])
    cache.clear()
    body = client.get(results_url(consultation)).content.decode()
    assert "An idea's agreement score" in body and "of the score, the sequence" not in body
    with translation.override("fr"):
        french = client.get(results_url(consultation), HTTP_ACCEPT_LANGUAGE="fr").content.decode()
    assert "Catégories" in french and "score d'accord" in french


def test_the_largest_ideas_show_before_anyone_votes(client, django_capture_on_commit_callbacks):
    consultation = consultation_with_themes()  # proposals, no vote
    run = start(consultation, django_capture_on_commit_callbacks)
    body = client.get(results_url(consultation)).content.decode()
    section = body[body.index('id="ideas-all"') :]
    ideas = list(Idea.objects.filter(run=run).order_by("-size", "pk"))
    assert ideas and not any((i.scores or {}).get("zone") in ("consensus",) for i in ideas)
    shown = ideas[: results_views.LARGEST_IDEAS]
    positions = [section.index(escape(i.label)) for i in shown]
    assert positions == sorted(positions)  # largest first
    assert f"the {len(shown)} largest of the {len(ideas)} it found" in section
    central = run.memberships.filter(idea=shown[0], is_central=True).select_related("proposal")
    assert central and all(escape(m.proposal.content) in section for m in central)
    # the idea is named after its most central proposal, which its card does not list again
    card = section[: section.index(escape(shown[1].label))]
    assert shown[0].label == central.order_by("-similarity")[0].proposal.content
    assert card.count(escape(shown[0].label)) == 1
    assert "Other representative proposals:" in card
    # no "0 trusted votes" on every card before any vote (the Method says how many it takes)
    assert "trusted vote" not in section[: section.index('id="method-title"')]
    services.idea_label_set(idea=shown[0], label="Named by staff")  # then it lists all three
    cache.clear()
    renamed = client.get(results_url(consultation)).content.decode()
    renamed = renamed[renamed.index('id="ideas-all"') :]
    card = renamed[: renamed.index(escape(shown[1].label))]
    assert "Its most representative proposals:" in card
    assert all(escape(m.proposal.content) in card for m in central)
    keywords = shown[0].keywords[:6]  # the words that set the idea apart, as tags
    assert keywords and all(
        f'<span class="keyword">{escape(w)}</span>' in section for w in keywords
    )
    assert 'href="#ideas-all"' in body
    assert "agreement score:" not in section  # no agreement figure without a single vote
    zones = body[body.index('id="ideas-consensual"') :]
    assert zones.count("an idea comes here once its proposals have enough votes") == 3
    # no idea has a zone yet: what the engine found comes before the (empty) zones
    assert body.index('id="ideas-all"') < body.index('id="ideas-consensual"')


def test_every_idea_page_lists_them_all_largest_first_a_page_at_a_time(
    client, published, monkeypatch
):
    consultation, run = published
    monkeypatch.setattr(results_views, "IDEAS_PER_PAGE", 2)
    monkeypatch.setattr(results_views, "LARGEST_IDEAS", 1)
    ideas = list(Idea.objects.filter(run=run).order_by("-size", "pk"))
    assert len(ideas) > 2, "the themed consultation should give several ideas"
    cache.clear()
    results = client.get(results_url(consultation)).content.decode()
    every = reverse("consensus:results_ideas", args=[consultation.slug])
    assert f'href="{every}"' in results and f"See all {len(ideas)} ideas" in results
    seen = []
    pages = -(-len(ideas) // 2)
    for number in range(1, pages + 1):
        response = client.get(every, {"page": number})
        assert response.status_code == 200
        body = response.content.decode()
        seen += [i for i in ideas[(number - 1) * 2 : number * 2] if escape(i.label) in body]
        assert f"Page {number} of {pages}" in body
    assert seen == ideas  # every idea, in size order, each on its page
    first = client.get(every).content.decode()
    central = run.memberships.filter(idea=ideas[0], is_central=True).select_related("proposal")
    assert all(escape(m.proposal.content) in first for m in central)
    assert 'rel="next"' in first and 'rel="prev"' not in first


@pytest.mark.parametrize(("page", "status"), [("two", 400), ("999", 404), ("0", 404), ("-1", 404)])
def test_every_idea_page_refuses_bad_pages(client, published, page, status):
    consultation, _run = published
    response = client.get(
        reverse("consensus:results_ideas", args=[consultation.slug]), {"page": page}
    )
    assert response.status_code == status


def test_the_results_show_the_themes_and_each_theme_lists_its_ideas(client, published, monkeypatch):
    consultation, run = published
    themes = selectors.run_themes(run=run)
    assert len(themes) == 2, "4 ideas give 2 themes"
    body = client.get(results_url(consultation)).content.decode()
    assert 'href="#themes-title"' in body
    section = body[body.index('id="themes"') :]
    section = section[: section.index("</section>")]
    every = reverse("consensus:results_ideas", args=[consultation.slug])
    positions = [section.index(escape(str(theme))) for theme in themes]
    assert positions == sorted(positions)  # most proposals first
    for theme in themes:
        share = round(100 * theme.size / run.metrics["n_proposals"])
        assert f'href="{every}?theme={theme.number}"' in section
        assert f"{theme.size} proposals · {share} % of all proposals" in section
        assert all(escape(idea.label) in section for idea in theme.top_ideas)
    assert 'width="100"' in section  # the widest bar fills its line

    # a theme's page lists its ideas and no other, a page at a time
    monkeypatch.setattr(results_views, "IDEAS_PER_PAGE", 1)
    theme = themes[0]
    own = list(Idea.objects.filter(run=run, theme=theme).order_by("-size", "pk"))
    others = Idea.objects.filter(run=run).exclude(theme=theme)
    page = client.get(every, {"theme": theme.number}).content.decode()
    assert f"Theme: {escape(str(theme))}" in page and escape(own[0].label) in page
    assert not any(escape(idea.label) in page for idea in others)
    if len(own) > 1:
        assert f'href="?theme={theme.number}&amp;page=2"' in page  # the pager keeps the theme


def test_visitors_find_the_ideas_whose_proposals_say_some_words(client, published, settings):
    consultation, run = published
    every = reverse("consensus:results_ideas", args=[consultation.slug])
    saying = (
        IdeaMembership.objects.filter(run=run, proposal__content__icontains="vélo")
        .values_list("idea__number")
        .annotate(n=Count("pk"))
    )
    counts = dict(saying)
    assert counts, "the cycling proposals say it"

    body = client.get(every, {"q": "vélo"}).content.decode()
    shown = [int(n) for n in re.findall(r'/results/ideas/(\d+)/"', body)]
    assert sorted(set(shown)) == sorted(counts)
    for n in counts.values():
        assert (
            f"{n} of its proposals say “vélo”" in body
            or f"{n} of its proposals says “vélo”" in body
        )
    assert 'name="q" value="vélo"' in body
    assert "The engine found" not in body  # its count is every idea's, not those found
    # none: said so, with the way back, and no "no idea yet" of the empty results
    body = client.get(every, {"q": "zorglub"}).content.decode()
    assert "No idea says “zorglub” in its proposals or its name." in body
    assert "No idea here yet" not in body and f'href="{every}">every idea</a>' in body
    body = client.get(every, {"q": "zorglub"}, HTTP_ACCEPT_LANGUAGE="fr").content.decode()
    assert "Aucune idée ne dit «\xa0zorglub\xa0» dans ses propositions ou son nom." in body
    # with a theme, the theme stays in the form and the way back
    theme = Idea.objects.get(run=run, number=next(iter(counts))).theme
    body = client.get(every, {"q": "vélo", "theme": theme.number}).content.decode()
    assert f'name="theme" value="{theme.number}"' in body
    # bad words: a clear error
    assert client.get(every, {"q": "x" * 101}).status_code == 400
    # searching takes a pass over the proposals: rate-limited (the plain list is not); a
    # search already made comes from the cache, and counts against no limit
    cache.clear()
    settings.CONCORDE_RATELIMITS = {"search": {"ip": "2/d"}}
    codes = [client.get(every, {"q": words}).status_code for words in ("vélo", "musées", "arbres")]
    assert codes == [200, 200, 429] and client.get(every).status_code == 200
    body = client.get(every, {"q": "vélo"}).content.decode()
    assert sorted({int(n) for n in re.findall(r'/results/ideas/(\d+)/"', body)}) == sorted(counts)
    assert client.get(every, {"q": "vélo", "theme": theme.number}).status_code == 200
    assert client.get(every, {"q": "Vélo"}).status_code == 429  # other words: another search
    cache.clear()


def test_a_cached_search_follows_the_proposals_staff_move(
    client, published, settings, django_capture_on_commit_callbacks
):
    consultation, run = published
    every = reverse("consensus:results_ideas", args=[consultation.slug])
    cache.clear()
    settings.CONCORDE_RATELIMITS = {"search": {"ip": "100/d"}}
    labels = set(Idea.objects.filter(run=run).values_list("label", flat=True))
    membership = next(
        m
        for m in IdeaMembership.objects.filter(run=run).select_related("idea", "proposal")
        if m.proposal.content not in labels
    )
    words = membership.proposal.content  # said by this proposal alone

    def found():
        """{idea number: its proposals that say the words}, from the cards of the page."""
        body = client.get(every, {"q": words}).content.decode()
        cards = body.split('<li class="card idea-card">')[1:]
        return {
            int(re.search(r'/results/ideas/(\d+)/"', card)[1]): int(
                re.search(r"(\d+) of its proposals says?", card)[1]
            )
            for card in cards
        }

    assert found() == {membership.idea.number: 1}
    target = Idea.objects.filter(run=run).exclude(pk=membership.idea_id).first()
    with django_capture_on_commit_callbacks(execute=True):
        services.proposals_place(
            run=run, proposal_ids=[membership.proposal_id], number=target.number, actor=None
        )
    assert found() == {target.number: 1}  # the move dropped the cached search
    cache.clear()


def test_a_search_still_answers_when_the_cache_is_down(client, published, settings, monkeypatch):
    consultation, _run = published
    every = reverse("consensus:results_ideas", args=[consultation.slug])
    settings.CONCORDE_RATELIMITS = {"search": {"ip": "100/d"}}

    def down(*args, **kwargs):
        raise ConnectionError("cache down")

    monkeypatch.setattr(results_views.cache, "get_or_set", down)
    monkeypatch.setattr(results_views.cache, "get", down)
    body = client.get(every, {"q": "vélo"}).content.decode()
    assert "of its proposals say" in body


@pytest.mark.parametrize(
    ("theme", "status"), [("one", 400), ("-1", 400), ("1.5", 400), ("٣", 400), ("99", 404)]
)
def test_a_theme_page_refuses_bad_or_unknown_themes(client, published, theme, status):
    consultation, _run = published
    url = reverse("consensus:results_ideas", args=[consultation.slug])
    assert client.get(url, {"theme": theme}).status_code == status


def test_no_theme_section_without_two_themes(client, django_capture_on_commit_callbacks):
    consultation = consultation_with_themes()
    with django_capture_on_commit_callbacks(execute=True):
        services.engine_run_start(
            consultation=consultation, kind="full", model_name="hashing", parameters={"n_themes": 0}
        )
    body = client.get(results_url(consultation)).content.decode()
    assert 'id="ideas-all"' in body
    assert 'id="themes"' not in body and "#themes-title" not in body


def idea_url(consultation, number):
    return reverse("consensus:results_idea", args=[consultation.slug, number])


def test_an_idea_page_lists_every_proposal_closest_first_a_page_at_a_time(
    client, published, monkeypatch, django_assert_max_num_queries
):
    consultation, run = published
    idea = Idea.objects.filter(run=run).order_by("-size", "pk").first()
    cache.clear()
    results = client.get(results_url(consultation)).content.decode()
    assert f'href="{idea_url(consultation, idea.number)}"' in results  # each card links to it
    members = list(
        run.memberships.filter(idea=idea).select_related("proposal").order_by("-similarity", "pk")
    )
    assert len(members) == idea.size > 4
    monkeypatch.setattr(results_views, "PROPOSALS_PER_PAGE", 4)
    # consultation, run, idea, members count and page, central proposals, vote shares,
    # actions, scores of the page's proposals, its opinion groups, the cause's other
    # consultations (none: the same idea elsewhere is not looked for), the partners' positions
    with django_assert_max_num_queries(13):
        response = client.get(idea_url(consultation, idea.number))
    assert response.status_code == 200
    body = response.content.decode()
    assert escape(idea.label) in body and all(escape(w) in body for w in idea.keywords[:6])
    assert 'class="cards idea-cards idea-cards-single"' in body  # the card spans the page
    assert "idea-cards-single" not in results
    assert f"The {len(members)} proposals in this idea" in body
    listed = body[body.index('id="members-title"') :]
    positions = [listed.index(escape(m.proposal.content)) for m in members[:4]]
    assert positions == sorted(positions)  # closest to the centre first
    proposal = reverse("consultations:proposal", args=[consultation.slug, members[0].proposal_id])
    assert f'href="{proposal}"' in listed
    assert "agreement " in listed and 'rel="next"' in listed
    last = -(-len(members) // 4)
    body = client.get(idea_url(consultation, idea.number), {"page": last}).content.decode()
    assert escape(members[-1].proposal.content) in body and f"Page {last} of {last}" in body
    # a proposal refused since the run leaves the public pages, central or not
    refused = next(m.proposal for m in members if m.is_central and m.proposal.content != idea.label)
    refused.status, refused.refusal_reason = Proposal.Status.REFUSED, "personal_data"
    refused.save(update_fields=["status", "refusal_reason"])
    cache.clear()
    body = client.get(idea_url(consultation, idea.number), {"page": 1}).content.decode()
    assert escape(refused.content) not in body
    assert f"The {len(members) - 1} proposals in this idea" in body


def test_visitors_read_the_proposals_of_an_idea_that_say_some_words(
    client, published, monkeypatch, settings
):
    consultation, run = published
    # "Planter des arbres ... sur les parkings / toits / places": 3 of the 12 about trees
    idea = run.memberships.get(proposal__content__endswith="sur les toits").idea
    saying = list(
        run.memberships.filter(idea=idea, proposal__content__icontains="sur les")
        .select_related("proposal")
        .order_by("-similarity", "pk")
    )
    others = run.memberships.filter(idea=idea).exclude(pk__in=[m.pk for m in saying])
    assert len(saying) > 2 and others.exists()
    cache.clear()
    settings.CONCORDE_RATELIMITS = {"search": {"ip": "100/d"}}
    # from the search of every idea, each count leads to those proposals
    every = reverse("consensus:results_ideas", args=[consultation.slug])
    body = client.get(every, {"q": "sur les"}).content.decode()
    link = f"{idea_url(consultation, idea.number)}?q=sur%20les#members-title"
    assert f'<a href="{link}">{len(saying)} of its proposals say “sur les”</a>' in body

    monkeypatch.setattr(results_views, "PROPOSALS_PER_PAGE", 2)
    body = client.get(idea_url(consultation, idea.number), {"q": "sur les"}).content.decode()
    listed = body[body.index('id="members-title"') :]
    assert f"{len(saying)} of its proposals say “sur les”</h2>" in listed
    assert 'name="q" value="sur les"' in listed  # the box keeps the words
    shown = [m for m in saying if escape(m.proposal.content) in listed]
    assert shown == saying[:2]  # closest to the centre first, none of the others
    assert not any(escape(m.proposal.content) in listed for m in others)
    assert 'href="?q=sur+les&amp;page=2"' in listed  # the pager keeps the words
    every_proposal = f'href="{idea_url(consultation, idea.number)}#members-title"'
    assert f"{every_proposal}>Every proposal of this idea</a>" in listed
    body = client.get(idea_url(consultation, idea.number), {"q": "zorglub"}).content.decode()
    assert "0 of its proposals say “zorglub”" in body
    # bad words, and too many searches: clear errors
    assert client.get(idea_url(consultation, idea.number), {"q": "x" * 101}).status_code == 400
    cache.clear()
    settings.CONCORDE_RATELIMITS = {"search": {"ip": "1/d"}}
    codes = [client.get(idea_url(consultation, idea.number), {"q": "sur les"}).status_code]
    codes.append(client.get(idea_url(consultation, idea.number), {"q": "sur les"}).status_code)
    assert (
        codes == [200, 429] and client.get(idea_url(consultation, idea.number)).status_code == 200
    )
    cache.clear()
    # French
    settings.CONCORDE_RATELIMITS = {"search": {"ip": "100/d"}}
    body = client.get(
        idea_url(consultation, idea.number), {"q": "sur les"}, HTTP_ACCEPT_LANGUAGE="fr"
    ).content.decode()
    assert f"{len(saying)} de ses propositions disent «\xa0sur les\xa0»</h2>" in body
    assert "Trouver ses propositions qui disent" in body
    cache.clear()


@pytest.mark.parametrize(
    ("number", "page", "status"), [(0, "two", 400), (0, "999", 404), (999, "1", 404)]
)
def test_an_idea_page_refuses_bad_pages_and_unknown_ideas(client, published, number, page, status):
    consultation, run = published
    first = Idea.objects.filter(run=run).order_by("number").first().number
    response = client.get(idea_url(consultation, first + number), {"page": page})
    assert response.status_code == status


def test_an_idea_page_follows_the_results_rules(client, published):
    consultation, run = published
    number = Idea.objects.filter(run=run).first().number
    private = ConsultationFactory(cause=CauseFactory(kind=Cause.Kind.PRIVATE_CONSULTATION))
    assert client.get(idea_url(private, number)).status_code == 404
    unanalysed = ConsultationFactory()
    assert client.get(idea_url(unanalysed, number)).status_code == 404
    assert client.get(idea_url(consultation, number)).status_code == 200


def test_a_proposal_refused_after_the_run_leaves_the_idea_labels_and_pages(
    client, published, django_capture_on_commit_callbacks, results_cache
):
    from consultations.moderation import moderation_decide

    consultation, run = published
    ideas = list(Idea.objects.filter(run=run).order_by("number"))
    named, idea = ideas[0], ideas[1]
    services.idea_label_set(idea=named, label="Named by staff")
    source = run.memberships.get(idea=idea, proposal__content=idea.label).proposal
    staff_source = run.memberships.filter(idea=named).order_by("-similarity").first().proposal
    assert escape(source.content) in client.get(results_url(consultation)).content.decode()
    moderator = UserFactory(is_staff=True, is_superuser=True)
    with django_capture_on_commit_callbacks(execute=True):
        for proposal in (source, staff_source):
            moderation_decide(
                moderator=moderator, proposal=proposal, decision="refuse", reason="personal_data"
            )
    idea.refresh_from_db()
    named.refresh_from_db()
    assert idea.label != source.content and not idea.named_by_staff
    assert idea.label in set(
        run.memberships.filter(idea=idea, proposal__status="accepted").values_list(
            "proposal__content", flat=True
        )
    )  # named after its most central proposal still published
    assert named.label == "Named by staff"  # a staff label is theirs: left alone
    body = client.get(results_url(consultation)).content.decode()  # the cache was dropped
    assert escape(source.content) not in body and escape(idea.label) in body
    # and an opinion group's representative statement
    group = OpinionGroup.objects.filter(run=run).exclude(representatives=[]).first()
    statement = Proposal.objects.get(pk=group.representatives[0]["proposal"])
    assert escape(statement.content) in body.split('id="groups-title"')[1].split("</section>")[0]
    with django_capture_on_commit_callbacks(execute=True):
        moderation_decide(
            moderator=moderator, proposal=statement, decision="refuse", reason="personal_data"
        )
    body = client.get(results_url(consultation)).content.decode()
    assert (
        escape(statement.content) not in body.split('id="groups-title"')[1].split("</section>")[0]
    )
    # a pending proposal refused: nothing published changes, the cached pages stay
    key = results_views.results_cache_key(
        consultation_id=consultation.pk, run_id=run.pk, section="sections"
    )
    assert cache.get(key) is not None
    pending = ProposalFactory(consultation=consultation, status=Proposal.Status.PENDING)
    with django_capture_on_commit_callbacks(execute=True):
        moderation_decide(
            moderator=moderator, proposal=pending, decision="refuse", reason="off_topic"
        )
    assert cache.get(key) is not None


def test_every_idea_page_follows_the_results_rules(client):
    private = ConsultationFactory(cause=CauseFactory(kind=Cause.Kind.PRIVATE_CONSULTATION))
    assert client.get(reverse("consensus:results_ideas", args=[private.slug])).status_code == 404
    no_run = ConsultationFactory()
    assert client.get(reverse("consensus:results_ideas", args=[no_run.slug])).status_code == 404


def test_an_idea_in_a_zone_and_among_the_largest_keeps_unique_element_ids(client, published):
    consultation, run = published
    body = client.get(results_url(consultation)).content.decode()
    ids = re.findall(r'\bid="([^"]+)"', body)
    assert len(ids) == len(set(ids)), [i for i in set(ids) if ids.count(i) > 1]
    # the vote-share charts of the largest ideas are there too, labelled by their own titles
    assert 'aria-labelledby="shares-all-' in body
    assert body.index('id="ideas-consensual"') < body.index('id="ideas-all"')  # zones first


def test_detail_page_links_to_results(client, published):
    consultation, _run = published
    response = client.get(consultation.get_absolute_url())
    assert results_url(consultation) in response.content.decode()


def test_private_consultation_is_404_for_outsiders(client):
    consultation = ConsultationFactory(cause=CauseFactory(kind=Cause.Kind.PRIVATE_CONSULTATION))
    assert client.get(results_url(consultation)).status_code == 404
    client.force_login(UserFactory())
    assert client.get(results_url(consultation)).status_code == 404
    assert client.get(reverse("consensus:results", args=["nope"])).status_code == 404


def test_no_run_yet_says_so(client):
    consultation = ConsultationFactory()
    response = client.get(results_url(consultation))
    assert response.status_code == 200
    assert "not available yet" in response.content.decode()
    assert "See the results" not in client.get(consultation.get_absolute_url()).content.decode()


def test_csv_has_header_and_one_row_per_idea(client, published):
    consultation, run = published
    response = client.get(results_url(consultation), {"format": "csv"})
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    assert (
        f'filename="{consultation.slug}-results-run-{run.pk}.csv"'
        in response["Content-Disposition"]
    )
    text = b"".join(response.streaming_content).decode()
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0][:3] == ["idea", "label", "zone"]
    assert len(rows) - 1 == Idea.objects.filter(run=run).count()
    assert {r[1] for r in rows[1:]} == set(
        Idea.objects.filter(run=run).values_list("label", flat=True)
    )
    # columns are added last, so that earlier ones keep their place
    assert rows[0][10:] == ["keywords", "theme", "theme_label", "source_votes", "source_adhesion"]
    assert {r[10] for r in rows[1:]} == {
        "; ".join(words)
        for words in Idea.objects.filter(run=run).values_list("keywords", flat=True)
    }
    assert {(r[0], r[11], r[12]) for r in rows[1:]} == {
        (str(number), str(theme), label)
        for number, theme, label in Idea.objects.filter(run=run).values_list(
            "number", "theme__number", "theme__label"
        )
    }
    assert {(r[13], r[14]) for r in rows[1:]} == {("0", "")}  # no proposal was imported


def test_segment_partial_by_htmx_hides_small_segments(
    client, published, settings, django_assert_max_num_queries
):
    settings.CONSENSUS_MIN_SEGMENT_SIZE = 10
    consultation, _run = published
    with django_assert_max_num_queries(5):
        response = client.get(
            results_url(consultation), {"dimension": "age_range"}, HTTP_HX_REQUEST="true"
        )
    assert response.status_code == 200
    assert "HX-Request" in response["Vary"]
    body = response.content.decode()
    assert body.lstrip().startswith('<div id="segments"')
    assert "<h1>" not in body
    assert "25–34" in body and "65" in body
    # the 65+ column (3 participants) never shows a figure, the 25-34 one (20) does
    rows = [r for r in body.split("<tr>")[2:]]
    assert rows
    for row in rows:
        first, second = row.split("<td>")[1:3]
        assert first.split("</td>")[0].strip().endswith("%")
        assert "too few participants" in second and "%" not in second


def test_segment_full_page_without_htmx(client, published):
    consultation, _run = published
    response = client.get(results_url(consultation), {"dimension": "gender"})
    assert response.status_code == 200
    assert "<h1>" in response.content.decode()


def test_bad_dimension_is_400(client, published):
    consultation, _run = published
    response = client.get(
        results_url(consultation), {"dimension": "income"}, HTTP_HX_REQUEST="true"
    )
    assert response.status_code == 400
    assert "age_range" in response.content.decode()


# Opinion map, vote-share charts, live counters, cache, query counts, permissions -----------------


@pytest.fixture
def results_cache(settings):
    settings.CONCORDE_RESULTS_CACHE_SECONDS = 600
    settings.CONCORDE_STATS_CACHE_SECONDS = 30
    cache.clear()
    yield
    cache.clear()


def test_page_draws_the_opinion_map_with_legend_and_text_alternative(client, published):
    consultation, run = published
    groups = list(OpinionGroup.objects.filter(run=run).order_by("number"))
    assert len(groups) >= 2, "two voting camps should give two opinion groups"
    placed = ParticipantProjection.objects.filter(run=run).count()
    body = client.get(results_url(consultation)).content.decode()
    svg = body.split('<figure class="chart opinion-map">', 1)[1].split("</figure>", 1)[0]
    assert 'role="img"' in svg and 'aria-labelledby="map-title map-desc"' in svg
    desc = svg.split('<desc id="map-desc">', 1)[1].split("</desc>", 1)[0]
    assert f"{placed} participants placed" in " ".join(desc.split())
    for g in groups:
        assert f"Group {g.number + 1}: {g.size} participants" in " ".join(desc.split())
        # legend names each group with its size, with its own shape and colour class
        assert f"Group {g.number + 1} ({g.size} participants)" in " ".join(svg.split())
        assert f'class="{charts.group_style(g.number)["css"]}"' in svg
    # one path per group (plus the ungrouped), one closed shape per occupied cell
    drawing = svg.split("</desc>", 1)[1].split("</svg>", 1)[0]
    layers = re.findall(r'<path class="(?:g\d|g-none)" d="([^"]+)"', drawing)
    assert 0 < len(layers) <= len(groups) + 1
    n_marks = sum(d.count("z") for d in layers)
    cols, rows = charts.MAP_GRID
    assert 0 < n_marks <= min(placed, cols * rows)
    # what each group stands for: its representative proposals, below the map
    cards = body.split('<ul class="cards group-cards">', 1)[1].split("</ul>\n</section>", 1)[0]
    for g in groups:
        for item in g.representatives:
            content = consultation.proposals.get(pk=item["proposal"]).content
            assert escape(content) in cards


def test_each_idea_has_a_vote_share_bar_with_its_percentages_in_text(client, published):
    consultation, run = published
    body = client.get(results_url(consultation)).content.decode()
    zoned = selectors.key_ideas(run=run)
    zone, idea = next((z, i) for z, group in zoned.items() for i in group)
    counts = selectors.run_idea_vote_counts(run=run, idea_ids=[idea.pk])[idea.pk]
    total = counts.get("agree", 0) + counts.get("neutral", 0) + counts.get("disagree", 0)
    assert total > 0
    card = body.split(f'aria-labelledby="shares-{zone}-{idea.pk}"', 1)[1].split("</figure>", 1)[0]
    agree = round(100 * counts.get("agree", 0) / total)
    assert f"Agree {agree} %" in card  # the text alternative (title)
    assert f"Agree <strong>{agree}&nbsp;%</strong>" in card  # the visible legend
    assert f"of {total} votes" in card


def test_share_bar_adds_up_and_gives_qualifications_per_side():
    bar = charts.share_bar(
        {"agree": 6, "neutral": 1, "disagree": 3, "doable": 3, "like_it": 1, "no_way": 3}
    )
    assert bar["total"] == 10
    assert [s["percent"] for s in bar["segments"]] == [60, 10, 30]
    assert abs(sum(float(s["width"]) for s in bar["segments"]) - charts.SHARE_WIDTH) < 0.5
    by_key = {q["key"]: q for q in bar["qualifications"]}
    assert by_key["doable"]["percent"] == 50  # 3 of the 6 agree votes
    assert by_key["no_way"]["percent"] == 100
    assert charts.share_bar({}) is None and charts.share_bar(None) is None


def test_group_styles_are_okabe_ito_with_distinct_shapes():
    styles = [charts.group_style(n) for n in range(len(charts.OKABE_ITO))]
    assert {s["colour"] for s in styles} <= set(charts.OKABE_ITO)
    assert len({s["shape"] for s in styles}) == len(styles)
    assert len({s["colour"] for s in styles}) == len(styles)
    for shape in charts.SHAPES:
        assert charts.marker_path(shape, 10, 10, 4).endswith("z")


def test_opinion_map_output_is_bounded_whatever_the_number_of_participants(published):
    _consultation, run = published
    groups = list(OpinionGroup.objects.filter(run=run))
    n_groups = len(groups)
    # 20,000 scattered cells from 3 groups + ungrouped: the grid caps the marks
    cells = [(i % 200, i // 200, (i % 4) if i % 4 < 3 else None, 1 + i % 5) for i in range(20_000)]
    bins = {"total": sum(c[3] for c in cells), "x0": 0.0, "y0": 0.0, "cell": 1.0}
    bins.update(cols=200, rows=100, cells=cells)
    drawn = charts.opinion_map(bins, groups)
    assert drawn["total"] == bins["total"]
    # one mark per occupied cell, one path per group
    assert drawn["marks"] == len({(c, r) for c, r, _g, _n in cells})
    assert len(drawn["layers"]) == 4
    real = selectors.run_opinion_map(run=run, grid=charts.MAP_GRID)
    cols, rows = charts.MAP_GRID
    assert real["cols"] <= cols and real["rows"] <= rows
    assert len(real["cells"]) <= cols * rows * (n_groups + 1)
    assert sum(c[3] for c in real["cells"]) == real["total"]
    assert real["total"] == ParticipantProjection.objects.filter(run=run).count()


def test_binning_a_large_projection_keeps_the_svg_small(published):
    consultation, run = published
    rng = random.Random(3)
    participants = Participant.objects.bulk_create(
        [Participant(session_key=f"map-{i}") for i in range(5_000)]
    )
    ParticipantProjection.objects.bulk_create(
        [
            ParticipantProjection(
                run=run,
                participant=p,
                x=rng.gauss(-1 if i % 2 else 1, 0.5),
                y=rng.gauss(0, 0.7),
                group=i % 2,
                in_conv=True,
            )
            for i, p in enumerate(participants)
        ]
    )
    cols, rows = charts.MAP_GRID
    bins = selectors.run_opinion_map(run=run, grid=charts.MAP_GRID)
    assert bins["total"] >= 5_000
    drawn = charts.opinion_map(bins, list(OpinionGroup.objects.filter(run=run)))
    assert drawn["marks"] <= cols * rows
    html = results_views._build_sections(consultation, run)["groups"]
    assert len(html) < 60_000


def test_counters_partial_polls_while_open_and_matches_the_stats(
    client, published, results_cache, django_assert_max_num_queries
):
    consultation, _run = published
    with django_assert_max_num_queries(3):
        response = client.get(
            results_url(consultation), {"part": "counters"}, HTTP_HX_REQUEST="true"
        )
    assert response.status_code == 200
    assert "HX-Request" in response["Vary"]
    body = response.content.decode()
    assert body.lstrip().startswith('<section id="live-counters"')
    assert 'hx-trigger="every 15s"' in body
    stats = consultation_stats(consultation=consultation)
    assert f'data-counter="votes">{stats["votes"]:,}<' in body.replace("\u202f", ",")
    assert f'data-counter="participants">{stats["participants"]}<' in body
    # warm: one query, the consultation itself
    with django_assert_max_num_queries(1):
        client.get(results_url(consultation), {"part": "counters"}, HTTP_HX_REQUEST="true")


def test_cached_sections_keep_french_no_break_spaces(client, published, results_cache):
    consultation, _ = published
    with translation.override("fr"):
        expected = translation.gettext("Other representative proposals:")
        assert expected.endswith("\u00a0:")  # "représentatives :", never cut before the colon
        for _ in ("built", "from the cache"):
            body = client.get(results_url(consultation), HTTP_ACCEPT_LANGUAGE="fr")
            assert expected in body.content.decode()
    assert results_views._compact("a \n\t b\u00a0:\u202f!") == "a b\u00a0:\u202f!"


def test_page_never_waits_for_the_counters_it_loads_them_when_not_cached(
    client, published, results_cache, django_assert_max_num_queries
):
    consultation, _run = published
    url = results_url(consultation)
    body = client.get(url).content.decode()
    counters = body.split('<section id="live-counters"', 1)[1].split("</section>", 1)[0]
    assert 'hx-trigger="load"' in counters and "data-counter" not in counters
    assert f'{url}?part=counters"' in counters
    client.get(url, {"part": "counters"}, HTTP_HX_REQUEST="true")  # fills the stats cache
    with django_assert_max_num_queries(1):
        body = client.get(url).content.decode()
    counters = body.split('<section id="live-counters"', 1)[1].split("</section>", 1)[0]
    stats = consultation_stats(consultation=consultation)
    assert 'hx-trigger="every 15s"' in counters
    assert f'data-counter="participants">{stats["participants"]}<' in counters


def test_counters_stop_polling_once_the_consultation_is_closed(client, published):
    consultation, _run = published
    consultation.ends_at = timezone.now() - timezone.timedelta(hours=1)
    consultation.save(update_fields=["ends_at"])
    body = client.get(results_url(consultation), {"part": "counters"}).content.decode()
    assert "hx-trigger" not in body
    assert "final figures" in body


def test_counters_show_before_the_first_run(client):
    consultation = ConsultationFactory()
    body = client.get(results_url(consultation)).content.decode()
    assert 'id="live-counters"' in body and "not available yet" in body


def test_bad_part_is_400(client, published):
    consultation, _run = published
    response = client.get(results_url(consultation), {"part": "everything"})
    assert response.status_code == 400
    assert "counters" in response.content.decode()


def test_warm_page_and_partials_cost_one_query(
    client, published, results_cache, django_assert_max_num_queries
):
    consultation, _run = published
    url = results_url(consultation)
    with django_assert_max_num_queries(14):  # cold: run, ideas (3), central, shares, themes (2)...
        cold = client.get(url).content.decode()
    with django_assert_max_num_queries(1):
        warm = client.get(url).content.decode()

    def main(body):  # the CSRF token in <body> changes between requests
        return body.split('<main id="main"', 1)[1]

    assert main(cold) == main(warm)
    with django_assert_max_num_queries(6):
        client.get(url, {"dimension": "age_range"}, HTTP_HX_REQUEST="true")
    with django_assert_max_num_queries(1):
        client.get(url, {"dimension": "age_range"}, HTTP_HX_REQUEST="true")
    with django_assert_max_num_queries(1):
        client.get(url, {"dimension": "age_range"})
    with django_assert_max_num_queries(3):
        response = client.get(url, {"format": "csv"})
        b"".join(response.streaming_content)


def test_a_logged_in_visitor_adds_only_the_session_and_user(
    client, published, results_cache, django_assert_max_num_queries
):
    consultation, _run = published
    client.force_login(UserFactory())
    client.get(results_url(consultation))
    # session, user, the header's partner-space link, the consultation, the visitor's
    # participant (where they stand: none here, so no projection is read)
    with django_assert_max_num_queries(5):
        client.get(results_url(consultation))


def test_another_current_run_is_a_new_cache_key(
    client, published, results_cache, django_capture_on_commit_callbacks
):
    consultation, run = published
    first = client.get(results_url(consultation)).content.decode()
    assert f"Run #{run.pk}," in first
    key = results_views.results_cache_key(
        consultation_id=consultation.pk, run_id=run.pk, section="sections"
    )
    assert cache.get(key) is not None
    with django_capture_on_commit_callbacks(execute=True):
        second_run = services.engine_run_start(consultation=consultation, kind="votes", **HASHING)
    second_run.refresh_from_db()
    assert second_run.status == EngineRun.Status.DONE, second_run.error
    body = client.get(results_url(consultation)).content.decode()
    assert f"Run #{second_run.pk}," in body and f"Run #{run.pk}," not in body
    assert (
        cache.get(
            results_views.results_cache_key(
                consultation_id=consultation.pk, run_id=second_run.pk, section="sections"
            )
        )
        is not None
    )


def test_the_cache_is_per_language(client, published, results_cache):
    consultation, _run = published
    english = client.get(results_url(consultation)).content.decode()
    assert "Key ideas" in english
    with translation.override("fr"):
        french = client.get(results_url(consultation), HTTP_ACCEPT_LANGUAGE="fr").content.decode()
    assert "Key ideas" not in french.split("<main", 1)[1]


def test_a_cache_outage_still_renders_the_page(client, published, results_cache):
    consultation, _run = published
    with (
        mock.patch.object(cache, "get", side_effect=ConnectionError("redis down")),
        mock.patch.object(cache, "set", side_effect=ConnectionError("redis down")),
    ):
        response = client.get(results_url(consultation))
    assert response.status_code == 200
    assert "opinion-map" in response.content.decode()


# Who sees what ------------------------------------------------------------------------------


@pytest.fixture
def private_published(django_capture_on_commit_callbacks):
    cause = CauseFactory(kind=Cause.Kind.PRIVATE_CONSULTATION)
    consultation = consultation_with_themes(cause=cause)
    add_votes(consultation)
    run = start(consultation, django_capture_on_commit_callbacks)
    member = UserFactory()
    cause.members.add(member)
    partner_a, partner_b = PartnerFactory(), PartnerFactory()
    user_a, user_b = UserFactory(), UserFactory()
    PartnerMembership.objects.create(partner=partner_a, user=user_a)
    PartnerMembership.objects.create(partner=partner_b, user=user_b)
    cause.members.add(user_a)  # partner A works on this private consultation, B does not
    staff = UserFactory(is_staff=True)
    return (
        consultation,
        run,
        {
            "anonymous": None,
            "citizen": UserFactory(),
            "member": member,
            "partner_a": user_a,
            "partner_b": user_b,
            "staff": staff,
        },
    )


@pytest.mark.parametrize(
    ("who", "allowed"),
    [
        ("anonymous", False),
        ("citizen", False),
        ("member", True),
        ("partner_a", True),
        ("partner_b", False),
        ("staff", True),
    ],
)
def test_private_results_page_and_every_partial_follow_membership(
    client, private_published, results_cache, who, allowed
):
    consultation, run, users = private_published
    if users[who] is not None:
        client.force_login(users[who])
    url = results_url(consultation)
    requests = [
        ({}, {}),
        ({"dimension": "age_range"}, {"HTTP_HX_REQUEST": "true"}),
        ({"part": "counters"}, {"HTTP_HX_REQUEST": "true"}),
        ({"format": "csv"}, {}),
    ]
    for params, headers in requests:
        response = client.get(url, params, **headers)
        assert response.status_code == (200 if allowed else 404), (who, params)
        if not allowed:
            content = b"" if response.streaming else response.content
            assert escape(run.model_name) not in content.decode()
            assert b"Group 1" not in content


def test_a_cached_private_page_is_not_served_to_outsiders(client, private_published, results_cache):
    consultation, _run, users = private_published
    client.force_login(users["member"])
    assert client.get(results_url(consultation)).status_code == 200  # now cached
    client.logout()
    assert client.get(results_url(consultation)).status_code == 404
    client.force_login(users["partner_b"])
    assert client.get(results_url(consultation)).status_code == 404


def test_results_of_a_draft_cause_are_hidden_except_from_staff(client, published):
    consultation, _run = published
    consultation.cause.status = Cause.Status.DRAFT
    consultation.cause.save(update_fields=["status"])
    assert client.get(results_url(consultation)).status_code == 404
    client.force_login(UserFactory())
    assert client.get(results_url(consultation)).status_code == 404
    client.force_login(UserFactory(is_staff=True))
    assert client.get(results_url(consultation)).status_code == 200


def test_ideas_link_to_the_public_actions_that_build_on_them(client, published):
    consultation, run = published
    zone, idea = next((z, i) for z, group in selectors.key_ideas(run=run).items() for i in group)
    plan = ActionPlanFactory(cause=consultation.cause)
    public = ActionFactory(plan=plan, title="Ouvrir des pistes la nuit")
    draft = ActionFactory(plan=plan, title="Brouillon secret", status=Action.Status.DRAFT)
    elsewhere = ActionFactory(title="Action d'une autre cause")
    for action in (public, draft, elsewhere):
        action.ideas.add(idea)
    body = client.get(results_url(consultation)).content.decode()
    card = body.split(f'aria-labelledby="shares-{zone}-{idea.pk}"', 1)[1].split("</li> </ol>", 1)[0]
    assert f'href="{public.get_absolute_url()}"' in card and "Ouvrir des pistes la nuit" in card
    assert "Brouillon secret" not in body and "autre cause" not in body


def _download_links(body: str) -> list[str]:
    section = body[body.index('id="open-data-title"') :]
    section = section[: section.index("</section>")]
    return re.findall(r'<a href="([^"]+)" download>', section)


def test_the_open_data_section_links_every_dataset_and_each_file_downloads(client, published):
    from consultations.exports import DATASETS

    consultation, run = published
    assert OpinionGroup.objects.filter(run=run).exists()
    body = client.get(results_url(consultation)).content.decode()
    assert 'href="#open-data-title"' in body
    links = _download_links(body)
    # every dataset, in CSV and Parquet; the segments once per dimension
    assert len(links) == 2 * (len(DATASETS) - 1) + 2 * len(selectors.SEGMENT_DIMENSIONS)
    for url in links:
        response = client.get(url.replace("&amp;", "&"))
        assert response.status_code == 200, url
        content = b"".join(response.streaming_content)
        if url.endswith(".csv") or ".csv?" in url:
            dataset = re.search(r"/export/(\w+)\.csv", url).group(1)
            header = content.decode().splitlines()[0].split(",")
            assert header == [c.name for c in DATASETS[dataset].columns]
        else:
            assert content[:4] == b"PAR1"
    groups = client.get(reverse("api:export", args=[consultation.slug, "groups", "csv"]))
    rows = list(csv.DictReader(io.StringIO(b"".join(groups.streaming_content).decode())))
    assert {r["group"] for r in rows} == {str(g.number + 1) for g in run.opinion_groups.all()}
    api = reverse("api:consultation", args=[consultation.slug])
    assert "Open Database License" in body and f'href="{api}"' in body


def test_no_groups_file_without_opinion_groups_nor_api_link_when_private(
    client, django_capture_on_commit_callbacks
):
    consultation = consultation_with_themes()  # proposals, no vote: no opinion group
    start(consultation, django_capture_on_commit_callbacks)
    links = _download_links(client.get(results_url(consultation)).content.decode())
    assert links and not any("/groups." in url for url in links)
    assert any("/proposals.csv" in url for url in links)
    member = UserFactory()
    private = consultation_with_themes(cause=CauseFactory(kind=Cause.Kind.PRIVATE_CONSULTATION))
    private.cause.members.add(member)
    start(private, django_capture_on_commit_callbacks)
    client.force_login(member)
    body = client.get(results_url(private)).content.decode()
    links = _download_links(body)  # the members who see the results may download them
    assert links and client.get(links[0]).status_code == 200
    api = reverse("api:consultation", args=[private.slug])
    assert f'href="{api}"' not in body  # the JSON API is for public consultations only
