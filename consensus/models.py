from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone
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

    # Values of ``phase`` written by consensus.services, with their labels for the staff pages.
    PHASES = {
        "chunks": _("Cutting the proposals into chunks"),
        "embedding": _("Embedding the proposals"),
        "dedupe": _("Folding duplicates"),
        "clustering": _("Grouping proposals into ideas"),
        "labelling": _("Describing the ideas"),
        "writing ideas": _("Saving the ideas"),
        "copying ideas": _("Copying the ideas of the published run"),
        "scores": _("Scoring the proposals"),
        "loading votes": _("Loading the votes"),
        "opinion groups": _("Finding opinion groups"),
        "bridging": _("Computing bridging scores"),
        "writing scores": _("Saving the scores"),
        "copying votes": _("Copying the vote results of the published run"),
        "idea scores": _("Scoring the ideas"),
        "publishing": _("Publishing"),
    }

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
    # The run reads accepted proposals with an id up to this one: proposals accepted later wait
    # for the next run (or ``assign_new_proposal``), so chunks stay stable across retries.
    input_max_id = models.BigIntegerField(_("last proposal id"), null=True, blank=True)
    timings = models.JSONField(_("timings (s)"), default=dict, blank=True)
    metrics = models.JSONField(_("quality metrics"), default=dict, blank=True)
    error = models.TextField(_("error"), blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(_("created"), auto_now_add=True)
    started_at = models.DateTimeField(_("started"), null=True, blank=True)
    finished_at = models.DateTimeField(_("finished"), null=True, blank=True)
    # Claimed by the final step (clustering and write-back) so that a duplicated chord body does
    # not run it twice at once; a claim older than the step's time limit is from a dead worker.
    finalizing_since = models.DateTimeField(_("final step started"), null=True, blank=True)
    # The run that provided the published results when this one was published: "roll back"
    # makes it current again, and rolling back again walks further back.
    replaced_run = models.ForeignKey(
        "self",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        verbose_name=_("run it replaced"),
    )
    published_at = models.DateTimeField(_("last published"), null=True, blank=True)

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

    @property
    def phase_label(self):
        return self.PHASES.get(self.phase, self.phase)

    @property
    def progress_percent(self):
        return round(100 * self.progress)

    @property
    def is_active(self):
        return self.status in self.ACTIVE_STATUSES

    @property
    def has_ideas(self):
        return self.kind in (self.Kind.IDEAS, self.Kind.FULL)

    @property
    def has_votes(self):
        return self.kind in (self.Kind.VOTES, self.Kind.FULL)

    @property
    def vector_run_ids(self) -> list[int]:
        """The runs whose stored embeddings stand for this run's ideas: a votes-only run took its
        ideas, and their members' vectors, from an earlier run; the vectors of proposals
        accepted since are stored under the run itself (``proposal_assign_to_idea``)."""
        ideas_from = (self.metrics or {}).get("ideas_from_run")
        return [ideas_from, self.pk] if ideas_from else [self.pk]

    @property
    def duration(self):
        if self.started_at and self.finished_at:
            return (self.finished_at - self.started_at).total_seconds()
        return None


class Theme(models.Model):
    """Related ideas of one run, grouped by the engine (``engine.ideas.find_themes``). Its size
    is its ideas' (``selectors.run_themes``): staff moves change it without a recount."""

    run = models.ForeignKey(EngineRun, on_delete=models.CASCADE, related_name="themes")
    number = models.PositiveIntegerField(_("number"))
    # the theme's first three keywords, or what staff wrote (empty: "Theme <n>" is shown)
    label = models.CharField(_("label"), max_length=250, blank=True)
    named_by_staff = models.BooleanField(
        _("named by staff"),
        default=False,
        help_text=_(
            "The label was written by staff. Later runs keep it for the same theme; a theme "
            "that splits or merges is named by its words again."
        ),
    )
    keywords = models.JSONField(_("keywords"), default=list, blank=True)

    class Meta:
        verbose_name = _("theme")
        verbose_name_plural = _("themes")
        ordering = ["run", "number"]
        constraints = [
            models.UniqueConstraint(fields=["run", "number"], name="theme_unique_number_per_run"),
        ]

    def __str__(self):
        return self.label or _("Theme %(number)d") % {"number": self.number + 1}


class Idea(models.Model):
    """A cluster of proposals found by one engine run."""

    run = models.ForeignKey(EngineRun, on_delete=models.CASCADE, related_name="ideas")
    consultation = models.ForeignKey(
        "consultations.Consultation", on_delete=models.CASCADE, related_name="ideas"
    )
    number = models.PositiveIntegerField(_("number"))
    label = models.CharField(_("label"), max_length=250)
    # Set when staff rewrite the label (IdeaAdmin); a later run gives the label to the same idea.
    named_by_staff = models.BooleanField(
        _("named by staff"),
        default=False,
        help_text=_(
            "The label was written by staff. Later runs keep it for the same idea; an idea "
            "that splits or merges gets its most central proposal as label again."
        ),
    )
    # Set when staff split proposals out into a new idea; later runs keep it as its own idea.
    created_by_staff = models.BooleanField(
        _("created by staff"),
        default=False,
        editable=False,
        help_text=_(
            "Staff split proposals out of other ideas into this one. Later runs keep the "
            "proposals they placed here together as an idea of its own."
        ),
    )
    keywords = models.JSONField(_("keywords"), default=list, blank=True)
    theme = models.ForeignKey(
        Theme,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="ideas",
        verbose_name=_("theme"),
    )
    size = models.PositiveIntegerField(_("proposals"), default=0)
    share = models.FloatField(_("share of proposals"), default=0.0)
    scores = models.JSONField(_("scores"), default=dict, blank=True)
    # Set when staff change its members by hand; ``services.ideas_refresh`` describes it again.
    members_changed = models.BooleanField(
        _("members changed by hand"),
        default=False,
        editable=False,
        help_text=_(
            "Staff moved proposals in or out of this idea; its centre, central proposals and "
            "keywords are being computed again."
        ),
    )
    # L2-normalised float32 centre in the run's embedding space, for ``assign_new_proposal``.
    centroid = models.BinaryField(_("centre"), null=True, blank=True, editable=False)

    class Meta:
        verbose_name = _("idea")
        verbose_name_plural = _("ideas")
        ordering = ["run", "-size"]
        constraints = [
            models.UniqueConstraint(fields=["run", "number"], name="idea_unique_number_per_run"),
        ]

    def __str__(self):
        return self.label

    @property
    def zone_label(self):
        zone = (self.scores or {}).get("zone")
        return ProposalScore.Zone(zone).label if zone in ProposalScore.Zone.values else ""


class IdeaMembership(models.Model):
    """A proposal's membership in an idea, within one run."""

    # No index of their own: the unique (run, proposal) index serves lookups by run and the
    # (idea, -similarity) index lookups by idea. Two fewer indexes to maintain on the 2M rows
    # a national run writes (docs/bench_engine_scale.md).
    run = models.ForeignKey(
        EngineRun, on_delete=models.CASCADE, related_name="memberships", db_index=False
    )
    idea = models.ForeignKey(
        Idea, on_delete=models.CASCADE, related_name="memberships", db_index=False
    )
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


class IdeaPlacement(models.Model):
    """Staff put this proposal in another idea of the run, or in none, by hand.

    The target is the proposal's membership in the run: the placement records that a person
    chose it. The next run built on this one puts the proposal where the same idea went (kept, or
    merged into one) or in no idea again, and copies the placement to itself; when that idea split
    or disappeared the placement stops there and is counted on the new run
    (``services._carry_placements``).
    """

    run = models.ForeignKey(EngineRun, on_delete=models.CASCADE, related_name="placements")
    proposal = models.ForeignKey(
        "consultations.Proposal", on_delete=models.CASCADE, related_name="idea_placements"
    )
    placed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        verbose_name=_("placed by"),
    )
    placed_at = models.DateTimeField(_("placed at"), default=timezone.now)

    class Meta:
        verbose_name = _("idea placement")
        verbose_name_plural = _("idea placements")
        constraints = [
            models.UniqueConstraint(fields=["run", "proposal"], name="placement_one_per_run"),
        ]

    def __str__(self):
        return f"{self.proposal_id} @ {self.run_id}"


