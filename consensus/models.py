from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils.translation import gettext_lazy as _


class EngineRun(models.Model):
    """One run of the consensus engine on a consultation; results are versioned under it."""

    class Kind(models.TextChoices):
        IDEAS = "ideas", _("Ideas (embeddings and clustering)")
        VOTES = "votes", _("Votes (scores, opinion groups, consensus)")
        FULL = "full", _("Full (ideas then votes)")

    class Status(models.TextChoices):
        PENDING = "pending", _("Pending")
        RUNNING = "running", _("Running")
        DONE = "done", _("Done")
        FAILED = "failed", _("Failed")
        CANCELLED = "cancelled", _("Cancelled")

    ACTIVE_STATUSES = (Status.PENDING, Status.RUNNING)

    consultation = models.ForeignKey(
        "consultations.Consultation", on_delete=models.CASCADE, related_name="engine_runs"
    )
    kind = models.CharField(_("kind"), max_length=16, choices=Kind.choices, default=Kind.FULL)
    parameters = models.JSONField(_("parameters"), default=dict, blank=True)
    model_name = models.CharField(_("embedding model"), max_length=200, blank=True)
    seed = models.IntegerField(_("seed"), default=0)
    input_hash = models.CharField(_("input hash"), max_length=64, blank=True)
    status = models.CharField(
        _("status"), max_length=16, choices=Status.choices, default=Status.PENDING, db_index=True
    )
    phase = models.CharField(_("phase"), max_length=32, blank=True)
    total_chunks = models.PositiveIntegerField(_("chunks"), default=0)
    done_chunks = models.PositiveIntegerField(_("chunks done"), default=0)
    input_count = models.PositiveIntegerField(_("items"), default=0)
    timings = models.JSONField(_("timings (s)"), default=dict, blank=True)
    metrics = models.JSONField(_("quality metrics"), default=dict, blank=True)
    error = models.TextField(_("error"), blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(_("created"), auto_now_add=True)
    started_at = models.DateTimeField(_("started"), null=True, blank=True)
    finished_at = models.DateTimeField(_("finished"), null=True, blank=True)

    class Meta:
        verbose_name = _("engine run")
        verbose_name_plural = _("engine runs")
        ordering = ["-created_at"]
        constraints = [
            # A double click (or two staff members at once) starts one run, not two.
            models.UniqueConstraint(
                fields=["consultation"],
                condition=Q(status__in=["pending", "running"]),
                name="engine_run_one_active_per_consultation",
            ),
            models.CheckConstraint(
                condition=Q(done_chunks__lte=models.F("total_chunks")) | Q(total_chunks=0),
                name="engine_run_progress_bounded",
            ),
        ]

    def __str__(self):
        return f"{self.consultation} #{self.pk} ({self.status})"

    @property
    def progress(self):
        if not self.total_chunks:
            return 1.0 if self.status == self.Status.DONE else 0.0
        return self.done_chunks / self.total_chunks


class Idea(models.Model):
    """A cluster of proposals found by one engine run."""

    run = models.ForeignKey(EngineRun, on_delete=models.CASCADE, related_name="ideas")
    consultation = models.ForeignKey(
        "consultations.Consultation", on_delete=models.CASCADE, related_name="ideas"
    )
    number = models.PositiveIntegerField(_("number"))
    label = models.CharField(_("label"), max_length=250)
    keywords = models.JSONField(_("keywords"), default=list, blank=True)
    size = models.PositiveIntegerField(_("proposals"), default=0)
    share = models.FloatField(_("share of proposals"), default=0.0)
    scores = models.JSONField(_("scores"), default=dict, blank=True)

    class Meta:
        verbose_name = _("idea")
        verbose_name_plural = _("ideas")
        ordering = ["run", "-size"]
        constraints = [
            models.UniqueConstraint(fields=["run", "number"], name="idea_unique_number_per_run"),
        ]

    def __str__(self):
        return self.label


class IdeaMembership(models.Model):
    """A proposal's membership in an idea, within one run."""

    run = models.ForeignKey(EngineRun, on_delete=models.CASCADE, related_name="memberships")
    idea = models.ForeignKey(Idea, on_delete=models.CASCADE, related_name="memberships")
    proposal = models.ForeignKey(
        "consultations.Proposal", on_delete=models.CASCADE, related_name="idea_memberships"
    )
    similarity = models.FloatField(_("similarity to the idea's centre"), default=0.0)
    is_central = models.BooleanField(_("among the most central"), default=False)

    class Meta:
        verbose_name = _("idea membership")
        verbose_name_plural = _("idea memberships")
        constraints = [
            models.UniqueConstraint(fields=["run", "proposal"], name="membership_one_idea_per_run"),
        ]
        indexes = [models.Index(fields=["idea", "-similarity"], name="membership_idea_sim_idx")]

    def __str__(self):
        return f"{self.proposal_id} → {self.idea_id}"
