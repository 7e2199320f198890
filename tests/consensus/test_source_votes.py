"""Imported proposals keep the votes they received at the source (Make.org): the engine sums them
per idea, and the results show the ideas most and least supported there, beside their own votes."""

import csv
import html
import io
import math
from itertools import islice

import numpy as np
import pytest
from django.urls import reverse

from consensus import results_views, selectors, services
from consensus.engine.scores import share_half_width
from consensus.models import Idea, IdeaMembership
from consultations.importers import import_csv, import_makeorg
from consultations.models import Proposal, SourceSupport, source_support

from ..factories import ConsultationFactory, ProposalFactory, UserFactory
from .test_results_views import start

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("english")]

MAKEORG = "opentext/makeorg_monde_dapres_2020/proposals.csv"
REPUBLIQUE = "opentext/republique_numerique_2015/opinions.csv"


@pytest.mark.parametrize(
    "stats, expected",
    [
        ({"votes": 692, "adhesion": 0.9444, "engagement": 0.63}, SourceSupport(692, 0.9444)),
        ({"votes": "54", "adhesion": "0.5"}, SourceSupport(54, 0.5)),  # a CSV import's text
        ({"votes": 12.0, "adhesion": 1}, SourceSupport(12, 1.0)),
        ({"votes": 10}, None),  # no share
        ({"adhesion": 0.8}, None),
        ({"votes": "beaucoup", "adhesion": 0.8}, None),
        ({"votes": 10, "adhesion": "n/a"}, None),
        ({"votes": 10, "adhesion": 1.2}, None),  # not a share
        ({"votes": 10, "adhesion": -0.1}, None),
        ({"votes": 0, "adhesion": 0.5}, None),
        ({"votes": -3, "adhesion": 0.5}, None),
        ({"votes": 2.5, "adhesion": 0.5}, None),  # not a count
        ({"votes": True, "adhesion": 0.5}, None),
        ({"votes": "nan", "adhesion": 0.5}, None),
        ({"votes": "inf", "adhesion": 0.5}, None),
        ({"votes": None, "adhesion": None}, None),
        ({}, None),
        ([692, 0.9], None),
        (None, None),
        # Cap Collectif's counts (République numérique): agree among agree, disagree and mixed
        (
            {
                "votes_agree": "2237",
                "votes_disagree": "49",
                "votes_mixed": "161",
                "votes_total": "2447",
            },
            SourceSupport(2447, 2237 / 2447),
        ),
        ({"votes_agree": 0, "votes_total": 8}, SourceSupport(8, 0.0)),
        ({"votes_agree": "0", "votes_total": "0"}, None),  # no vote at all
        ({"votes_agree": 9, "votes_total": 8}, None),  # more for than in all
        ({"votes_agree": -1, "votes_total": 8}, None),
        ({"votes_agree": 2.5, "votes_total": 8}, None),
        ({"votes_agree": 3, "votes_total": "huit"}, None),
        ({"votes_total": 8}, None),
        # Make.org's figures come first; figures of neither kind are left out
        (
            {"votes": 10, "adhesion": 0.5, "votes_agree": 1, "votes_total": 4},
            SourceSupport(10, 0.5),
        ),
        ({"votes": 10, "adhesion": 1.5, "votes_agree": 1, "votes_total": 4}, None),
    ],
)
def test_the_votes_at_the_source_are_read_only_as_a_count_and_a_share(stats, expected):
    assert source_support(stats) == expected


def republique_slice(data_dir, tmp_path, *, step: int, n: int):
    """Every ``step``-th of République numérique's opinions, ``n`` of them (their rows, as dicts),
    written to a CSV of their own (its path)."""
    with open(data_dir / REPUBLIQUE, newline="", encoding="utf-8") as f:
        rows = list(islice(csv.DictReader(f), 0, None, step))[:n]
    path = tmp_path / "opinions.csv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return rows, path


def test_a_share_of_few_votes_has_a_wide_margin():
    share = np.array([0.95, 0.95, 0.9, 0.5, 1.0])
    lower = share - share_half_width(share, [20, 20_000, 20_000, 100, 10])
    assert lower[0] < 0.85 < lower[2] < lower[1] < 0.95  # 95 % of 20 votes below 90 % of 20,000
    assert lower[3] == pytest.approx(0.5 - 2 * math.sqrt(0.25 / 104))
    assert lower[4] < 0.85  # 10 votes all for