class EngineChunk(models.Model):
    """One slice of a run's proposals (an id range), embedded by one ``embed_chunk`` task.

    ``done_at`` is the chunk's completion marker. A chunk task claims it with a conditional
    update (``done_at IS NULL``) in the same transaction as its embeddings, so a retried or
    duplicated chunk counts once in ``EngineRun.done_chunks`` and a resumed run only redoes
    the chunks whose marker is still empty.
    """

    run = models.ForeignKey(
        EngineRun, on_delete=models.CASCADE, related_name="chunks", db_index=False
    )  # the unique (run, ...) index serves lookups by run
    number = models.PositiveIntegerField(_("number"))
    lo_id = models.BigIntegerField(_("first proposal id"))
    hi_id = models.BigIntegerField(_("last proposal id"))
    size = models.PositiveIntegerField(_("proposals"), default=0)
    embedded = models.PositiveIntegerField(_("embedded"), default=0)
    reused = models.PositiveIntegerField(_("reused from an earlier run"), default=0)
    seconds = models.FloatField(_("seconds"), default=0.0)
    done_at = models.DateTimeField(_("done"), null=True, blank=True)

    class Meta:
        verbose_name = _("engine chunk")
        verbose_name_plural = _("engine chunks")
        ordering = ["run", "number"]
        constraints = [
            models.UniqueConstraint(fields=["run", "number"], name="engine_chunk_unique_number"),
            models.CheckConstraint(
                condition=Q(lo_id__lte=models.F("hi_id")), name="engine_chunk_range"
            ),
        ]

    def __str__(self):
        return f"{self.run_id}/{self.number} [{self.lo_id}..{self.hi_id}]"


