"""The votes an imported proposal received at the source, kept as columns of their own: the
importers and ``Proposal.save`` keep them from ``source_stats``, the consultation's counters sum
them, and two orders of the proposal list read them."""

import csv
import html
import importlib
import io
import math
import re
from itertools import islice

import pytest
from django.apps import apps
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from consultations.importers import import_csv, import_makeorg
from consultations.models import (
    MAX_SOURCE_VOTES,
    SOURCE_COLUMNS,
    Proposal,
    SourceSupport,
    source_columns,
)
from consultations.selectors import consultation_stats, proposal_public_list

from ..consensus.test_source_votes import republique_slice
from ..factories import ConsultationFactory, ProposalFactory

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("english")]

MAKEORG = "opentext/makeorg_monde_dapres_2020/proposals.csv"


def lower_bound(n, share):
    """The share less its Agresti-Coull half-width, written out."""
    q = (n * share + 2) / (n + 4)
    return share - 2 * math.sqrt(q * (1 - q) / (n + 4))


def columns_of(proposal):
    return {name: getattr(proposal, name) for name in SOURCE_COLUMNS}


def test_the_columns_follow_what_source_support_reads():
    assert source_columns({"votes": 692, "adhesion": 0.9444}) == {
        "source_votes": 692,
        "source_adhesion": 0.9444,
        "source_support_low": pytest.approx(lower_bound(692, 0.9444), abs=1e-6),
    }
    assert source_columns({"votes_agree": "3", "votes_total": "4"})["source_adhesion"] == 0.75
    none = {"source_votes": 0, "source_adhesion": None, "source_support_low": None}
    assert source_columns({"votes": "beaucoup", "adhesion": "0.9"}) == none
    assert source_columns({}) == none
    assert source_columns(None) == none
    # a count no 32-bit column holds is no proposal's votes
    assert source_columns({"votes": MAX_SOURCE_VOTES, "adhesion": 0.5})["source_votes"] > 0
    assert source_columns({"votes": MAX_SOURCE_VOTES + 1, "adhesion": 0.5}) == none
    assert source_columns({"votes_agree": 1, "votes_total": 10**12}) == none


def test_the_lower_bound_ranks_a_share_of_few_votes_below_a_slightly_lower_share_of_many():
    few = source_columns({"votes": 30, "adhesion": 0.97})["source_support_low"]
    many = source_columns({"votes": 5000, "adhesion": 0.93})["source_support_low"]
    assert few < many < 0.93
    assert (
        source_columns({"votes": 30, "adhesion": 0.8})["source_support_low"]
        < (source_columns({"votes": 5000, "adhesion": 0.85})["source_support_low"])
    )


def test_saving_a_proposal_keeps_its_columns_from_its_statistics():
    proposal = ProposalFactory(source_stats={"votes": 120, "adhesion": 0.75})
    proposal.refresh_from_db()
    assert proposal.source_votes == 120 and proposal.source_adhesion == 0.75
    assert proposal.source_support == SourceSupport(120, 0.75)

    proposal.source_stats = {"votes_agree": "10", "votes_total": "40"}
    proposal.save(update_fields=["source_stats"])
    proposal.refresh_from_db()
    assert (proposal.source_votes, proposal.source_adhesion) == (40, 0.25)

    proposal.source_stats = {"votes": "n/a"}
    proposal.save()
    proposal.refresh_from_db()
    assert columns_of(proposal) == {
        "source_votes": 0,
        "source_adhesion": None,
        "source_support_low": None,
    }
    assert proposal.source_support is None


def test_a_save_of_other_fields_reads_no_statistics():
    proposal = ProposalFactory(source_stats={"votes": 50, "adhesion": 0.5})
    loaded = Proposal.objects.only("pk", "status").get(pk=proposal.pk)
    with CaptureQueriesContext(connection) as queries:
        loaded.status = Proposal.Status.ARCHIVED
        loaded.save()
    assert len(queries) == 1  # the update alone: the deferred statistics were not read
    proposal.refresh_from_db()
    assert proposal.status == Proposal.Status.ARCHIVED and proposal.source_votes == 50


def makeorg_rows(data_dir, n=60, step=97):
    """Real Make.org proposals from all over the file."""
    with open(data_dir / MAKEORG, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader)
        rows = list(islice(reader, 0, None, step))[:n]
    return header, rows


def write_rows(path, header, rows):
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


