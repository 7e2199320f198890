import uuid
from pathlib import PurePath

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import gettext_lazy as _


class ActionPlan(models.Model):
    class Status(models.TextChoices):
        DRAFT = "draft", _("Draft")
        PUBLISHED = "published", _("Published")
        CLOSED = "closed", _("Closed")

    cause = models.ForeignKey("causes.Cause", on_delete=models.CASCADE, related_name="action_plans")
    title = models.CharField(_("title"), max_length=200)
    summary = models.TextField(_("summary"), blank=True)
    status = models.CharField(
        _("status"), max_length=16, choices=Status.choices, default=Status.DRAFT
    )
    created_at = models.DateTimeField(_("created"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated"), auto_now=True)

    class Meta:
        verbose_name = _("action plan")
        verbose_name_plural = _("action plans")
        ordering = ["-created_at"]

    def __str__(self):
        return self.title


class Action(models.Model):
    class Status(models.TextChoices):
        DRAFT = "draft", _("Draft")
        PLANNED = "planned", _("Planned")
        IN_PROGRESS = "in_progress", _("In progress")
        DONE = "done", _("Done")
        ABANDONED = "abandoned", _("Abandoned")

    plan = models.ForeignKey(ActionPlan, on_delete=models.CASCADE, related_name="actions")
    title = models.CharField(_("title"), max_length=200)
    description = models.TextField(_("description"), blank=True)
    owner = models.ForeignKey(
        "partners.Partner",
        on_delete=models.PROTECT,
        related_name="owned_actions",
        verbose_name=_("owner"),
    )
    funders = models.ManyToManyField(
        "partners.Partner", blank=True, related_name="funded_actions", verbose_name=_("funders")
    )
    ideas = models.ManyToManyField("consensus.Idea", blank=True, related_name="actions")
    proposals = models.ManyToManyField(
        "consultations.Proposal", blank=True, related_name="actions", verbose_name=_("proposals")
    )
    status = models.CharField(
        _("status"), max_length=16, choices=Status.choices, default=Status.DRAFT
    )
    created_at = models.DateTimeField(_("created"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated"), auto_now=True)

    class Meta:
        verbose_name = _("action")
        verbose_name_plural = _("actions")
        ordering = ["plan", "created_at"]

    def __str__(self):
        return self.title

    def get_absolute_url(self):
        return reverse("actions:detail", kwargs={"pk": self.pk})


class Objective(models.Model):
    """A measurable objective: progress is derived from measurements, never typed in."""

    action = models.ForeignKey(Action, on_delete=models.CASCADE, related_name="objectives")
    indicator = models.CharField(_("indicator"), max_length=200)
    unit = models.CharField(_("unit"), max_length=40, blank=True)
    baseline = models.DecimalField(_("baseline"), max_digits=16, decimal_places=4, default=0)
    target = models.DecimalField(_("target"), max_digits=16, decimal_places=4)
    baseline_on = models.DateField(
        _("baseline date"),
        default=timezone.localdate,
        help_text=_(
            "When the baseline was measured: the start of the expected pace (see docs/progress.md)."
        ),
    )
    due_date = models.DateField(_("due date"))

    class Meta:
        verbose_name = _("objective")
        verbose_name_plural = _("objectives")
        ordering = ["action", "pk"]
        constraints = [
            models.CheckConstraint(
                condition=~Q(target=models.F("baseline")),
                name="objective_target_differs_from_baseline",
            ),
            models.CheckConstraint(
                condition=Q(due_date__gte=models.F("baseline_on")),
                name="objective_due_after_baseline",
            ),
        ]

    def __str__(self):
        return self.indicator


def evidence_upload_to(instance, filename):
    """A random name under the month's folder: uploaders never choose or overwrite a path."""
    suffix = PurePath(filename).suffix.lower()[:10]
    return timezone.now().strftime(f"evidence/%Y/%m/{uuid.uuid4().hex}{suffix}")


class Measurement(models.Model):
    objective = models.ForeignKey(Objective, on_delete=models.CASCADE, related_name="measurements")
    measured_on = models.DateField(_("date"), default=timezone.localdate)
    value = models.DecimalField(_("value"), max_digits=16, decimal_places=4)
    evidence_url = models.URLField(_("evidence link"), blank=True)
    evidence_file = models.FileField(_("evidence file"), upload_to=evidence_upload_to, blank=True)
    note = models.TextField(_("note"), blank=True)
    entered_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(_("created"), auto_now_add=True)

    class Meta:
        verbose_name = _("measurement")
        verbose_name_plural = _("measurements")
        ordering = ["objective", "measured_on", "created_at"]
        indexes = [
            models.Index(fields=["objective", "measured_on"], name="measurement_objective_idx")
        ]

    def __str__(self):
        return f"{self.objective}: {self.value} ({self.measured_on})"


class ActionUpdate(models.Model):
    """A dated status update posted by the owner partner (or staff): the action's public log."""

    action = models.ForeignKey(Action, on_delete=models.CASCADE, related_name="updates")
    status = models.CharField(_("status"), max_length=16, choices=Action.Status.choices)
    previous_status = models.CharField(
        _("previous status"), max_length=16, choices=Action.Status.choices
    )
    note = models.TextField(_("note"), blank=True)
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(_("created"), default=timezone.now)

    class Meta:
        verbose_name = _("status update")
        verbose_name_plural = _("status updates")
        ordering = ["-created_at", "-pk"]
        indexes = [models.Index(fields=["action", "-created_at"], name="action_update_idx")]

    def __str__(self):
        return f"{self.action_id}: {self.previous_status} → {self.status}"

    @property
    def status_changed(self):
        return self.status != self.previous_status


class Follow(models.Model):
    """A citizen who follows an action and is emailed when it moves."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="action_follows"
    )
    action = models.ForeignKey(Action, on_delete=models.CASCADE, related_name="follows")
    created_at = models.DateTimeField(_("created"), auto_now_add=True)

    class Meta:
        verbose_name = _("follow")
        verbose_name_plural = _("follows")
        constraints = [
            models.UniqueConstraint(fields=["user", "action"], name="follow_once_per_action"),
        ]

    def __str__(self):
        return f"{self.user_id} follows {self.action_id}"