class ProposalEmbedding(models.Model):
    """A proposal's sentence embedding within one run, shared by every worker through the database.

    Why rows in PostgreSQL rather than .npy files in the default storage: every worker on any
    machine already reaches the database, whereas the default storage is a local folder unless
    an object store is configured; an upsert keyed by (run, proposal) makes a retried or
    duplicated chunk idempotent for free, inside the same transaction as the chunk marker (no
    half-written file to clean up); deleting a run cascades to its vectors. A 512-d float16 vector
    is 1 KiB, stored inline (under the TOAST threshold): 2 M proposals are about 2.3 GB, read back
    in a streamed ``values_list`` in ~1 min. ``text_hash`` lets a later run with the same model
    reuse a vector when the text has not changed.
    """

    run = models.ForeignKey(
        EngineRun, on_delete=models.CASCADE, related_name="embeddings", db_index=False
    )  # the unique (run, ...) index serves lookups by run
    proposal = models.ForeignKey(
        "consultations.Proposal", on_delete=models.CASCADE, related_name="embeddings"
    )
    vector = models.BinaryField(_("vector (float16, L2-normalised)"))
    text_hash = models.CharField(_("text hash"), max_length=32)

    class Meta:
        verbose_name = _("proposal embedding")
        verbose_name_plural = _("proposal embeddings")
        constraints = [
            models.UniqueConstraint(fields=["run", "proposal"], name="embedding_unique_per_run"),
        ]

    def __str__(self):
        return f"{self.run_id}/{self.proposal_id}"


