"""Personal data and task metrics: what they cost.

    DATABASE_URL=postgres://.../concorde_bench python bench/gdpr_bench.py [--votes 1000,5000]

On a migrated (scratch) PostgreSQL database, builds one consultation with 6,000 proposals and
100,000 background votes, then for citizens with --votes votes each (half of them qualified),
a proposal, a follow and a partner account, measures:

- the "my data" download: `account_data_export` + JSON encoding (seconds, queries, bytes);
  baseline in the same run: Django's `serializers.serialize("json", …)` of the same vote rows;
- the erasure `account_erase` (seconds, queries); baseline: a plain `user.delete()` of an
  identical citizen (which leaves their demographics and proposal names behind);
- the nightly task: `inactive_accounts_anonymise` over 300 inactive accounts of 20 votes
  (accounts/s); baseline: deleting 300 identical accounts with `QuerySet.delete()`;
- the Celery metrics handlers: per-task overhead of the signal handlers on an eager no-op task
  (µs), baseline: the same task with the handlers disconnected.

Writes nothing outside its database; drops what it built at the end. Output: docs/bench_gdpr.md.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")


def setup():
    import django

    django.setup()


def build_world():
    from accounts.models import User
    from causes.models import Cause
    from consultations.models import Consultation, Participant, Proposal, Vote

    rng = random.Random(7)
    cause = Cause.objects.create(title="Bench cause", slug=f"bench-{time.time_ns()}", summary="")
    consultation = Consultation.objects.create(
        cause=cause, question="Bench?", slug=f"bench-gdpr-{time.time_ns()}"
    )
    author = User.objects.create_user(email=f"bench-author-{time.time_ns()}@example.org")
    proposals = Proposal.objects.bulk_create(
        Proposal(consultation=consultation, content=f"Il faut la proposition {i}", status="accepted",
                 author=author if i % 50 == 0 else None)
        for i in range(6000)
    )  # fmt: skip
    others = Participant.objects.bulk_create(
        Participant(session_key=f"bench-{time.time_ns()}-{i}", age_range="25-34") for i in range(5000)
    )
    Vote.objects.bulk_create(
        (Vote(participant=p, proposal=proposals[(i * 20 + j * 7) % 6000],
              key=rng.choice(["agree", "disagree", "neutral"]))
         for i, p in enumerate(others) for j in range(20)),
        batch_size=5000,
    )  # fmt: skip
    return consultation, proposals


def make_citizen(n_votes, proposals, tag):
    from accounts.models import User
    from actions.models import Action, ActionPlan, Follow
    from consultations.models import Participant, Proposal, Qualification, Vote
    from partners.models import Partner, PartnerMembership

    user = User.objects.create_user(email=f"bench-{tag}-{time.time_ns()}@example.org",
                                    display_name="Bench", password="x")  # fmt: skip
    participant = Participant.objects.create(user=user, age_range="35-49", gender="f", postal_area="69")
    votes = Vote.objects.bulk_create(
        Vote(participant=participant, proposal=proposals[i % len(proposals)], key="agree")
        for i in range(n_votes)
    )
    Qualification.objects.bulk_create(
        Qualification(vote=v, vote_key="agree", key="like_it") for v in votes[::2]
    )
    Proposal.objects.create(consultation=proposals[0].consultation, content="Il faut du bench",
                            author=user, author_name="Bench", status="accepted")  # fmt: skip
    partner = Partner.objects.create(name=f"Bench partner {tag} {time.time_ns()}",
                                     slug=f"bp-{time.time_ns()}")  # fmt: skip
    PartnerMembership.objects.create(user=user, partner=partner)
    plan = ActionPlan.objects.create(cause=proposals[0].consultation.cause, title="Plan")
    action = Action.objects.create(plan=plan, title="Action", owner=partner)
    Follow.objects.create(user=user, action=action)
    return user


def timed(fn):
    from django.db import connection

    count = [0]

    def counter(execute, sql, params, many, context):
        count[0] += 1
        return execute(sql, params, many, context)

    with connection.execute_wrapper(counter):
        start = time.perf_counter()
        result = fn()
        seconds = time.perf_counter() - start
    return result, seconds, count[0]


def bench_export_and_erase(sizes, proposals, out):
    from django.core import serializers

    from accounts import selectors, services
    from consultations.models import Vote

    out.append("| votes of the citizen | download s | queries | JSON bytes | baseline serialize s | "
               "erase s | queries | baseline user.delete() s |")  # fmt: skip
    out.append("|---|---|---|---|---|---|---|---|")
    for n in sizes:
        user = make_citizen(n, proposals, f"e{n}")
        body, t_export, q_export = timed(lambda user=user: json.dumps(
            selectors.account_data_export(user=user), cls=selectors.ExportEncoder))  # fmt: skip
        _, t_base_export, _ = timed(lambda user=user: serializers.serialize(
            "json", Vote.objects.filter(participant__user=user)))  # fmt: skip
        _, t_erase, q_erase = timed(lambda user=user: services.account_erase(user=user, reason="staff"))
        twin = make_citizen(n, proposals, f"b{n}")
        _, t_base_delete, _ = timed(twin.delete)
        out.append(f"| {n} | {t_export:.3f} | {q_export} | {len(body)} | {t_base_export:.3f} | "
                   f"{t_erase:.3f} | {q_erase} | {t_base_delete:.3f} |")  # fmt: skip


def bench_inactive(proposals, out, count=300):
    from datetime import timedelta

    from django.utils import timezone

    from accounts import services
    from accounts.models import User

    old = timezone.now() - timedelta(days=5000)

    def batch(tag):
        users = [make_citizen(20, proposals, f"{tag}{i}") for i in range(count)]
        User.objects.filter(pk__in=[u.pk for u in users]).update(last_login=old, date_joined=old)
        return users

    batch("i")
    result, t_task, q_task = timed(lambda: services.inactive_accounts_anonymise(days=4000))
    users = batch("d")
    _, t_base, _ = timed(lambda: User.objects.filter(pk__in=[u.pk for u in users]).delete())
    out.append("")
    out.append("| inactive accounts (20 votes each) | task s | accounts/s | queries per account | "
               "baseline QuerySet.delete() s |")  # fmt: skip
    out.append("|---|---|---|---|---|")
    out.append(f"| {result['erased']} | {t_task:.2f} | {result['erased'] / t_task:.0f} | "
               f"{q_task / max(result['erased'], 1):.0f} | {t_base:.2f} |")  # fmt: skip


def bench_metrics(out, runs=3000):
    from celery import signals

    from config import metrics
    from config.celery import app

    @app.task(name="bench.noop")
    def noop():
        return None

    def run():
        start = time.perf_counter()
        for _ in range(runs):
            noop.apply()
        return (time.perf_counter() - start) / runs * 1e6

    run()  # warm-up
    with_handlers = min(run() for _ in range(3))
    pairs = [(signals.task_prerun, metrics.on_task_prerun), (signals.task_postrun, metrics.on_task_postrun),
             (signals.task_success, metrics.on_task_success), (signals.task_failure, metrics.on_task_failure)]  # fmt: skip
    for signal, handler in pairs:
        signal.disconnect(handler, dispatch_uid=f"concorde.metrics.{handler.__name__}")
    without = min(run() for _ in range(3))
    metrics.connect_signals()
    out.append("")
    out.append("| eager no-op task | µs per task with metrics | baseline without handlers | overhead µs |")
    out.append("|---|---|---|---|")
    out.append(f"| {runs} runs, best of 3 | {with_handlers:.1f} | {without:.1f} | "
               f"{with_handlers - without:.1f} |")  # fmt: skip


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--votes", default="1000,5000")
    ap.add_argument("--inactive", type=int, default=300)
    args = ap.parse_args()
    setup()
    from django.conf import settings
    from django.db import connection

    if connection.vendor != "postgresql":
        sys.exit("Set DATABASE_URL to a migrated PostgreSQL scratch database.")
    settings.DEBUG = False
    out = [f"# bench/gdpr_bench.py, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}", "",
           f"PostgreSQL {connection.pg_version}, {os.cpu_count()} CPUs; 6,000 proposals, "
           "100,000 background votes.", ""]  # fmt: skip
    consultation, proposals = build_world()
    bench_export_and_erase([int(x) for x in args.votes.split(",")], proposals, out)
    bench_inactive(proposals, out, count=args.inactive)
    bench_metrics(out)
    print("\n".join(out))


if __name__ == "__main__":
    main()
