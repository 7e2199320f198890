"""Distil the `static` embedder's model from the packaged MiniLM, offline (~20 s on 2 cores)."""

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from consensus.engine.embedders import build_static_model, static_model_dir


class Command(BaseCommand):
    help = (
        "Build the static embedding model used by the 'static' embedder "
        "(default folder: $CONCORDE_STATIC_MODEL_DIR or var/models/)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--dir", help="where to write the model (default: %(default)s)")
        parser.add_argument("--force", action="store_true", help="rebuild even if present")

    def handle(self, *args, dir=None, force=False, **options):
        target = Path(dir) if dir else static_model_dir()
        if (target / "modules.json").exists() and not force:
            self.stdout.write(f"Already built: {target} (use --force to rebuild)")
            return
        if target.exists() and not target.is_dir():
            raise CommandError(f"{target} exists and is not a folder")
        if target.exists():
            import shutil

            shutil.rmtree(target)
        build_static_model(target)
        self.stdout.write(self.style.SUCCESS(f"Static embedding model written to {target}"))
