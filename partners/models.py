from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.urls import reverse
from django.utils.translation import gettext_lazy as _


class PartnerKind(models.TextChoices):
    FOUNDER = "founder", _("Founding partner")
    ACTION_PARTNER = "action_partner", _("Action partner")
    MEDIA = "media", _("Media partner")
    ACTOR = "actor", _("Actor")
    SPONSOR = "sponsor", _("Sponsor")


# Paths under /partners/ that a partner's slug must not take.
RESERVED_SLUGS = frozenset({"space"})


def validate_partner_slug(value):
    if value in RESERVED_SLUGS:
        raise ValidationError(_("This address is reserved; choose another slug."))


class Partner(models.Model):
    """An organisation: a company, an association, a media outlet, a sponsor."""

    name = models.CharField(_("name"), max_length=150, unique=True)
    slug = models.SlugField(
        _("slug"), max_length=100, unique=True, validators=[validate_partner_slug]
    )
    kind = models.CharField(_("kind"), max_length=32, choices=PartnerKind.choices, default=PartnerKind.ACTOR)
    description = models.TextField(_("description"), blank=True)
    logo = models.ImageField(_("logo"), upload_to="partners/", blank=True)
    link = models.URLField(_("website"), blank=True)
    weight = models.IntegerField(_("display order"), default=0)
    users = models.ManyToManyField(
        settings.AUTH_USER_MODEL,
        through="PartnerMembership",
        related_name="partners",
        blank=True,
        verbose_name=_("accounts"),
    )
    created_at = models.DateTimeField(_("created"), auto_now_add=True)

    class Meta:
        verbose_name = _("partner")
        verbose_name_plural = _("partners")
        ordering = ["weight", "name"]

    def __str__(self):
        return self.name

    def get_absolute_url(self):
        return reverse("partners:detail", kwargs={"slug": self.slug})


class CausePartner(models.Model):
    """A partner's role in one cause (founder, media, sponsor...)."""

    cause = models.ForeignKey("causes.Cause", on_delete=models.CASCADE, related_name="cause_partners")
    partner = models.ForeignKey(Partner, on_delete=models.CASCADE, related_name="cause_memberships")
    kind = models.CharField(_("role"), max_length=32, choices=PartnerKind.choices)
    weight = models.IntegerField(_("display order"), default=0)

    class Meta:
        verbose_name = _("partner of a cause")
        verbose_name_plural = _("partners of a cause")
        ordering = ["weight"]
        constraints = [
            models.UniqueConstraint(fields=["cause", "partner", "kind"], name="cause_partner_unique"),
        ]

    def __str__(self):
        return f"{self.partner} ({self.get_kind_display()})"


class PartnerMembership(models.Model):
    """A user account that acts for a partner (sponsors and partners log in)."""

    class Role(models.TextChoices):
        EDITOR = "editor", _("Editor")
        VIEWER = "viewer", _("Viewer")

    partner = models.ForeignKey(Partner, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="partner_memberships"
    )
    role = models.CharField(_("role"), max_length=16, choices=Role.choices, default=Role.EDITOR)

    class Meta:
        verbose_name = _("partner account")
        verbose_name_plural = _("partner accounts")
        constraints = [
            models.UniqueConstraint(fields=["partner", "user"], name="partner_membership_unique"),
        ]

    def __str__(self):
        return f"{self.user} @ {self.partner}"


class PartnerPosition(models.Model):
    """A partner's public position on a proposal, in its name: Make.org's organisations vote in
    public ("X voted on this proposal") and their page lists their positions. A position is not a
    citizen's vote: it counts in no vote figure, score or analysis."""

    class Stance(models.TextChoices):
        AGREE = "agree", _("Agrees")
        DISAGREE = "disagree", _("Disagrees")
        NEUTRAL = "neutral", _("Takes no side")

    partner = models.ForeignKey(Partner, on_delete=models.CASCADE, related_name="positions")
    proposal = models.ForeignKey(
        "consultations.Proposal", on_delete=models.CASCADE, related_name="partner_positions"
    )
    stance = models.CharField(_("stance"), max_length=16, choices=Stance.choices)
    statement = models.TextField(_("statement"), max_length=500, blank=True)
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        verbose_name=_("written by"),
    )
    created_at = models.DateTimeField(_("created"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated"), auto_now=True)

    class Meta:
        verbose_name = _("partner position")
        verbose_name_plural = _("partner positions")
        constraints = [
            models.UniqueConstraint(fields=["partner", "proposal"], name="partner_position_unique"),
        ]

    def __str__(self):
        return f"{self.partner}: {self.get_stance_display()} ({self.proposal_id})"