def half_width(idea):
    """The scores' Agresti-Coull half-width of the idea's share for at the source."""
    n, share = idea.scores["source_votes"], idea.scores["source_adhesion"]
    q = (n * share + 2) / (n + 4)
    return 2 * math.sqrt(q * (1 - q) / (n + 4))


def titles_in(page, section_id):
    section = page.split(f'id="{section_id}"', 1)[1].split("</section>", 1)[0]
    titles = [t.split("</a>")[0] for t in section.split("<h3><a href=")[1:]]
    return section, [html.unescape(t.split(">", 1)[1]) for t in titles]


@pytest.fixture
def imported(data_dir, tmp_path, django_capture_on_commit_callbacks):
    """120 real Make.org proposals from all over the file (adhesion 0.2 to 0.98), one of our own
    with figures that are not votes, and two made here; a run published over them."""
    with open(data_dir / MAKEORG, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader)
        rows = list(islice(reader, 0, None, 150))[:120]
    path = tmp_path / "proposals.csv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    consultation = ConsultationFactory()
    report = import_makeorg(consultation=consultation, path=path)
    assert report.created == len(rows)
    ProposalFactory(
        consultation=consultation,
        content="Il faut compter les votes autrement",
        source_stats={"votes": "beaucoup", "adhesion": "0.9"},
    )
    ProposalFactory(consultation=consultation, content="Il faut planter des arbres en ville")
    ProposalFactory(consultation=consultation, content="Il faut ouvrir les musées le soir")
    run = start(consultation, django_capture_on_commit_callbacks)
    file_stats = {row[0]: (int(row[2]), float(row[3])) for row in rows}
    return consultation, run, file_stats


def expected_support(run, file_stats):
    """Per idea pk: the votes at the source of its members in the file, and the share for."""
    votes, votes_for = {}, {}
    for idea_id, external_id in IdeaMembership.objects.filter(run=run).values_list(
        "idea_id", "proposal__external_id"
    ):
        n, adhesion = file_stats.get(external_id, (0, 0.0))
        votes[idea_id] = votes.get(idea_id, 0) + n
        votes_for[idea_id] = votes_for.get(idea_id, 0.0) + n * adhesion
    return {
        pk: (votes[pk], round(votes_for[pk] / votes[pk], 4) if votes[pk] else None) for pk in votes
    }


def test_each_idea_sums_the_votes_its_proposals_received_at_the_source(imported):
    consultation, run, file_stats = imported
    expected = expected_support(run, file_stats)
    got = {
        idea.pk: (idea.scores["source_votes"], idea.scores["source_adhesion"])
        for idea in Idea.objects.filter(run=run)
    }
    assert got == expected
    assert sum(v for v, _share in got.values()) == sum(n for n, _a in file_stats.values())
    # the proposals made here, and the one whose figures are not votes, add nothing
    made_here = Proposal.objects.filter(consultation=consultation, external_id="")
    assert made_here.count() == 3
    for proposal in made_here:
        assert proposal.source_support is None


def test_republique_numeriques_agree_and_total_votes_are_summed_per_idea(
    data_dir, tmp_path, django_capture_on_commit_callbacks
):
    """A real slice of République numérique (Cap Collectif's export: agree, disagree, mixed and
    total votes), imported as any CSV: each idea's votes at the source are its members' totals,
    and its share for their agree votes over them."""
    rows, path = republique_slice(data_dir, tmp_path, step=8, n=80)
    consultation = ConsultationFactory()
    report = import_csv(consultation=consultation, path=path, text_column="title")
    assert report.created == len(rows)
    run = start(consultation, django_capture_on_commit_callbacks)
    file_stats = {
        row["id"]: (int(row["votes_total"]), int(row["votes_agree"]))
        for row in rows
        if int(row["votes_total"])
    }
    assert len(file_stats) >= 70
    votes, agree = {}, {}
    for idea_id, external_id in IdeaMembership.objects.filter(run=run).values_list(
        "idea_id", "proposal__external_id"
    ):
        total, yes = file_stats.get(external_id, (0, 0))
        votes[idea_id] = votes.get(idea_id, 0) + total
        agree[idea_id] = agree.get(idea_id, 0) + yes
    ideas = list(Idea.objects.filter(run=run))
    assert len(ideas) >= 2
    for idea in ideas:
        assert idea.scores["source_votes"] == votes[idea.pk]
        assert idea.scores["source_adhesion"] == round(agree[idea.pk] / votes[idea.pk], 4)
    # every vote counted once: in its proposal's idea, or nowhere for a proposal in no idea
    members = set(
        IdeaMembership.objects.filter(run=run).values_list("proposal__external_id", flat=True)
    )
    outside = sum(total for key, (total, _yes) in file_stats.items() if key not in members)
    assert sum(votes.values()) + outside == sum(total for total, _yes in file_stats.values())
    assert sum(key in members for key in file_stats) >= 70


