from django.core.management.base import CommandError
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy as _lazy

from consultations.importers import import_csv
from consultations.models import Proposal

from ._importing import ImportCommand


class Command(ImportCommand):
    help = _lazy(
        "Import a CSV of open answers (e.g. the Grand Débat's answers.csv): one proposal per row, "
        "keyed on an id column; the other columns go to the proposal's source statistics."
    )
    path_help = _lazy("The CSV file.")

    def add_arguments(self, parser):
        super().add_arguments(parser)
        parser.add_argument(
            "--id-column", default="id", help=_("Column of the unique id (default: id).")
        )
        parser.add_argument(
            "--text-column", default="text", help=_("Column of the text (default: text).")
        )
        parser.add_argument(
            "--delimiter", default=",", help=_("Field delimiter (default: ,); \\t for tabs.")
        )
        parser.add_argument(
            "--where",
            action="append",
            default=[],
            metavar="COLUMN=VALUE",
            help=_("Import only the rows where COLUMN equals VALUE (repeatable)."),
        )
        parser.add_argument(
            "--status",
            default=Proposal.Status.ACCEPTED,
            choices=[Proposal.Status.ACCEPTED, Proposal.Status.PENDING],
            help=_("Status of the imported proposals (default: accepted)."),
        )

    def handle(self, *args, **options):
        path = self.check_path(options["path"])
        where = {}
        for condition in options["where"]:
            column, sep, value = condition.partition("=")
            if not sep or not column:
                raise CommandError(
                    _("--where expects COLUMN=VALUE, not %(value)s") % {"value": condition}
                )
            where[column] = value
        delimiter = "\t" if options["delimiter"] in ("\\t", "tab") else options["delimiter"]
        consultation, created = self.consultation(options)
        report = self.run_import(
            consultation,
            created,
            import_csv,
            path=path,
            id_column=options["id_column"],
            text_column=options["text_column"],
            delimiter=delimiter,
            where=where,
            status=options["status"],
            limit=options["limit"],
            batch_size=options["batch_size"],
            update=options["update"],
        )
        self.add_attribution(consultation, options["attribution"])
        self.print_report(report, consultation)
