from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from accounts import services


class Command(BaseCommand):
    help = (
        "Erase the accounts with no login for CONCORDE_INACTIVE_ACCOUNT_DAYS days (their votes stay "
        "counted, anonymised; their proposals lose their author). Safe to run again."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--days", type=int, default=None,
            help=f"Inactivity period in days (default: {settings.CONCORDE_INACTIVE_ACCOUNT_DAYS}).",
        )  # fmt: skip
        parser.add_argument("--dry-run", action="store_true", help="Only count the accounts.")

    def handle(self, *args, days, dry_run, **options):
        if days is not None and days < 1:
            raise CommandError("--days must be at least 1.")
        if dry_run:
            effective = settings.CONCORDE_INACTIVE_ACCOUNT_DAYS if days is None else days
            if effective <= 0:
                self.stdout.write("Disabled (CONCORDE_INACTIVE_ACCOUNT_DAYS = 0).")
                return
            count = services.inactive_accounts(days=effective).count()
            self.stdout.write(f"{count} account(s) inactive for {effective} days would be erased.")
            return
        result = services.inactive_accounts_anonymise(days=days)
        if result.get("disabled"):
            self.stdout.write("Disabled (CONCORDE_INACTIVE_ACCOUNT_DAYS = 0).")
            return
        self.stdout.write(
            self.style.SUCCESS(
                f"{result['erased']} account(s) erased; {result['votes_kept']} vote(s) kept "
                f"anonymously, {result['proposals_anonymised']} proposal(s) anonymised."
            )
        )
