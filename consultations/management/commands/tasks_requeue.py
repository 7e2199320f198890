"""Send again the tasks kept in the outbox while the broker was down (config/outbox.py).

    manage.py tasks_requeue [--limit 1000]

Beat does the same every minute and a worker at start; this is for an operator after an outage.
"""

from django.core.management.base import BaseCommand

from config.outbox import outbox_flush


class Command(BaseCommand):
    help = "Send again the Celery tasks kept in the database outbox while the broker was down."

    def add_arguments(self, parser):
        parser.add_argument("--limit", type=int, default=1000)

    def handle(self, *args, limit=1000, **options):
        result = outbox_flush(limit=limit)
        self.stdout.write(f"sent {result['sent']}, left {result['left']}")
