from django.conf import settings
from django.db import models
from django.urls import reverse
from django.utils.translation import gettext_lazy as _


class Cause(models.Model):
    """A great cause, a public or private consultation programme, or an election."""

    class Status(models.TextChoices):
        DRAFT = "draft", _("Draft")
        ACTIVE = "active", _("Active")
        ARCHIVED = "archived", _("Archived")

    class Kind(models.TextChoices):
        GREAT_CAUSE = "great_cause", _("Great cause")
        PUBLIC_CONSULTATION = "public_consultation", _("Public consultation")
        PRIVATE_CONSULTATION = "private_consultation", _("Private consultation (members only)")
        ELECTION = "election", _("Election")

    title = models.CharField(_("title"), max_length=200)
    slug = models.SlugField(_("slug"), max_length=100, unique=True)
    summary = models.CharField(_("summary"), max_length=300, blank=True)
    description = models.TextField(_("description"), blank=True)
    image = models.ImageField(_("image"), upload_to="causes/", blank=True)
    image_alt = models.CharField(_("image text alternative"), max_length=130, blank=True)
    status = models.CharField(
        _("status"), max_length=16, choices=Status.choices, default=Status.DRAFT, db_index=True
    )
    kind = models.CharField(_("kind"), max_length=32, choices=Kind.choices, default=Kind.GREAT_CAUSE)
    members = models.ManyToManyField(
        settings.AUTH_USER_MODEL,
        blank=True,
        related_name="member_causes",
        verbose_name=_("members"),
        help_text=_("Only members see a private consultation."),
    )
    data_attribution = models.TextField(
        _("data attribution"),
        blank=True,
        help_text=_("Licence and attribution of imported public data shown on the cause's pages."),
    )
    created_at = models.DateTimeField(_("created"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated"), auto_now=True)

    class Meta:
        verbose_name = _("cause")
        verbose_name_plural = _("causes")
        ordering = ["-created_at"]

    def __str__(self):
        return self.title

    def get_absolute_url(self):
        return reverse("causes:detail", kwargs={"slug": self.slug})

    @property
    def is_private(self):
        return self.kind == self.Kind.PRIVATE_CONSULTATION
