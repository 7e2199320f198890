"""System checks of the engine's settings (``manage.py check``, run by migrate and at deploy)."""

from django.core import checks

from .engine.threads import THREAD_SETTINGS, env_threads


@checks.register(checks.Tags.compatibility)
def thread_settings_check(app_configs=None, **kwargs):
    """A thread count that is not a whole number >= 1 would stop every engine run."""
    errors = []
    for name in THREAD_SETTINGS:
        try:
            env_threads(name)
        except ValueError as exc:
            errors.append(
                checks.Error(
                    str(exc),
                    hint="Unset it, or give a whole number such as 1 (docs/operations.md).",
                    id="consensus.E001",
                )
            )
    return errors
