from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class CausesConfig(AppConfig):
    name = "causes"
    verbose_name = _("Causes")