@pytest.fixture
def makeorg(data_dir, tmp_path):
    """A consultation of 60 real Make.org proposals, one row of our own whose count is no vote
    count, and one proposal made here."""
    header, rows = makeorg_rows(data_dir)
    odd = ["mo-test-huge", "Il faut compter jusqu'à mille milliards", "1000000000000", "0.5"]
    path = write_rows(tmp_path / "proposals.csv", header, [*rows, odd + [""] * 4])
    consultation = ConsultationFactory()
    report = import_makeorg(consultation=consultation, path=path)
    assert report.created == len(rows) + 1 and not report.bad_rows
    ProposalFactory(consultation=consultation, content="Il faut ouvrir les musées le soir")
    return consultation, {row[0]: (int(row[2]), float(row[3])) for row in rows}


def test_an_import_fills_the_columns_from_the_file(makeorg):
    consultation, in_file = makeorg
    imported = Proposal.objects.filter(consultation=consultation).exclude(external_id="")
    for proposal in imported.exclude(external_id="mo-test-huge"):
        n, adhesion = in_file[proposal.external_id]
        assert proposal.source_votes == n
        assert proposal.source_adhesion == pytest.approx(adhesion)
        assert proposal.source_support_low == pytest.approx(lower_bound(n, adhesion), abs=1e-6)
    huge = imported.get(external_id="mo-test-huge")  # kept, without votes at the source
    assert huge.source_votes == 0 and huge.source_stats["votes"] == 10**12


def test_an_update_reads_the_files_votes_again(makeorg, data_dir, tmp_path):
    consultation, in_file = makeorg
    header, rows = makeorg_rows(data_dir)
    changed = [[*row[:2], str(int(row[2]) + 1000), "0.5", *row[4:]] for row in rows[:5]]
    path = write_rows(tmp_path / "changed.csv", header, changed)

    report = import_makeorg(consultation=consultation, path=path, update=True)

    assert report.updated == 5
    for row in rows[:5]:
        proposal = Proposal.objects.get(consultation=consultation, external_id=row[0])
        assert (proposal.source_votes, proposal.source_adhesion) == (int(row[2]) + 1000, 0.5)
    untouched = Proposal.objects.get(consultation=consultation, external_id=rows[5][0])
    assert untouched.source_votes == in_file[rows[5][0]][0]


def test_a_csv_import_of_cap_collectif_counts_fills_them(data_dir, tmp_path):
    rows, path = republique_slice(data_dir, tmp_path, step=11, n=40)
    consultation = ConsultationFactory()
    import_csv(consultation=consultation, path=path, text_column="title")
    for row in rows:
        proposal = Proposal.objects.get(consultation=consultation, external_id=row["id"])
        total, agree = int(row["votes_total"]), int(row["votes_agree"])
        assert proposal.source_votes == total
        assert proposal.source_adhesion == (agree / total if total else None)
    stats = consultation_stats(consultation=consultation)
    assert stats["source_votes"] == sum(int(row["votes_total"]) for row in rows) > 0


def test_the_migration_fills_the_columns_of_proposals_imported_before_it(makeorg):
    consultation, in_file = makeorg
    proposals = Proposal.objects.filter(consultation=consultation)
    proposals.update(source_votes=0, source_adhesion=None, source_support_low=None)
    migration = importlib.import_module("consultations.migrations.0009_source_votes_columns")

    migration.fill_source_columns(apps, connection.schema_editor())

    filled = dict(proposals.exclude(source_votes=0).values_list("external_id", "source_votes"))
    assert filled == {external_id: n for external_id, (n, _share) in in_file.items()}


def test_the_counters_sum_the_votes_at_the_source_of_accepted_proposals(makeorg):
    consultation, in_file = makeorg
    refused = Proposal.objects.get(consultation=consultation, external_id=next(iter(in_file)))
    refused.status = Proposal.Status.REFUSED
    refused.refusal_reason = Proposal.RefusalReason.OTHER
    refused.save()

    stats = consultation_stats(consultation=consultation)

    kept = {key: n for key, (n, _share) in in_file.items() if key != refused.external_id}
    assert stats["source_votes"] == sum(kept.values())
    assert stats["source_proposals"] == len(kept)
    assert stats["proposals"] == len(in_file) + 1  # the huge row and the one made here too


def listed(response):
    """The proposals' texts of a list page, in order."""
    items = re.findall(
        r'<li class="proposal">\s*<a href="[^"]+">(.*?)</a>', response.content.decode()
    )
    return [html.unescape(text) for text in items]


def test_the_consultation_page_shows_the_votes_at_the_source(client, makeorg):
    consultation, in_file = makeorg
    total = sum(n for n, _share in in_file.values())
    page = " ".join(client.get(consultation.get_absolute_url()).content.decode().split())
    assert f"votes at the source</abbr></dt><dd>{total:,}</dd>" in page
    home = " ".join(client.get("/").content.decode().split())
    assert f"<dd>{total:,}</dd>" in home
    assert '<option value="source_support">Most supported at the source</option>' in page
    assert '<option value="source_votes">Most voted at the source</option>' in page
    counters = client.get(
        reverse("consensus:results", kwargs={"slug": consultation.slug}), {"part": "counters"}
    )
    said = " ".join(counters.content.decode().split())
    assert f"votes at the source</abbr></dt><dd>{total:,}</dd>" in said


