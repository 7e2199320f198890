"""Compare the vote counters with a recount of the votes table, and repair them.

    manage.py counters_recount [--check] [--consultation SLUG]

``--check`` only reports: it prints the drift and exits with status 1 when there is any (for a
cron or a monitoring probe). Without it the drift is printed, then repaired (deltas added in one
transaction, see ``consultations.services.counters_recount``).
"""

from django.core.management.base import BaseCommand, CommandError

from consultations.models import Consultation, Proposal
from consultations.services import counters_drift, counters_recount

SHOWN = 20  # drifted rows printed in full


class Command(BaseCommand):
    help = (
        "Compare vote counters and totals with a recount of the votes; repair them unless --check."
    )

    def add_arguments(self, parser):
        parser.add_argument("--check", action="store_true", help="report only; exit 1 on drift")
        parser.add_argument("--consultation", help="slug of one consultation (default: all)")

    def handle(self, *args, check=False, consultation=None, **options):
        proposal_ids = None
        if consultation:
            found = Consultation.objects.filter(slug=consultation).first()
            if found is None:
                raise CommandError(f"No consultation with slug {consultation!r}.")
            proposal_ids = list(
                Proposal.objects.filter(consultation=found).values_list("pk", flat=True)
            )
        drift = counters_drift(proposal_ids=proposal_ids)
        counters, totals = drift["counters"], drift["totals"]
        self.stdout.write(f"counters drifted: {len(counters)}, vote totals drifted: {len(totals)}")
        for (pid, key, trust), delta in sorted(counters.items())[:SHOWN]:
            self.stdout.write(f"  counter proposal={pid} key={key} trust={trust}: {delta:+d}")
        for pid, delta in sorted(totals.items())[:SHOWN]:
            self.stdout.write(f"  votes_total proposal={pid}: {delta:+d}")
        if check:
            if counters or totals:
                raise SystemExit(1)
            return
        if counters or totals:
            report = counters_recount(proposal_ids=proposal_ids)
            self.stdout.write(
                f"repaired: {report['counters_fixed']} counters, {report['totals_fixed']} totals"
            )
        else:
            self.stdout.write("nothing to repair")
