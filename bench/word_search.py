"""Word searches and the "Most voted" order on a 2M-proposal consultation, with and without the
trigram index path.

Runs on the database that ``bench/engine_scale.py --stored 2000000`` leaves behind (its
published run of 2,000,000 real Grand Débat answers; ``--database-url``, default that script's).
For each word, the best of ``--repeat`` runs of the same query written two ways, in the same
process, one after the other:

- ``trigram``: ``consultations.selectors.content_saying`` (a case-insensitive regular expression
  of the escaped words, which ``proposal_content_trgm_idx`` answers), as the code now does;
- ``icontains``: Django's ``icontains`` (``UPPER(content) LIKE``), which no index serves: the
  query as it was before migration 0007 (the baseline).

Queries: the ideas' counts of proposals that say the words (``consensus.selectors.proposals_saying``,
the public and staff "every idea" search), the proposals of the idea holding most matches that say
them (the idea pages), and the consultation page's search (its count, then its first page).
Both ways must find the same rows; the script stops if they do not.

Then the "Most voted" order (``consultations.services.popular_rank_refresh``): the consultation's
ranks deleted and made again from scratch (what migration 0007 or an import does once), a
refresh with nothing moved, ``--votes`` random vote increments then a refresh, and the first page
with its pager's count beside the "Most recent" order's (the baseline).

Then every order of the consultation page (``proposal_public_list``), page 1 and page 500, as
migration 0008 reads them and as they were read before (the baseline, same process): "Most recent"
with ``proposal_queue_idx`` as it was (rebuilt without the id in a transaction rolled back),
"Most controversial" on the live counters (``selectors._live_order``), "Random" by loading and hashing
every id; then two staff pages: the admin's list of every proposal (newest first) with the
indexes as they were, and the moderation filter's pending counts as they were counted.
``--debated`` proposals are given agree and disagree counters first (deleted after), so that
the balances have something to sort.

Usage:
    python bench/word_search.py [--database-url postgres://postgres@127.0.0.1:5432/concorde_bench]
        [--words vélo impôts "pistes cyclables" zorglub] [--repeat 3] [--votes 20000]
        [--debated 100000] [--skip-searches]
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.engine_scale import DEFAULT_DB, django_setup  # noqa: E402

WORDS = ["vélo", "impôts", "pistes cyclables", "zorglub"]


def best(repeat: int, call, *args):
    times, value = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        value = call(*args)
        times.append(time.perf_counter() - t0)
    return min(times), value


def searches(run, consultation, words: list[str], repeat: int) -> list[str]:
    from django.db.models import Q

    from consensus import selectors
    from consultations.models import Proposal
    from consultations.selectors import proposal_public_list

    def old(field: str, w: str) -> Q:
        return Q(**{f"{field}__icontains": w})

    def saying_counts(w):
        return selectors.proposals_saying(run=run, words=w)

    def counts_before(match):  # proposals_saying as it was: the same query, icontains
        return selectors.idea_counts(run=run, match=match)

    def saying_rows(qs, w):
        return selectors.rows_saying(qs, field="proposal__content", words=w)

    def ids_before(qs, match):  # rows_saying as it was
        return list(qs.filter(match).values_list("pk", flat=True))

    def page(qs):
        return qs.count(), [p.pk for p in qs.order_by("-created_at", "-pk")[:20]]

    base = Proposal.objects.filter(consultation=consultation, status=Proposal.Status.ACCEPTED)
    lines = [
        "| words | query | matches | trigram s | icontains s (before) | ratio |",
        "|---|---|---|---|---|---|",
    ]
    for w in words:
        new_s, found = best(repeat, saying_counts, w)
        old_s, found_old = best(repeat, counts_before, old("proposal__content", w))
        assert found == found_old, (w, "ideas' counts differ")
        lines.append(
            f"| {w} | ideas' counts (`proposals_saying`) | {sum(found.values()):,} in {len(found)} ideas | "
            f"{new_s:.3f} | {old_s:.3f} | {old_s / new_s:.1f}x |"
        )
        if found:
            idea = run.ideas.get(pk=max(found, key=found.get))
            members = selectors.idea_members(idea=idea)
            new_s, rows = best(repeat, saying_rows, members, w)
            old_s, rows_old = best(repeat, ids_before, members, old("proposal__content", w))
            assert rows == rows_old, (w, "idea rows differ")
            lines.append(
                f"| {w} | one idea's proposals (`rows_saying`, idea of {idea.size:,}) | {len(rows):,} | "
                f"{new_s:.3f} | {old_s:.3f} | {old_s / new_s:.1f}x |"
            )
        listed = proposal_public_list(consultation=consultation, query=w)
        new_s, (n, first) = best(repeat, page, listed)
        old_s, (n_old, first_old) = best(repeat, page, base.filter(old("content", w)))
        assert (n, first) == (n_old, first_old), (w, "consultation page differs")
        lines.append(
            f"| {w} | consultation page: count + first 20 | {n:,} | {new_s:.3f} | {old_s:.3f} | {old_s / new_s:.1f}x |"
        )
    return lines


def most_voted(consultation, votes: int, repeat: int) -> list[str]:
    from django.core.paginator import Paginator
    from django.db import connection

    from consultations.models import Proposal, ProposalRank
    from consultations.selectors import proposal_public_list
    from consultations.services import popular_rank_refresh

    def refresh():
        t0 = time.perf_counter()
        moved = popular_rank_refresh(consultation_id=consultation.pk)
        return time.perf_counter() - t0, moved

    t0 = time.perf_counter()
    ProposalRank.objects.filter(consultation=consultation).delete()
    deleted_s = time.perf_counter() - t0
    first_s, first = refresh()
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE consultations_proposalrank")
    again_s, again = refresh()
    ids = list(Proposal.objects.filter(consultation=consultation).values_list("pk", flat=True))
    chosen = random.Random(0).choices(ids, k=votes)
    t0 = time.perf_counter()
    with connection.cursor() as cursor:
        for pk in chosen:  # as votes do: one row at a time (here in one transaction)
            cursor.execute(
                "UPDATE consultations_proposal SET votes_total = votes_total + 1 WHERE id = %s",
                [pk],
            )
    voted_s = time.perf_counter() - t0
    after_s, after = refresh()

    def first_page(sort):
        paginator = Paginator(proposal_public_list(consultation=consultation, sort=sort), 20)
        return paginator.count, [p.pk for p in paginator.page(1).object_list]

    lines = [
        f"- ranks deleted ({deleted_s:.1f} s), then made from scratch: **{first:,} proposals ranked in {first_s:.1f} s**; "
        f"a refresh with nothing moved: {again:,} in {again_s:.2f} s; {votes:,} random vote increments "
        f"({voted_s:.1f} s, one transaction) then a refresh: {after:,} re-ranked in {after_s:.2f} s.",
    ]
    for sort, name in (("popular", '"Most voted"'), ("recent", '"Most recent" (baseline)')):
        seconds, (count, page) = best(repeat, first_page, sort)
        lines.append(
            f"- {name}: pager's count ({count:,}) + first page of {len(page)}: {seconds:.3f} s (best of {repeat})."
        )
    return lines


def _random_before(qs, seed: str, lo: int, hi: int) -> list[int]:
    """The "Random" page as it was read before migration 0008: every id loaded and hashed."""
    import hashlib

    from consultations.models import Proposal

    ids = list(qs.values_list("pk", flat=True))
    ids.sort(key=lambda pk: hashlib.blake2b(f"{seed}:{pk}".encode(), digest_size=8).digest())
    by_id = Proposal.objects.in_bulk(ids[lo:hi])
    return [pk for pk in ids[lo:hi] if pk in by_id]


def list_orders(consultation, repeat: int, debated: int) -> list[str]:
    """Every order of the consultation page, its first page and page 500, now and before 0008.

    ``debated`` proposals get agree and disagree counters first (the bench's answers have no
    votes), so that the "Most controversial" order has balances to sort; they are deleted after."""
    from django.db import connection, transaction

    from consultations.models import Proposal, ProposalCounter
    from consultations.selectors import _live_order, proposal_public_list
    from consultations.services import popular_rank_refresh

    qs = Proposal.objects.filter(consultation=consultation, status=Proposal.Status.ACCEPTED)
    ids = list(qs.values_list("pk", flat=True))
    rng = random.Random(1)
    rows = [
        ProposalCounter(consultation=consultation, proposal_id=pk, key=key, trust="trusted",
                        count=rng.randint(1, 50))
        for pk in rng.sample(ids, min(debated, len(ids))) for key in ("agree", "disagree")
    ]  # fmt: skip
    before = ProposalCounter.objects.order_by("-pk").values_list("pk", flat=True).first() or 0
    ProposalCounter.objects.bulk_create(rows, batch_size=10_000)
    t0 = time.perf_counter()
    moved = popular_rank_refresh(consultation_id=consultation.pk)
    refresh_s = time.perf_counter() - t0
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE consultations_proposalcounter")
    t0 = time.perf_counter()
    again = popular_rank_refresh(consultation_id=consultation.pk)
    again_s = time.perf_counter() - t0

    def page(order, number):
        return [p.pk for p in order[(number - 1) * 20 : number * 20]]

    def before_0008(call, *args):
        # the indexes as they were (no id after created_at), in a transaction rolled back
        with transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute("DROP INDEX proposal_queue_idx")
                cursor.execute("DROP INDEX proposal_created_idx")
                cursor.execute(
                    "CREATE INDEX proposal_queue_idx ON consultations_proposal "
                    "(consultation_id, status, created_at)"
                )
                cursor.execute("CREATE INDEX proposal_created_old ON consultations_proposal (created_at)")
            result = best(repeat, call, *args)
            transaction.set_rollback(True)
        return result

    def newest_before(number):
        return before_0008(page, qs.order_by("-created_at", "-pk"), number)

    lines = [
        f"{debated:,} proposals given agree and disagree counters, then a refresh of the ranks: "
        f"{moved:,} moved in {refresh_s:.2f} s; again with nothing moved: {again:,} in {again_s:.2f} s.",
        "",
        "| order | page | now (s) | before 0008 (s) | before / now |",
        "|---|---|---:|---:|---:|",
    ]
    for number in (1, 500):
        now_s, now = best(repeat, page, proposal_public_list(consultation=consultation), number)
        old_s, old = newest_before(number)
        if now != old:
            raise SystemExit(f"Most recent, page {number}: the two ways differ")
        lines.append(f"| Most recent | {number} | {now_s:.3f} | {old_s:.3f} | {old_s / now_s:.0f}x |")
    for number in (1, 500):
        order = proposal_public_list(consultation=consultation, sort="controversial")
        now_s, now = best(repeat, page, order, number)
        old_s, old = best(repeat, page, _live_order(qs, "controversial"), number)
        if now != old:
            raise SystemExit(f"Most controversial, page {number}: the two ways differ")
        lines.append(f"| Most controversial | {number} | {now_s:.3f} | {old_s:.3f} | {old_s / now_s:.0f}x |")
    for number in (1, 500):
        order = proposal_public_list(consultation=consultation, sort="random", seed="bench")
        now_s, now = best(repeat, page, order, number)
        lo = (number - 1) * 20
        old_s, old = best(repeat, _random_before, qs, "bench", lo, lo + 20)
        if len(set(now)) != 20 or len(set(old)) != 20:
            raise SystemExit(f"Random, page {number}: not 20 proposals")
        lines.append(f"| Random | {number} | {now_s:.3f} | {old_s:.3f} | {old_s / now_s:.0f}x |")
    # staff pages: the admin's list of every proposal (100 a page, newest first) with the
    # indexes as they were, and the moderation filter's pending counts as they were
    def page_of(qs, size):
        return [p.pk for p in qs[:size]]

    now_s, now = best(repeat, page_of, Proposal.objects.order_by("-created_at", "-pk"), 100)
    old_s, old = before_0008(page_of, Proposal.objects.order_by("-created_at", "-pk"), 100)
    if now != old:
        raise SystemExit("admin list: the two ways differ")
    lines.append(f"| admin: every proposal, newest first | 1 | {now_s:.3f} | {old_s:.3f} | {old_s / now_s:.0f}x |")
    from django.contrib.auth import get_user_model
    from django.db.models import Count, Q

    from consultations.moderation import moderation_consultations, moderation_scope

    staff = get_user_model()(pk=0, is_staff=True, is_superuser=True)
    now_s, now = best(repeat, lambda: [(c.pk, c.pending) for c in moderation_consultations(moderator=staff)])
    old_s, old = best(repeat, lambda: [
        (c.pk, c.pending) for c in moderation_scope(moderator=staff)
        .annotate(pending=Count("proposals", filter=Q(proposals__status="pending"))).order_by("question")
    ])  # fmt: skip
    if now != old:
        raise SystemExit("moderation filter: the two ways differ")
    lines.append(f"| moderation: the filter's pending counts | | {now_s:.3f} | {old_s:.3f} | {old_s / now_s:.0f}x |")
    # a visitor whose start is near the end of the shuffle: page 500 is past the wrap
    late = next(
        f"late-{i}" for i in range(10_000)
        if proposal_public_list(consultation=consultation, sort="random", seed=f"late-{i}").start
        > 2**32 - 2**32 * 5_000 // max(len(ids), 1)
    )  # fmt: skip
    order = proposal_public_list(consultation=consultation, sort="random", seed=late)
    now_s, now = best(repeat, page, order, 500)
    lines.append(f"| Random, page past the wrap | 500 | {now_s:.3f} | | |")
    ProposalCounter.objects.filter(consultation=consultation, pk__gt=before).delete()
    popular_rank_refresh(consultation_id=consultation.pk)
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL", DEFAULT_DB))
    parser.add_argument("--words", nargs="+", default=WORDS)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--votes", type=int, default=20_000)
    parser.add_argument("--debated", type=int, default=100_000)
    parser.add_argument("--skip-searches", action="store_true", help="only the list orders")
    args = parser.parse_args()
    if args.repeat < 1 or args.votes < 0 or args.debated < 0:
        parser.error("--repeat must be at least 1, --votes and --debated at least 0")
    django_setup(args.database_url)
    from django.db import connection

    from consensus.models import EngineRun

    run = (
        EngineRun.objects.filter(
            status=EngineRun.Status.DONE, consultation__current_run_id__isnull=False
        )
        .select_related("consultation")
        .order_by("-pk")
        .first()
    )
    if run is None:
        parser.error(
            "no published run here: run bench/engine_scale.py --stored 2000000 on this database first"
        )
    consultation = run.consultation
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*), pg_relation_size('consultations_proposal'), "
            "pg_relation_size('proposal_content_trgm_idx') FROM consultations_proposal "
            "WHERE consultation_id = %s",
            [consultation.pk],
        )
        proposals, table_bytes, trigram_bytes = cursor.fetchone()
        cursor.execute("SHOW server_version")
        server = cursor.fetchone()[0]
    print(
        f"{proposals:,} proposals of the run's consultation (run {run.pk}); table {table_bytes / 1e6:,.0f} MB, "
        f"trigram index {trigram_bytes / 1e6:,.0f} MB; PostgreSQL {server}, {platform.machine()}, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}\n"
    )
    if not args.skip_searches:
        print("\n".join(searches(run, consultation, args.words, args.repeat)))
        print()
        print("\n".join(most_voted(consultation, args.votes, args.repeat)))
    print()
    print("\n".join(list_orders(consultation, args.repeat, args.debated)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
