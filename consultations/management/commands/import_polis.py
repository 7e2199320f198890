from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy as _lazy

from consultations.importers import POLIS_VOTES_WEIGHT, import_polis, polis_summary
from consultations.models import Proposal

from ._importing import ImportCommand


class Command(ImportCommand):
    help = _lazy(
        "Import a Polis export folder (comments.csv, and votes.csv or participants-votes.csv): "
        "comments as proposals, voters as participants, their latest votes, then the counters. "
        "The CC BY 4.0 attribution is added to the cause. Re-running it creates nothing new."
    )
    path_help = _lazy("The export folder (with comments.csv).")
    default_language = "en"

    def add_arguments(self, parser):
        super().add_arguments(parser)
        parser.add_argument(
            "--accept-unmoderated",
            action="store_true",
            help=_("Accept comments that Polis had not moderated yet (default: pending)."),
        )
        parser.add_argument(
            "--skip-moderated-out",
            action="store_true",
            help=_(
                "Leave out moderated-out comments and their votes (default: import them as refused)."
            ),
        )
        parser.add_argument(
            "--conversation",
            default=None,
            help=_("Conversation id used in external ids (default: from summary.csv's url)."),
        )

    def handle(self, *args, **options):
        folder = self.check_path(options["path"], folder=True)
        summary = polis_summary(folder)
        consultation, created = self.consultation(
            options,
            question=summary.get("topic", ""),
            description=summary.get("conversation-description", ""),
            non_sequence_votes_weight=POLIS_VOTES_WEIGHT,  # a consultation made for it
        )
        report = self.run_import(
            consultation,
            created,
            import_polis,
            path=folder,
            unmoderated=Proposal.Status.ACCEPTED
            if options["accept_unmoderated"]
            else Proposal.Status.PENDING,
            skip_moderated_out=options["skip_moderated_out"],
            conversation=options["conversation"],
            limit=options["limit"],
            batch_size=options["batch_size"],
            update=options["update"],
        )
        self.add_attribution(consultation, options["attribution"])
        self.print_report(report, consultation)
