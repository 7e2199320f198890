"""Load a demo made of real public data: Make.org's « Le monde d'après » and a Polis conversation.

Idempotent: causes and consultations are found by slug, and the importers skip what is
already there, so running it again only fills in what is missing (e.g. after a --limit).
"""

from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.utils.text import slugify
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy as _lazy

from causes.models import Cause
from consultations.importers import (
    DEFAULT_BATCH_SIZE,
    POLIS_VOTES_WEIGHT,
    ImportFormatError,
    cause_attribution_add,
    import_makeorg,
    import_polis,
    polis_summary,
)
from consultations.models import Consultation

from ._importing import detail_label, positive_int

# Demo content is data (French for Make.org, English for Polis), not interface text.
MAKEORG = {
    "path": "opentext/makeorg_monde_dapres_2020/proposals.csv",
    "cause": {
        "slug": "le-monde-dapres",
        "title": "Le monde d'après",
        "summary": "Inventer ensemble le monde d'après la crise du Covid-19.",
        "description": (
            "Au printemps 2020, pendant le confinement, des dizaines de milliers de citoyens ont "
            "proposé et voté sur Make.org pour dessiner le monde d'après. Les propositions "
            "ci-dessous sont les vraies propositions publiées en données ouvertes, avec les "
            "votes qu'elles avaient reçus."
        ),
        "kind": Cause.Kind.GREAT_CAUSE,
    },
    "consultation": {
        "slug": "monde-dapres",
        "question": "Comment inventer ensemble le monde d'après ?",
        "language": Consultation.Language.FR,
        "proposal_prefix": "Il faut",
        "countries": ["FR"],
        # the sequence's card asking who takes part, for the results by age range, gender and
        # postal area (created so; an existing demo consultation keeps its setting)
        "ask_demographics": True,
    },
    "attribution": (
        "Propositions et votes : Make.org, consultation « Le monde d'après » (2020), données via "
        "Après, Maintenant ! / metagov data-puddle, licence CC0 1.0."
    ),
}
POLIS_LANGUAGES = {"vtaiwan.uberx": "zh", "austria-climate": "de"}


class Command(BaseCommand):
    help = _lazy(
        "Create (idempotently) the demo: the cause « Le monde d'après » with Make.org's real "
        "proposals, and a cause with a real Polis conversation and its votes."
    )

    def create_parser(self, prog_name, subcommand, **kwargs):
        parser = super().create_parser(prog_name, subcommand, **kwargs)
        parser.description = str(self.help)  # argparse wants a str, not a lazy translation
        return parser

    def add_arguments(self, parser):
        parser.add_argument(
            "--limit",
            type=positive_int,
            help=_("Import at most N Make.org proposals (default: all 18,690)."),
        )
        parser.add_argument(
            "--polis",
            default="brexit-consensus",
            metavar="FOLDER",
            help=_("Polis conversation folder under the data folder (default: brexit-consensus)."),
        )
        parser.add_argument(
            "--no-polis", action="store_true", help=_("Skip the Polis conversation.")
        )
        parser.add_argument("--batch-size", type=positive_int, default=DEFAULT_BATCH_SIZE)
        parser.add_argument(
            "--data-dir",
            default=None,
            help=_("Folder of the public data sets (default: settings.CONCORDE_DATA_DIR)."),
        )

    def handle(self, *args, limit, polis, no_polis, batch_size, data_dir, **options):
        data = Path(data_dir or settings.CONCORDE_DATA_DIR)
        makeorg_path = data / MAKEORG["path"]
        polis_path = data / "polis" / polis
        if not makeorg_path.is_file():
            raise CommandError(_("File not found: %(path)s") % {"path": makeorg_path})
        if not no_polis and not (polis_path / "comments.csv").is_file():
            raise CommandError(_("Polis conversation not found: %(path)s") % {"path": polis_path})

        consultation = self._consultation(MAKEORG["cause"], MAKEORG["consultation"])
        self._attribution(consultation.cause, MAKEORG["attribution"])
        try:
            report = import_makeorg(
                consultation=consultation, path=makeorg_path, limit=limit, batch_size=batch_size
            )
        except ImportFormatError as exc:
            raise CommandError(str(exc)) from exc
        self._report(report)

        if no_polis:
            return
        summary = polis_summary(polis_path)
        topic = summary.get("topic", "").strip() or polis
        language = next(
            (code for prefix, code in POLIS_LANGUAGES.items() if polis.startswith(prefix)),
            Consultation.Language.EN,
        )
        slug = slugify(polis.replace(".", "-"))[:90]
        consultation = self._consultation(
            {
                "slug": f"polis-{slug}",
                "title": topic[:200],
                "summary": _("A real Polis conversation, with its participants' votes.")[:300],
                "description": summary.get("conversation-description", "").strip(),
                "kind": Cause.Kind.PUBLIC_CONSULTATION,
            },
            {
                "slug": slug,
                "question": topic[:250],
                "description": summary.get("conversation-description", "").strip(),
                "language": language,
                "proposal_prefix": "",
                "non_sequence_votes_weight": POLIS_VOTES_WEIGHT,
            },
        )
        try:
            # Polis shows the statements unmoderated until a moderator rejects them.
            report = import_polis(
                consultation=consultation,
                path=polis_path,
                unmoderated="accepted",
                batch_size=batch_size,
            )
        except ImportFormatError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(
            _("Polis data attribution (CC BY 4.0) is on the cause “%(cause)s”.")
            % {"cause": consultation.cause}
        )
        self._report(report)

    def _consultation(self, cause_fields, consultation_fields) -> Consultation:
        cause_fields, consultation_fields = dict(cause_fields), dict(consultation_fields)
        cause, created = Cause.objects.get_or_create(
            slug=cause_fields.pop("slug"), defaults={**cause_fields, "status": Cause.Status.ACTIVE}
        )
        self.stdout.write(
            (
                _("Created the cause “%(title)s”.")
                if created
                else _("The cause “%(title)s” is already there.")
            )
            % {"title": cause.title}
        )
        consultation, created = Consultation.objects.get_or_create(
            slug=consultation_fields.pop("slug"), defaults={**consultation_fields, "cause": cause}
        )
        self.stdout.write(
            (
                _("Created the consultation “%(question)s” (%(slug)s).")
                if created
                else _("The consultation “%(question)s” (%(slug)s) is already there.")
            )
            % {"question": consultation.question, "slug": consultation.slug}
        )
        return consultation

    def _attribution(self, cause, text):
        if cause_attribution_add(cause=cause, text=text):
            self.stdout.write(
                _("Data attribution added to the cause “%(title)s”.") % {"title": cause.title}
            )

    def _report(self, report):
        self.stdout.write(
            _(
                "  %(source)s: %(rows)d rows read, %(created)d proposals created, "
                "%(existing)d already there, %(bad)d bad rows, %(seconds).1f s"
            )
            % {
                "source": report.source,
                "rows": report.rows,
                "created": report.created,
                "existing": report.existing,
                "bad": report.bad_count,
                "seconds": report.elapsed,
            }
        )
        for key, value in report.details.items():
            self.stdout.write(f"    {detail_label(key)}: {value}")
        for bad in report.bad_rows[:20]:
            self.stdout.write(f"    {bad}")
