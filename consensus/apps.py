from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class ConsensusConfig(AppConfig):
    name = "consensus"
    verbose_name = _("Consensus engine")

    def ready(self):
        from . import checks  # noqa: F401  (registers the system checks)