class ProposalScore(models.Model):
    """Scores of one proposal computed by one run, from trusted and sequence votes only."""

    class Zone(models.TextChoices):
        CONSENSUS = "consensus", _("Consensus")
        REJECTION = "rejection", _("Rejection")
        LIMBO = "limbo", _("Limbo")
        CONTROVERSY = "controversy", _("Controversy")
        UNSCORED = "unscored", _("Not enough votes yet")

    run = models.ForeignKey(
        EngineRun, on_delete=models.CASCADE, related_name="proposal_scores", db_index=False
    )  # the unique (run, ...) index serves lookups by run
    proposal = models.ForeignKey(
        "consultations.Proposal", on_delete=models.CASCADE, related_name="engine_scores"
    )
    zone = models.CharField(_("zone"), max_length=16, choices=Zone.choices)
    n_trusted = models.PositiveIntegerField(_("trusted votes"), default=0)
    n_sequence = models.PositiveIntegerField(_("sequence votes"), default=0)
    # Exposure accounting: the sequence cards of this proposal displayed to participants, and
    # how many of those participants voted on it there (the others stopped there).
    shown = models.PositiveIntegerField(_("times shown in sequences"), default=0, db_default=0)
    answered = models.PositiveIntegerField(
        _("votes of those shown it"), default=0, db_default=0
    )
    agreement = models.FloatField(_("agreement"))
    disagreement = models.FloatField(_("disagreement"))
    neutral = models.FloatField(_("neutral"))
    top_score = models.FloatField(_("top score"))
    top_score_lower = models.FloatField(_("top score, lower bound"))
    top_score_upper = models.FloatField(_("top score, upper bound"))
    controversy = models.FloatField(_("controversy"))
    rejection = models.FloatField(_("rejection"))
    # Opinion groups (null when the run found no groups or the proposal had no votes in them).
    group_consensus = models.FloatField(_("group-informed consensus"), null=True, blank=True)
    min_group_agree = models.FloatField(
        _("agreement of the least convinced group"), null=True, blank=True
    )
    bridging = models.FloatField(_("bridging score"), null=True, blank=True)
    # Per opinion group (in OpinionGroup.number order): [agree, disagree, seen] vote counts.
    group_counts = models.JSONField(_("votes per opinion group"), default=list, blank=True)
    # Post-stratification (consensus/engine/weighting.py): [agree, votes] of the participants the
    # run weighted, then the same weighted; empty without population shares or such votes
    weighted_counts = models.JSONField(
        _("votes weighted to the population"), default=list, blank=True
    )

    class Meta:
        verbose_name = _("proposal score")
        verbose_name_plural = _("proposal scores")
        constraints = [
            models.UniqueConstraint(fields=["run", "proposal"], name="score_unique_per_run"),
        ]
        indexes = [
            models.Index(fields=["run", "-top_score"], name="score_run_top_idx"),
            models.Index(fields=["run", "zone"], name="score_run_zone_idx"),
        ]

    def __str__(self):
        return f"{self.run_id}/{self.proposal_id} {self.zone}"


class OpinionGroup(models.Model):
    """A group of participants who vote alike (Polis-style), found by one run."""

    run = models.ForeignKey(
        EngineRun, on_delete=models.CASCADE, related_name="opinion_groups", db_index=False
    )  # the unique (run, ...) index serves lookups by run
    number = models.PositiveSmallIntegerField(_("number"))
    size = models.PositiveIntegerField(_("participants"), default=0)
    centre_x = models.FloatField(_("centre x"), default=0.0)
    centre_y = models.FloatField(_("centre y"), default=0.0)
    # [{"proposal": id, "direction": "agree"|"disagree", "p": .., "ratio": .., "n_success": ..,
    #   "n_seen": .., "best_agree": bool}, ...], most representative first.
    representatives = models.JSONField(_("representative proposals"), default=list, blank=True)

    class Meta:
        verbose_name = _("opinion group")
        verbose_name_plural = _("opinion groups")
        ordering = ["run", "number"]
        constraints = [
            models.UniqueConstraint(fields=["run", "number"], name="opinion_group_unique_number"),
        ]

    def __str__(self):
        return f"{self.run_id}/{self.number} ({self.size})"


class ParticipantProjection(models.Model):
    """A participant's position on the opinion map and group, within one run.

    One narrow row per voter (about 60 bytes): a million voters is ~60 MB, written with COPY,
    and "which group am I in" stays one indexed lookup.
    """

    run = models.ForeignKey(
        EngineRun, on_delete=models.CASCADE, related_name="projections", db_index=False
    )  # the unique (run, ...) index serves lookups by run
    participant = models.ForeignKey(
        "consultations.Participant", on_delete=models.CASCADE, related_name="projections"
    )
    x = models.FloatField(_("position on the first axis"))
    y = models.FloatField(_("position on the second axis"))
    group = models.PositiveSmallIntegerField(_("opinion group"), null=True, blank=True)
    in_conv = models.BooleanField(_("clustered"), default=False)

    class Meta:
        verbose_name = _("participant projection")
        verbose_name_plural = _("participant projections")
        constraints = [
            models.UniqueConstraint(
                fields=["run", "participant"], name="projection_unique_per_run"
            ),
        ]

    def __str__(self):
        return f"{self.run_id}/{self.participant_id}"