def test_a_merge_describes_the_merged_ideas_votes_at_the_source_again(
    imported, django_capture_on_commit_callbacks
):
    consultation, run, file_stats = imported
    first, second = Idea.objects.filter(run=run).order_by("-size")[:2]
    with django_capture_on_commit_callbacks(execute=True):  # the merge, then its one refresh
        services.idea_merge(run_id=run.pk, idea_id=first.pk, into_id=second.pk)
    first.refresh_from_db()
    second.refresh_from_db()
    assert (first.scores["source_votes"], first.scores["source_adhesion"]) == (0, None)
    assert (second.scores["source_votes"], second.scores["source_adhesion"]) == expected_support(
        run, file_stats
    )[second.pk]


def test_the_results_show_the_ideas_most_and_least_supported_at_the_source(
    client, imported, settings, monkeypatch
):
    consultation, run, file_stats = imported
    settings.CONSENSUS_MIN_ZONE_VOTES = 500
    monkeypatch.setattr(results_views, "IDEAS_PER_ZONE", 3)
    ideas = list(Idea.objects.filter(run=run, size__gt=0))
    eligible = [i for i in ideas if i.scores["source_votes"] >= 500]
    assert 5 <= len(eligible) < len(ideas)  # the threshold leaves some out
    # the most supported by the lower bound of the share for, then of the others the least
    # supported by its upper bound: a share of few votes counts for less either way
    by_lower = sorted(
        eligible, key=lambda i: (-(i.scores["source_adhesion"] - half_width(i)), i.pk)
    )
    most = by_lower[:3]
    least = sorted(by_lower[3:], key=lambda i: (i.scores["source_adhesion"] + half_width(i), i.pk))
    least = least[:3]

    page = client.get(reverse("consensus:results", args=[consultation.slug])).content.decode()
    assert '<a href="#ideas-source">Most supported at the source</a>' in page
    assert '<a href="#ideas-source-least">Least supported at the source</a>' in page
    section, titles = titles_in(page, "ideas-source")
    assert "at least 500 votes at the source" in section
    assert titles == [i.label for i in most]
    assert titles_in(page, "ideas-source-least")[1] == [i.label for i in least]
    top = most[0]
    votes = f"{top.scores['source_votes']:,}"
    assert f"at the source: {votes} votes, {round(100 * top.scores['source_adhesion'])} % for" in (
        " ".join(section.split())
    )
    low = [i for i in ideas if i not in eligible]
    for idea in low:
        assert f">{html.escape(idea.label)}</a></h3>" not in page.split('id="ideas-source"', 1)[1]

    # the CSV gives every idea's figures
    response = client.get(reverse("consensus:results", args=[consultation.slug]), {"format": "csv"})
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    expected = {(i.number, i.scores["source_votes"], i.scores["source_adhesion"]) for i in ideas}
    assert {
        (int(r["idea"]), int(r["source_votes"]), float(r["source_adhesion"])) for r in rows
    } == expected
    # and so does the open-data export
    url = reverse(
        "api:export", kwargs={"slug": consultation.slug, "dataset": "ideas", "fmt": "csv"}
    )
    response = client.get(url)
    assert response.status_code == 200
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert {
        (int(r["idea_number"]), int(r["source_votes"]), float(r["source_adhesion"])) for r in rows
    } == expected
    # and the JSON API
    data = client.get(reverse("api:ideas", args=[consultation.slug]), {"page_size": 200}).json()
    assert {
        (i["number"], i["scores"]["source_votes"], i["scores"]["source_adhesion"])
        for i in data["results"]
    } == expected


