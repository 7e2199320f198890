from django.utils.translation import gettext_lazy as _lazy

from consultations.importers import import_makeorg

from ._importing import ImportCommand


class Command(ImportCommand):
    help = _lazy(
        "Import Make.org's open-data proposals.csv (id,text,votes,adhesion,engagement,score,"
        "author_age) as accepted proposals. Re-running it creates nothing new."
    )
    path_help = _lazy("The proposals.csv file.")
    default_language = "fr"

    def handle(self, *args, **options):
        path = self.check_path(options["path"])
        consultation, created = self.consultation(options)
        report = self.run_import(
            consultation,
            created,
            import_makeorg,
            path=path,
            limit=options["limit"],
            batch_size=options["batch_size"],
            update=options["update"],
        )
        self.add_attribution(consultation, options["attribution"])
        self.print_report(report, consultation)