@pytest.mark.parametrize(
    "sort, key",
    [
        ("source_votes", lambda p: (-p.source_votes, -p.pk)),
        ("source_support", lambda p: (-p.source_support_low, -p.pk)),
    ],
)
def test_the_orders_by_the_votes_at_the_source_list_the_proposals_that_have_some(
    client, makeorg, sort, key
):
    consultation, in_file = makeorg
    with_votes = Proposal.objects.filter(consultation=consultation, source_votes__gt=0)
    expected = [p.content for p in sorted(with_votes, key=key)]

    response = client.get(consultation.get_absolute_url(), {"sort": sort})

    assert listed(response) == expected[:20]
    text = " ".join(response.content.decode().split())
    assert f"{len(in_file)} proposals with votes at the source" in text
    assert f'<option value="{sort}" selected>' in text
    second = client.get(consultation.get_absolute_url(), {"sort": sort, "page": 3})
    assert listed(second) == expected[40:60]
    assert len(expected) == len(in_file) == 60


def test_most_supported_puts_many_votes_at_a_slightly_lower_share_first():
    """The bounds decide: 93 % of 5,000 above 97 % of 30, 85 % of 5,000 above 80 % of 30 (and
    above 97 % of 30 by the raw share read the wrong way round, which the order must not do)."""
    consultation = ConsultationFactory()
    for text, n, share in [
        ("Il faut A, voté par peu", 30, 0.97),
        ("Il faut B, voté par beaucoup", 5000, 0.93),
        ("Il faut C, voté par peu", 30, 0.80),
        ("Il faut D, voté par beaucoup", 5000, 0.85),
    ]:
        ProposalFactory(
            consultation=consultation, content=text, source_stats={"votes": n, "adhesion": share}
        )

    supported = proposal_public_list(consultation=consultation, sort="source_support")
    voted = proposal_public_list(consultation=consultation, sort="source_votes")

    assert [p.content[8] for p in supported] == ["B", "A", "D", "C"]
    assert [p.content[8] for p in voted] == ["D", "B", "C", "A"]  # ties: the newest first


def test_without_votes_at_the_source_there_is_no_such_order_nor_counter(client):
    consultation = ConsultationFactory()
    ProposalFactory(consultation=consultation, content="Il faut planter des arbres en ville")
    ProposalFactory(consultation=consultation, content="Il faut ouvrir les musées le soir")

    page = client.get(consultation.get_absolute_url(), {"sort": "source_support"})

    text = page.content.decode()
    assert page.status_code == 200
    assert "at the source" not in text
    assert '<option value="recent" selected>' in text  # the order asked for falls back
    assert len(listed(page)) == 2


def test_the_api_gives_each_proposals_votes_at_the_source_and_their_sum(client, makeorg):
    consultation, in_file = makeorg
    api = reverse("api:proposals", kwargs={"slug": consultation.slug})

    results = client.get(api, {"page_size": 200}).json()["results"]

    given = {p["id"]: p["at_source"] for p in results}
    assert len(given) == len(in_file) + 2
    for proposal in Proposal.objects.filter(consultation=consultation):
        if proposal.external_id in in_file:
            n, share = in_file[proposal.external_id]
            assert given[proposal.pk] == {"votes": n, "share_for": pytest.approx(share)}
        else:  # the count that is no vote count, and the proposal made here
            assert given[proposal.pk] is None
    detail = client.get(reverse("api:consultation", kwargs={"slug": consultation.slug})).json()
    assert detail["stats"]["source_votes"] == sum(n for n, _share in in_file.values())
    assert detail["stats"]["source_proposals"] == len(in_file)


def test_the_open_data_proposals_give_the_votes_at_the_source_and_no_other_source_column(
    client, makeorg
):
    consultation, in_file = makeorg
    url = reverse(
        "api:export", kwargs={"slug": consultation.slug, "dataset": "proposals", "fmt": "csv"}
    )
    response = client.get(url)
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))

    assert len(rows) == len(in_file) + 2
    for row in rows:
        if row["external_id"] in in_file:
            n, share = in_file[row["external_id"]]
            assert int(row["source_votes"]) == n
            assert float(row["source_adhesion"]) == pytest.approx(share)
        else:  # the count that is no vote count, and the proposal made here
            assert (row["source_votes"], row["source_adhesion"]) == ("0", "")
    assert not set(rows[0]) & {"source_stats", "engagement", "score", "author_age"}
