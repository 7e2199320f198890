"""Train the moderation classifier of consultations on their past decisions.

    manage.py moderation_classifier_train SLUG [SLUG ...]
    manage.py moderation_classifier_train --open     # every open consultation

A consultation with too few decisions is reported and skipped (its queue says the classifier is
off); the others get a new classifier and their pending proposals are scored.
"""

from django.core.management.base import BaseCommand, CommandError

from consultations.classifier import ClassifierUnavailable, classifier_train
from consultations.models import Consultation


class Command(BaseCommand):
    help = "Train the moderation classifier of consultations on their past decisions."

    def add_arguments(self, parser):
        parser.add_argument("slugs", nargs="*", help="consultation slugs")
        parser.add_argument(
            "--open", dest="open_only", action="store_true", help="every open consultation"
        )

    def handle(self, *args, slugs, open_only, **options):
        if not slugs and not open_only:
            raise CommandError("Give consultation slugs or --open.")
        consultations = list(Consultation.objects.filter(slug__in=slugs)) if slugs else []
        missing = set(slugs) - {c.slug for c in consultations}
        if missing:
            raise CommandError(f"Unknown consultation: {', '.join(sorted(missing))}")
        if open_only:
            consultations += [c for c in Consultation.objects.all() if c.is_open]
        trained = 0
        for consultation in consultations:
            try:
                classifier = classifier_train(consultation=consultation)
            except ClassifierUnavailable as error:
                self.stdout.write(f"{consultation.slug}: skipped. {error}")
                continue
            trained += 1
            metrics = classifier.metrics
            self.stdout.write(
                f"{consultation.slug}: classifier #{classifier.pk} trained on {classifier.n_samples} "
                f"decisions; held-out AUC {metrics.get('auc', 'n/a')}, "
                f"precision {metrics.get('precision', 'n/a')}, recall {metrics.get('recall', 'n/a')}"
            )
        self.stdout.write(f"{trained} classifier(s) trained.")
