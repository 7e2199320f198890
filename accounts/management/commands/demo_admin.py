import secrets

from django.core.management.base import BaseCommand

from accounts.models import User


class Command(BaseCommand):
    help = "Create (or reset) the demo staff account and print its credentials."

    def add_arguments(self, parser):
        parser.add_argument("--email", default="admin@concorde.local")
        parser.add_argument("--password", default=None, help="Default: a new random password.")

    def handle(self, *args, email, password, **options):
        password = password or secrets.token_urlsafe(12)
        user, created = User.objects.get_or_create(email=email, defaults={"display_name": "Admin"})
        user.is_staff = user.is_superuser = True
        user.set_password(password)
        user.save()
        from allauth.account.models import EmailAddress

        EmailAddress.objects.update_or_create(
            user=user, email=email, defaults={"verified": True, "primary": True}
        )
        verb = "Created" if created else "Reset"
        self.stdout.write(self.style.SUCCESS(f"{verb} staff account: {email} / {password}"))
