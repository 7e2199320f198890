"""What the import commands share: options, the target consultation, the printed report.

The leading underscore keeps Django from taking this module for a command.
"""

import argparse
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy as _lazy

from consultations.importers import (
    DEFAULT_BATCH_SIZE,
    ImportFormatError,
    ImportReport,
    cause_attribution_add,
    consultation_for_import,
)
from consultations.models import Consultation

# Bad rows printed in full; the others are only counted (the report keeps up to 1,000).
SHOWN_BAD_ROWS = 100


def positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(
            _("%(value)s is not a positive integer") % {"value": value}
        )
    return number


def detail_label(key: str) -> str:
    """Readable name of a count in ``ImportReport.details``."""
    labels = {
        "filtered_out": _("rows filtered out"),
        "comments_moderated_out_skipped": _("moderated-out comments skipped"),
        "participants_created": _("participants created"),
        "participants_existing": _("participants already there"),
        "vote_rows": _("votes read"),
        "votes_created": _("votes created"),
        "votes_updated": _("votes replaced by a later vote"),
        "votes_unchanged": _("vote rows already there or superseded in the file"),
        "votes_on_skipped_comments": _("votes on skipped comments"),
    }
    return labels.get(key, key)


class ImportCommand(BaseCommand):
    """Base of ``import_makeorg``, ``import_polis`` and ``import_csv``: thin wrappers that
    parse options, find (or create) the consultation, call the importer and print its report."""

    path_help = _lazy("File to import.")
    default_language = ""

    def create_parser(self, prog_name, subcommand, **kwargs):
        parser = super().create_parser(prog_name, subcommand, **kwargs)
        parser.description = str(self.help)  # argparse wants a str, not a lazy translation
        return parser

    def add_arguments(self, parser):
        parser.add_argument("path", help=str(self.path_help))
        parser.add_argument(
            "--consultation", required=True, metavar="SLUG", help=_("Target consultation.")
        )
        parser.add_argument(
            "--create",
            action="store_true",
            help=_(
                "Create the consultation (and its cause) if it does not exist; needs --question."
            ),
        )
        parser.add_argument(
            "--question", default="", help=_("Question of a consultation to create.")
        )
        parser.add_argument(
            "--cause",
            default="",
            metavar="SLUG",
            help=_(
                "Cause of a consultation to create (existing or new; default: the consultation's slug)."
            ),
        )
        parser.add_argument(
            "--cause-title",
            default="",
            help=_("Title of a cause to create (default: the question)."),
        )
        parser.add_argument(
            "--language",
            default=self.default_language,
            choices=Consultation.Language.values,
            help=_("Language of a consultation to create."),
        )
        parser.add_argument(
            "--attribution",
            default="",
            help=_("Licence and credit of the data, added to the cause."),
        )
        parser.add_argument("--limit", type=positive_int, help=_("Read at most N data rows."))
        parser.add_argument(
            "--batch-size",
            type=positive_int,
            default=DEFAULT_BATCH_SIZE,
            help=_("Rows written per batch."),
        )
        parser.add_argument(
            "--update",
            action="store_true",
            help=_("Refresh proposals already imported instead of skipping them."),
        )

    def check_path(self, path: str, *, folder=False) -> Path:
        path = Path(path)
        exists = path.is_dir() if folder else path.is_file()
        if not exists:
            message = _("Folder not found: %(path)s") if folder else _("File not found: %(path)s")
            raise CommandError(message % {"path": path})
        return path

    def consultation(self, options, *, question="", description="", **created_with):
        try:
            consultation, created = consultation_for_import(
                slug=options["consultation"],
                create=options["create"],
                question=options["question"] or question,
                cause_slug=options["cause"],
                cause_title=options["cause_title"],
                language=options["language"],
                description=description,
                **created_with,
            )
        except ImportFormatError as exc:
            raise CommandError(str(exc)) from exc
        if created:
            self.stdout.write(
                _("Created the consultation “%(question)s” (%(slug)s) in the cause “%(cause)s”.")
                % {
                    "question": consultation.question,
                    "slug": consultation.slug,
                    "cause": consultation.cause,
                }
            )
        return consultation, created

    def run_import(self, consultation, created, function, **kwargs) -> ImportReport:
        """Call ``function``; a source that cannot be read undoes a consultation just created."""
        try:
            report = function(consultation=consultation, **kwargs)
        except ImportFormatError as exc:
            if created:
                cause = consultation.cause
                consultation.delete()
                if not cause.consultations.exists():
                    cause.delete()
            raise CommandError(str(exc)) from exc
        return report

    def add_attribution(self, consultation, text):
        if text and cause_attribution_add(cause=consultation.cause, text=text):
            self.stdout.write(
                _("Data attribution added to the cause “%(cause)s”.")
                % {"cause": consultation.cause}
            )

    def print_report(self, report: ImportReport, consultation) -> None:
        write = self.stdout.write
        write(
            _("Imported %(source)s into “%(question)s” (%(slug)s):")
            % {
                "source": report.source,
                "question": consultation.question,
                "slug": consultation.slug,
            }
        )
        write(_("  rows read: %(n)d") % {"n": report.rows})
        write(_("  proposals created: %(n)d") % {"n": report.created})
        write(
            _("  proposals already there: %(n)d (updated: %(updated)d)")
            % {"n": report.existing, "updated": report.updated}
        )
        for key, value in report.details.items():
            write(f"  {detail_label(key)}: {value}")
        style = self.style.WARNING if report.bad_count else self.style.SUCCESS
        write(style(_("  bad rows: %(n)d") % {"n": report.bad_count}))
        for bad in report.bad_rows[:SHOWN_BAD_ROWS]:
            write(f"    {bad}")
        if report.bad_count > SHOWN_BAD_ROWS:
            write(_("    … and %(n)d more") % {"n": report.bad_count - SHOWN_BAD_ROWS})
        write(
            _("  elapsed: %(seconds).2f s (%(rate)s rows/s)")
            % {"seconds": report.elapsed, "rate": f"{report.rows_per_second:,.0f}"}
        )