def test_an_idea_with_few_votes_at_the_source_neither_leads_nor_trails_on_them(imported):
    consultation, run, file_stats = imported
    few, many, too_few, low, few_low, *others = Idea.objects.filter(run=run, size__gt=0).order_by(
        "pk"
    )
    figures = [
        (few, 30, 0.97),
        (many, 5_000, 0.93),
        (too_few, 19, 0.99),
        (low, 5_000, 0.85),
        (few_low, 30, 0.80),
    ]
    for idea, votes, adhesion in figures:
        idea.scores = {**idea.scores, "source_votes": votes, "source_adhesion": adhesion}
        idea.save(update_fields=["scores"])
    Idea.objects.filter(pk__in=[i.pk for i in others]).update(scores={})
    ranked = selectors.ideas_by_support_at_source
    # 97 % of 30 votes is less sure than 93 % of 5,000, and 80 % of 30 than 85 % of 5,000
    assert ranked(run=run, min_votes=20, limit=2) == {"most": [many, few], "least": [low, few_low]}
    assert ranked(run=run, min_votes=20, limit=1) == {"most": [many], "least": [low]}
    assert ranked(run=run, min_votes=5_001) == {"most": [], "least": []}


def test_an_ideas_page_gives_each_proposals_votes_at_the_source(client, imported):
    consultation, run, file_stats = imported
    member = (
        IdeaMembership.objects.filter(run=run, proposal__external_id__startswith="mo-")
        .select_related("idea", "proposal")
        .first()
    )
    n, adhesion = file_stats[member.proposal.external_id]
    url = reverse("consensus:results_idea", args=[consultation.slug, member.idea.number])
    page = " ".join(client.get(url).content.decode().split())
    assert f"at the source: {n:,} votes, {round(100 * adhesion)} % for" in page


def test_a_proposals_pages_give_its_votes_at_the_source(client, imported):
    consultation, run, file_stats = imported
    proposal = Proposal.objects.filter(consultation=consultation, external_id="mo-mda-00151").get()
    n, adhesion = file_stats[proposal.external_id]
    said = f"{n:,} votes, {round(100 * adhesion)} % for"
    page = " ".join(client.get(proposal.get_absolute_url()).content.decode().split())
    assert f"At the source: {said}." in page
    listing = client.get(consultation.get_absolute_url(), {"q": proposal.content[:40]})
    assert f"at the source: {said}" in " ".join(listing.content.decode().split())
    # figures that are not votes say nothing
    odd = Proposal.objects.get(consultation=consultation, content__startswith="Il faut compter")
    assert "At the source" not in client.get(odd.get_absolute_url()).content.decode()


def test_staff_see_each_ideas_votes_at_the_source_on_the_run_page(client, imported):
    consultation, run, file_stats = imported
    client.force_login(UserFactory(is_staff=True))
    url = reverse("consensus:run", args=[consultation.slug, run.pk])
    top = Idea.objects.filter(run=run).order_by("-size", "pk").first()
    votes, percent = f"{top.scores['source_votes']:,}", round(100 * top.scores["source_adhesion"])
    cards = " ".join(client.get(url).content.decode().split())
    assert f"at the source: {votes} votes, {percent} % for" in cards
    table = " ".join(client.get(url, {"view": "list"}).content.decode().split())
    assert '<th scope="col">Votes at the source</th>' in table
    assert f"<td>{votes} ({percent} % for)</td>" in table


def test_results_without_votes_at_the_source_have_no_such_section(
    client, django_capture_on_commit_callbacks
):
    consultation = ConsultationFactory()
    for text in ("Il faut planter des arbres", "Il faut des pistes cyclables", "Il faut lire"):
        ProposalFactory(consultation=consultation, content=text)
    run = start(consultation, django_capture_on_commit_callbacks)
    assert {i.scores["source_votes"] for i in Idea.objects.filter(run=run)} == {0}
    page = client.get(reverse("consensus:results", args=[consultation.slug])).content.decode()
    assert "Largest ideas" in page
    assert "ideas-source" not in page and "at the source" not in page
    client.force_login(UserFactory(is_staff=True))
    url = reverse("consensus:run", args=[consultation.slug, run.pk])
    for query in ({}, {"view": "list"}):
        assert "at the source" not in client.get(url, query).content.decode()
