from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class ConsultationsConfig(AppConfig):
    name = "consultations"
    verbose_name = _("Consultations")

    def ready(self):
        from django.contrib.auth.signals import user_logged_in

        from .services import _on_user_logged_in

        # Django's signal: allauth's login and signup send it too. An anonymous visitor's
        # votes follow them into their account.
        user_logged_in.connect(_on_user_logged_in, dispatch_uid="consultations.participant_login")
