import math
import uuid
from typing import NamedTuple

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from consensus.engine.scores import share_half_width

# A bijective scramble of proposal ids into [0, 2**32) (Knuth's multiplicative hash; exact for
# ids below 3.4 billion, whose product stays within 64 bits): the "Random" order of a
# consultation's proposals (``selectors.ShuffledProposals``), read through proposal_shuffle_idx.
SHUFFLE_SPAN = 2**32
SHUFFLE_KEY = models.ExpressionWrapper(
    models.F("id") * 2654435761 % SHUFFLE_SPAN, output_field=models.BigIntegerField()
)


class Consultation(models.Model):
    """The question asked to citizens, within a cause."""

    class Phase(models.TextChoices):
        UPCOMING = "upcoming", _("Upcoming")
        OPEN = "open", _("Open")
        FINISHED = "finished", _("Finished")

    class Language(models.TextChoices):
        FR = "fr", _("French")
        EN = "en", _("English")
        DE = "de", _("German")
        ZH = "zh", _("Chinese")
        OTHER = "other", _("Other")

    cause = models.ForeignKey(
        "causes.Cause", on_delete=models.PROTECT, related_name="consultations", verbose_name=_("cause")
    )
    question = models.CharField(_("question"), max_length=250)
    slug = models.SlugField(_("slug"), max_length=100, unique=True)
    description = models.TextField(_("description"), blank=True)
    language = models.CharField(
        _("language"), max_length=8, choices=Language.choices, default=Language.FR
    )
    countries = models.JSONField(
        _("countries"), default=list, blank=True, help_text=_("ISO country codes, e.g. [\"FR\", \"BE\"].")
    )
    proposal_prefix = models.CharField(_("proposal prefix"), max_length=40, blank=True, default="Il faut")
    starts_at = models.DateTimeField(_("opens"), default=timezone.now)
    ends_at = models.DateTimeField(_("closes"), null=True, blank=True)
    can_propose = models.BooleanField(
        _("proposals open"), default=True, help_text=_("Untick for a vote-only phase.")
    )
    auto_accept = models.BooleanField(
        _("accept proposals without moderation"), default=False
    )
    votes_target = models.PositiveIntegerField(_("votes target"), default=0)
    proposal_min_length = models.PositiveSmallIntegerField(
        _("minimum proposal length"), default=12, validators=[MinValueValidator(1)]
    )
    proposal_max_length = models.PositiveSmallIntegerField(
        _("maximum proposal length"), default=140, validators=[MaxValueValidator(1000)]
    )
    # Sequence settings (Make.org defaults, see docs and consultations/sequence.py).
    sequence_size = models.PositiveSmallIntegerField(
        _("cards per sequence"), default=12, validators=[MinValueValidator(1), MaxValueValidator(50)]
    )
    sequence_new_ratio = models.FloatField(
        _("share of new proposals"), default=0.3, validators=[MinValueValidator(0), MaxValueValidator(1)]
    )
    sequence_controversy_ratio = models.FloatField(
        _("share of controversial proposals"),
        default=0.1,
        validators=[MinValueValidator(0), MaxValueValidator(1)],
    )
    sequence_new_votes_threshold = models.PositiveIntegerField(
        _("votes below which a proposal is new"), default=10
    )
    sequence_tested_max_votes = models.PositiveIntegerField(
        _("votes at which a proposal leaves the sequence"), default=1500
    )
    non_sequence_votes_weight = models.FloatField(
        _("weight of votes cast outside sequences"),
        default=0.5,
        validators=[MinValueValidator(0), MaxValueValidator(1)],
    )
    ask_demographics = models.BooleanField(
        _("ask who takes part"),
        default=False,
        help_text=_(
            "After the second vote of a sequence, a card asks the participant's age range, "
            "gender and postal area, each optional, once per participant. The results then "
            "show agreement by age range, gender and postal area, for groups large enough only "
            "(setting CONSENSUS_MIN_SEGMENT_SIZE)."
        ),
    )
    population_source = models.CharField(
        _("source of the population shares"),
        max_length=300,
        blank=True,
        help_text=_(
            "Where the population shares below come from (e.g. the national statistics "
            "office's estimates, and their date). Shown with the weighted results."
        ),
    )
    current_run = models.ForeignKey(
        "consensus.EngineRun",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        verbose_name=_("current engine run"),
    )
    created_at = models.DateTimeField(_("created"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated"), auto_now=True)

    class Meta:
        verbose_name = _("consultation")
        verbose_name_plural = _("consultations")
        ordering = ["-starts_at"]
        constraints = [
            models.CheckConstraint(
                condition=Q(ends_at__isnull=True) | Q(ends_at__gt=models.F("starts_at")),
                name="consultation_ends_after_start",
            ),
            models.CheckConstraint(
                condition=Q(proposal_max_length__gte=models.F("proposal_min_length")),
                name="consultation_length_bounds",
            ),
        ]

    def __str__(self):
        return self.question

    def get_absolute_url(self):
        return reverse("consultations:detail", kwargs={"slug": self.slug})

    @property
    def phase(self):
        now = timezone.now()
        if now < self.starts_at:
            return self.Phase.UPCOMING
        if self.ends_at and now >= self.ends_at:
            return self.Phase.FINISHED
        return self.Phase.OPEN

    @property
    def is_open(self):
        return self.phase == self.Phase.OPEN

    @property
    def accepts_proposals(self):
        return self.is_open and self.can_propose


class Proposal(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending", _("Pending")
        ACCEPTED = "accepted", _("Accepted")
        REFUSED = "refused", _("Refused")
        POSTPONED = "postponed", _("Postponed")
        ARCHIVED = "archived", _("Archived")

    class RefusalReason(models.TextChoices):
        INCOMPREHENSIBLE = "incomprehensible", _("Incomprehensible")
        OFF_TOPIC = "off_topic", _("Off topic")
        PARTISAN = "partisan", _("Partisan")
        INSULTING = "insulting", _("Insulting or offensive")
        DUPLICATE = "duplicate", _("Duplicate")
        SEVERAL_IDEAS = "several_ideas", _("Several ideas")
        ILLEGAL = "illegal", _("Illegal")
        PERSONAL_DATA = "personal_data", _("Contains personal data")
        ADVERTISING = "advertising", _("Advertising")
        TEST = "test", _("Test")
        OTHER = "other", _("Other")

    class Origin(models.TextChoices):
        WEB = "web", _("Web")
        IMPORT = "import", _("Import")
        WORKSHOP = "workshop", _("Workshop")

    # Not indexed alone: proposal_queue_idx (consultation, status, created_at) covers it.
    consultation = models.ForeignKey(
        Consultation,
        on_delete=models.CASCADE,
        related_name="proposals",
        verbose_name=_("consultation"),
        db_index=False,
    )
    content = models.CharField(_("content"), max_length=1000)
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="proposals",
        verbose_name=_("author"),
    )
    author_name = models.CharField(_("author's public name"), max_length=60, blank=True)
    author_age = models.PositiveSmallIntegerField(_("author's age"), null=True, blank=True)
    status = models.CharField(
        _("status"), max_length=16, choices=Status.choices, default=Status.PENDING
    )
    refusal_reason = models.CharField(
        _("refusal reason"), max_length=32, choices=RefusalReason.choices, blank=True
    )
    origin = models.CharField(_("origin"), max_length=16, choices=Origin.choices, default=Origin.WEB)
    external_id = models.CharField(
        _("external id"), max_length=64, blank=True, help_text=_("Identifier in the imported source.")
    )
    source_stats = models.JSONField(
        _("statistics at the source"),
        default=dict,
        blank=True,
        help_text=_("Vote aggregates published by the platform the proposal was imported from."),
    )
    # The votes at the source read from ``source_stats`` (``source_support``), kept by ``save``
    # and by the importers (``source_columns``): the consultation's total sums them, and the
    # orders "Most voted at the source" and "Most supported at the source" read them through
    # proposal_source_votes_idx and proposal_source_support_idx. Votes never write them;
    # db_default, for rows written by SQL (the benches' COPY).
    source_votes = models.PositiveIntegerField(_("votes at the source"), default=0, db_default=0)
    source_adhesion = models.FloatField(_("share for at the source"), null=True, blank=True)
    # The share less its Agresti-Coull half-width: 95 % of 20 votes ranks below 90 % of 20,000.
    source_support_low = models.FloatField(
        _("lower bound of the share for at the source"), null=True, blank=True
    )
    # Denormalised total of votes of every trust level, kept by F() increments (see services).
    # In no index, so that a vote's update of this row is HOT: no index entry is written. The
    # "Most voted" order sorts on a copy of it, ProposalRank.
    votes_total = models.PositiveIntegerField(_("votes"), default=0)
    moderated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        verbose_name=_("moderated by"),
    )
    moderated_at = models.DateTimeField(_("moderated"), null=True, blank=True)
    locked_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        verbose_name=_("locked by"),
    )
    locked_until = models.DateTimeField(_("locked until"), null=True, blank=True)
    # Indexed with the id by proposal_created_idx.
    created_at = models.DateTimeField(_("created"), default=timezone.now)
    updated_at = models.DateTimeField(_("updated"), auto_now=True)

    class Meta:
        verbose_name = _("proposal")
        verbose_name_plural = _("proposals")
        ordering = ["-created_at"]
        permissions = [("moderate_proposal", _("Can moderate proposals"))]
        indexes = [
            # The moderation queue (oldest first) and the "Most recent" order (newest first), both
            # with the id as tie-break: an import gives thousands of proposals one timestamp.
            models.Index(
                fields=["consultation", "status", "created_at", "id"], name="proposal_queue_idx"
            ),
            # Every consultation's proposals, newest first (the admin's list, the classifier).
            models.Index(fields=["created_at", "id"], name="proposal_created_idx"),
            # The "Random" order: a fixed shuffle of the ids, read from a per-visitor start.
            models.Index("consultation", "status", SHUFFLE_KEY, name="proposal_shuffle_idx"),
            # The moderation queue across all consultations: pending ones, oldest first.
            models.Index(
                fields=["created_at"], condition=Q(status="pending"), name="proposal_pending_idx"
            ),
            # The orders by the votes at the source, for the proposals imported with some.
            models.Index(
                fields=["consultation", "status", "-source_votes", "-id"],
                condition=Q(source_votes__gt=0),
                name="proposal_source_votes_idx",
            ),
            models.Index(
                fields=["consultation", "status", "-source_support_low", "-id"],
                condition=Q(source_votes__gt=0),
                name="proposal_source_support_idx",
            ),
            # On PostgreSQL also proposal_content_trgm_idx, a trigram GIN index on content for
            # word searches and similar proposals (migration 0007; not in Django's state, so
            # that SQLite never sees it), and the table's fillfactor is 90 (room for HOT updates).
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["consultation", "external_id"],
                condition=~Q(external_id=""),
                name="proposal_unique_external_id",
            ),
            models.CheckConstraint(
                condition=~Q(status="refused") | ~Q(refusal_reason=""),
                name="proposal_refused_has_reason",
            ),
        ]

    def __str__(self):
        return self.content

    def save(self, *args, update_fields=None, **kwargs):
        """Save, with the columns of the votes at the source read again from ``source_stats``
        whenever it is saved (not when it is deferred or left out of ``update_fields``)."""
        if update_fields is None:
            saves_stats = "source_stats" not in self.get_deferred_fields()
        else:
            saves_stats = "source_stats" in update_fields
            if saves_stats:
                update_fields = {*update_fields, *SOURCE_COLUMNS}
        if saves_stats:
            for name, value in source_columns(self.source_stats).items():
                setattr(self, name, value)
        super().save(*args, update_fields=update_fields, **kwargs)

    def get_absolute_url(self):
        return reverse("consultations:proposal", kwargs={"slug": self.consultation.slug, "pk": self.pk})

    @property
    def source_support(self) -> "SourceSupport | None":
        """The votes at the source and the share for, from the columns ``save`` keeps."""
        if not self.source_votes or self.source_adhesion is None:
            return None
        return SourceSupport(self.source_votes, self.source_adhesion)


# More votes than a 32-bit column holds is no proposal's count: such a figure is left out.
MAX_SOURCE_VOTES = 2**31 - 1


class SourceSupport(NamedTuple):
    votes: int
    adhesion: float  # share of the votes that were for, 0 to 1


def _finite(value) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _whole(value) -> int | None:
    number = _finite(value)
    return int(number) if number is not None and number == int(number) else None


def source_support(stats) -> SourceSupport | None:
    """The votes a proposal received where it was imported from, and the share of them for it.

    From ``source_stats``' ``votes`` and ``adhesion`` (Make.org's open data: ``adhesion`` is the
    share of "for" votes), else from ``votes_agree`` and ``votes_total`` (Cap Collectif's, as
    République numérique's: agree among agree, disagree and mixed); CSV imports keep them as
    text. None unless they read as a whole number of votes >= 1 and a share within 0-1 (or
    agree votes within 0 and the total), and at most ``MAX_SOURCE_VOTES``: a column of another
    meaning is left out rather than misread.
    """
    if not isinstance(stats, dict):
        return None
    votes, adhesion = _whole(stats.get("votes")), _finite(stats.get("adhesion"))
    if votes is not None and adhesion is not None:
        if 1 <= votes <= MAX_SOURCE_VOTES and 0.0 <= adhesion <= 1.0:
            return SourceSupport(votes, adhesion)
        return None
    total, agree = _whole(stats.get("votes_total")), _whole(stats.get("votes_agree"))
    if total is None or agree is None:
        return None
    if 1 <= total <= MAX_SOURCE_VOTES and 0 <= agree <= total:
        return SourceSupport(total, agree / total)
    return None


SOURCE_COLUMNS = ("source_votes", "source_adhesion", "source_support_low")


def source_columns(stats) -> dict:
    """The values of ``SOURCE_COLUMNS`` for a proposal's ``source_stats``: its votes at the
    source, the share for, and that share less its Agresti-Coull half-width (0 and none when
    ``source_support`` reads no votes)."""
    support = source_support(stats)
    if support is None:
        return dict.fromkeys(SOURCE_COLUMNS) | {"source_votes": 0}
    low = support.adhesion - float(share_half_width(support.adhesion, support.votes))
    return {
        "source_votes": support.votes,
        "source_adhesion": support.adhesion,
        "source_support_low": round(low, 6),
    }


class Participant(models.Model):
    """One voter identity: a logged-in user, or an anonymous browser session."""

    class AgeRange(models.TextChoices):
        UNDER_18 = "0-17", _("Under 18")
        AGE_18_24 = "18-24", "18–24"
        AGE_25_34 = "25-34", "25–34"
        AGE_35_49 = "35-49", "35–49"
        AGE_50_64 = "50-64", "50–64"
        AGE_65_PLUS = "65+", _("65 and over")

    class Gender(models.TextChoices):
        FEMALE = "f", _("Woman")
        MALE = "m", _("Man")
        OTHER = "o", _("Other")

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="participant",
        verbose_name=_("user"),
    )
    session_key = models.CharField(_("anonymous key"), max_length=64, null=True, blank=True, unique=True)
    external_id = models.CharField(_("external id"), max_length=64, null=True, blank=True, unique=True)
    age_range = models.CharField(_("age range"), max_length=8, choices=AgeRange.choices, blank=True)
    gender = models.CharField(_("gender"), max_length=1, choices=Gender.choices, blank=True)
    postal_area = models.CharField(_("postal area"), max_length=8, blank=True)
    # When the participant answered the demographics card, or declined it: never asked again.
    demographics_asked_at = models.DateTimeField(_("asked who they are"), null=True, blank=True)
    created_at = models.DateTimeField(_("created"), default=timezone.now)

    class Meta:
        verbose_name = _("participant")
        verbose_name_plural = _("participants")

    def __str__(self):
        if self.user_id:
            return str(self.user)
        return f"participant #{self.pk}"


class VoteKey(models.TextChoices):
    AGREE = "agree", _("Agree")
    DISAGREE = "disagree", _("Disagree")
    NEUTRAL = "neutral", _("Neutral")


class QualificationKey(models.TextChoices):
    LIKE_IT = "like_it", _("Favourite")
    DOABLE = "doable", _("Realistic")
    PLATITUDE_AGREE = "platitude_agree", _("Platitude")
    NO_WAY = "no_way", _("No way!")
    IMPOSSIBLE = "impossible", _("Impossible")
    PLATITUDE_DISAGREE = "platitude_disagree", _("Platitude")
    DO_NOT_UNDERSTAND = "do_not_understand", _("I don't understand")
    NO_OPINION = "no_opinion", _("No opinion")
    DO_NOT_CARE = "do_not_care", _("I don't care")


QUALIFICATIONS_BY_VOTE = {
    VoteKey.AGREE: (QualificationKey.LIKE_IT, QualificationKey.DOABLE, QualificationKey.PLATITUDE_AGREE),
    VoteKey.DISAGREE: (
        QualificationKey.NO_WAY,
        QualificationKey.IMPOSSIBLE,
        QualificationKey.PLATITUDE_DISAGREE,
    ),
    VoteKey.NEUTRAL: (
        QualificationKey.DO_NOT_UNDERSTAND,
        QualificationKey.NO_OPINION,
        QualificationKey.DO_NOT_CARE,
    ),
}


class Trust(models.TextChoices):
    """How far a vote is trusted (Make.org's levels): only trusted and sequence votes are scored."""

    UNTRUSTED = "untrusted", _("Untrusted")
    TRUSTED = "trusted", _("Trusted")
    SEQUENCE = "sequence", _("Sequence")


class Vote(models.Model):
    # Neither foreign key is indexed alone: vote_one_per_participant (participant, proposal) and
    # vote_proposal_key_idx (proposal, key) cover them, two index writes less per vote.
    participant = models.ForeignKey(
        Participant,
        on_delete=models.CASCADE,
        related_name="votes",
        verbose_name=_("participant"),
        db_index=False,
    )
    proposal = models.ForeignKey(
        Proposal,
        on_delete=models.CASCADE,
        related_name="votes",
        verbose_name=_("proposal"),
        db_index=False,
    )
    key = models.CharField(_("vote"), max_length=16, choices=VoteKey.choices)
    trust = models.CharField(_("trust"), max_length=16, choices=Trust.choices, default=Trust.TRUSTED)
    in_sequence = models.BooleanField(_("cast in a sequence"), default=False)
    created_at = models.DateTimeField(_("created"), default=timezone.now)
    updated_at = models.DateTimeField(_("updated"), auto_now=True)

    class Meta:
        verbose_name = _("vote")
        verbose_name_plural = _("votes")
        constraints = [
            models.UniqueConstraint(fields=["participant", "proposal"], name="vote_one_per_participant"),
            models.CheckConstraint(
                condition=Q(key__in=[choice.value for choice in VoteKey]), name="vote_key_valid"
            ),
        ]
        indexes = [models.Index(fields=["proposal", "key"], name="vote_proposal_key_idx")]

    def __str__(self):
        return f"{self.participant_id} {self.key} {self.proposal_id}"


class Qualification(models.Model):
    """A qualification on a vote; the vote key is copied so the database checks the pairing."""

    vote = models.ForeignKey(
        Vote, on_delete=models.CASCADE, related_name="qualifications", verbose_name=_("vote")
    )
    vote_key = models.CharField(_("vote"), max_length=16, choices=VoteKey.choices)
    key = models.CharField(_("qualification"), max_length=32, choices=QualificationKey.choices)
    created_at = models.DateTimeField(_("created"), default=timezone.now)

    class Meta:
        verbose_name = _("qualification")
        verbose_name_plural = _("qualifications")
        constraints = [
            models.UniqueConstraint(fields=["vote", "key"], name="qualification_once_per_vote"),
            models.CheckConstraint(
                condition=(
                    Q(vote_key=VoteKey.AGREE, key__in=[k.value for k in QUALIFICATIONS_BY_VOTE[VoteKey.AGREE]])
                    | Q(
                        vote_key=VoteKey.DISAGREE,
                        key__in=[k.value for k in QUALIFICATIONS_BY_VOTE[VoteKey.DISAGREE]],
                    )
                    | Q(
                        vote_key=VoteKey.NEUTRAL,
                        key__in=[k.value for k in QUALIFICATIONS_BY_VOTE[VoteKey.NEUTRAL]],
                    )
                ),
                name="qualification_matches_vote_key",
            ),
        ]

    def __str__(self):
        return self.key


class ProposalRank(models.Model):
    """A proposal's place in the "Most voted" and "Most controversial" orders, as last refreshed.

    Kept apart from the proposal row so that neither a vote nor a refresh writes the proposal
    table's indexes (its trigram index above all): votes update ``Proposal.votes_total``, which
    is in no index, and ``services.popular_rank_refresh`` copies the totals and balances that
    changed here.
    """

    proposal = models.OneToOneField(
        Proposal, on_delete=models.CASCADE, primary_key=True, related_name="rank"
    )
    # rank_popular_idx (consultation, votes, proposal) covers the foreign key.
    consultation = models.ForeignKey(
        Consultation, on_delete=models.CASCADE, related_name="+", db_index=False
    )
    votes = models.PositiveIntegerField(_("votes"), default=0)
    # The smaller of its agree and disagree counts: large when both sides are numerous.
    balance = models.PositiveIntegerField(_("balance"), default=0, db_default=0)

    class Meta:
        verbose_name = _("proposal rank")
        verbose_name_plural = _("proposal ranks")
        indexes = [
            models.Index(
                fields=["consultation", "-votes", "-proposal"], name="rank_popular_idx"
            ),
            models.Index(
                fields=["consultation", "-balance", "-votes", "-proposal"],
                name="rank_debated_idx",
            ),
        ]

    def __str__(self):
        return f"{self.proposal_id}: {self.votes}"


class ProposalCounter(models.Model):
    """Number of votes (or qualifications) of one key and one trust level on a proposal.

    Rows are only ever changed by SQL upserts that add to ``count`` inside the database, so
    concurrent votes never lose an update. ``consultations.services.counters_recount`` rebuilds
    them from the votes table.
    """

    # counter_unique_key (proposal, key, trust) covers the foreign key.
    proposal = models.ForeignKey(
        Proposal, on_delete=models.CASCADE, related_name="counters", db_index=False
    )
    # The proposal's consultation, copied by ``counters_add`` so that the counters of one
    # consultation have an index path (counter_consultation_idx) without a join on proposals.
    # Null only on rows written by hand (tests); ``counters_recount`` fills it.
    consultation = models.ForeignKey(
        Consultation,
        on_delete=models.CASCADE,
        related_name="+",
        null=True,
        blank=True,
        db_index=False,
    )
    key = models.CharField(_("key"), max_length=32)
    trust = models.CharField(_("trust"), max_length=16, choices=Trust.choices)
    count = models.IntegerField(_("count"), default=0)

    class Meta:
        verbose_name = _("proposal counter")
        verbose_name_plural = _("proposal counters")
        constraints = [
            models.UniqueConstraint(fields=["proposal", "key", "trust"], name="counter_unique_key"),
        ]
        indexes = [models.Index(fields=["consultation", "trust"], name="counter_consultation_idx")]

    def __str__(self):
        return f"{self.proposal_id} {self.key}/{self.trust}={self.count}"


class PopulationShare(models.Model):
    """A category's share of the population a consultation speaks for (an age range, a gender):
    the reference its results are weighted to, next to the results as voted."""

    class Dimension(models.TextChoices):
        AGE_RANGE = "age_range", _("age range")
        GENDER = "gender", _("gender")

    VALUES = {
        Dimension.AGE_RANGE: Participant.AgeRange,
        Dimension.GENDER: Participant.Gender,
    }

    consultation = models.ForeignKey(
        Consultation,
        on_delete=models.CASCADE,
        related_name="population_shares",
        verbose_name=_("consultation"),
        db_index=False,  # population_share_unique starts with it
    )
    dimension = models.CharField(_("dimension"), max_length=16, choices=Dimension.choices)
    value = models.CharField(
        _("category"),
        max_length=8,
        choices=[
            (_("Age range"), Participant.AgeRange.choices),
            (_("Gender"), Participant.Gender.choices),
        ],
    )
    percent = models.DecimalField(
        _("share of the population (%)"),
        max_digits=5,
        decimal_places=2,
        validators=[MinValueValidator(0), MaxValueValidator(100)],
    )

    class Meta:
        verbose_name = _("population share")
        verbose_name_plural = _("population shares")
        ordering = ["consultation", "dimension", "value"]
        constraints = [
            models.UniqueConstraint(
                fields=["consultation", "dimension", "value"], name="population_share_unique"
            ),
        ]

    def __str__(self):
        return f"{self.get_dimension_display()} {self.get_value_display()}: {self.percent} %"

    def clean(self):
        values = self.VALUES.get(self.dimension)
        if values is not None and self.value not in values.values:
            raise ValidationError(
                {
                    "value": _("“%(value)s” is not a category of the %(dimension)s.")
                    % {"value": self.value, "dimension": self.get_dimension_display()}
                }
            )


class Exposure(models.Model):
    """A card dealt to a participant in a sequence (for the sequence's analyses and trust)."""

    # exposure_participant_idx (participant, proposal) covers the participant foreign key.
    participant = models.ForeignKey(
        Participant, on_delete=models.CASCADE, related_name="exposures", db_index=False
    )
    proposal = models.ForeignKey(Proposal, on_delete=models.CASCADE, related_name="exposures")
    sequence_id = models.UUIDField(_("sequence"), default=uuid.uuid4, db_index=True)
    position = models.PositiveSmallIntegerField(_("position"))
    pool = models.CharField(_("pool"), max_length=16, blank=True)
    created_at = models.DateTimeField(_("dealt"), default=timezone.now)
    # Set when the card is displayed: a participant who leaves at card 3 was dealt 12 cards but
    # shown 3, and only the cards shown count in the results' exposure figures.
    shown_at = models.DateTimeField(_("shown"), null=True, blank=True)

    class Meta:
        verbose_name = _("exposure")
        verbose_name_plural = _("exposures")
        indexes = [models.Index(fields=["participant", "proposal"], name="exposure_participant_idx")]

    def __str__(self):
        return f"{self.sequence_id}#{self.position}"


# Moderation at scale (consultations/moderation.py) -----------------------------------------


class ModeratorAssignment(models.Model):
    """A moderator may moderate this consultation's proposals (superusers moderate them all)."""

    consultation = models.ForeignKey(
        Consultation,
        on_delete=models.CASCADE,
        related_name="moderator_assignments",
        verbose_name=_("consultation"),
    )
    moderator = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="moderator_assignments",
        verbose_name=_("moderator"),
    )
    assigned_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        verbose_name=_("assigned by"),
    )
    assigned_at = models.DateTimeField(_("assigned"), default=timezone.now)

    class Meta:
        verbose_name = _("moderator assignment")
        verbose_name_plural = _("moderator assignments")
        constraints = [
            models.UniqueConstraint(
                fields=["moderator", "consultation"], name="moderator_assignment_unique"
            ),
        ]

    def __str__(self):
        return f"{self.moderator} → {self.consultation}"


class ProposalEdit(models.Model):
    """A spelling correction made by a moderator: who, when, the text before and after."""

    proposal = models.ForeignKey(
        Proposal, on_delete=models.CASCADE, related_name="edits", verbose_name=_("proposal")
    )
    editor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        verbose_name=_("editor"),
    )
    before = models.TextField(_("before"))
    after = models.TextField(_("after"))
    distance = models.PositiveIntegerField(_("characters changed"), default=0)
    created_at = models.DateTimeField(_("edited"), default=timezone.now)

    class Meta:
        verbose_name = _("proposal edit")
        verbose_name_plural = _("proposal edits")
        ordering = ["-created_at", "-pk"]

    def __str__(self):
        return f"{self.proposal_id}: {self.before} → {self.after}"


class ModerationClassifier(models.Model):
    """A text classifier trained on one consultation's past decisions (see consultations/classifier.py).

    ``model`` is the pickled scikit-learn pipeline; only the latest row of a consultation is used.
    """

    consultation = models.ForeignKey(
        Consultation,
        on_delete=models.CASCADE,
        related_name="moderation_classifiers",
        verbose_name=_("consultation"),
    )
    model = models.BinaryField(_("model"), editable=False)
    classes = models.JSONField(_("classes"), default=list)
    n_samples = models.PositiveIntegerField(_("decisions learnt from"), default=0)
    metrics = models.JSONField(_("quality metrics"), default=dict, blank=True)
    trained_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        verbose_name=_("trained by"),
    )
    created_at = models.DateTimeField(_("trained"), default=timezone.now)

    class Meta:
        verbose_name = _("moderation classifier")
        verbose_name_plural = _("moderation classifiers")
        ordering = ["-created_at", "-pk"]
        get_latest_by = ["created_at", "pk"]

    def __str__(self):
        return f"{self.consultation} #{self.pk}"


class ProposalPrediction(models.Model):
    """The classifier's guess for a pending proposal: probability of a refusal and the likely reason."""

    proposal = models.OneToOneField(
        Proposal, on_delete=models.CASCADE, related_name="prediction", verbose_name=_("proposal")
    )
    classifier = models.ForeignKey(
        ModerationClassifier,
        on_delete=models.CASCADE,
        related_name="predictions",
        verbose_name=_("classifier"),
    )
    refuse_probability = models.FloatField(_("probability of a refusal"))
    reason = models.CharField(
        _("likely reason"), max_length=32, choices=Proposal.RefusalReason.choices, blank=True
    )
    reason_probability = models.FloatField(_("probability of the reason"), default=0.0)
    created_at = models.DateTimeField(_("predicted"), default=timezone.now)

    class Meta:
        verbose_name = _("proposal prediction")
        verbose_name_plural = _("proposal predictions")
        indexes = [models.Index(fields=["-refuse_probability"], name="prediction_refuse_idx")]

    def __str__(self):
        return f"{self.proposal_id}: {self.refuse_probability:.2f} {self.reason}"


# Tasks that could not reach the broker (config/outbox.py) -------------------------------------


class PendingTask(models.Model):
    """A Celery task that was to be sent after a commit while the broker was unreachable.

    ``config.outbox.outbox_flush`` sends these again (every minute from beat, when a worker
    starts, and with ``manage.py tasks_requeue``) and deletes each one it sent. Delivery is at
    least once: tasks are idempotent (docs/STYLE), so a task sent twice does no harm.
    """

    name = models.CharField(_("task"), max_length=200)
    args = models.JSONField(_("arguments"), default=list, blank=True)
    kwargs = models.JSONField(_("keyword arguments"), default=dict, blank=True)
    options = models.JSONField(_("options"), default=dict, blank=True)
    attempts = models.PositiveIntegerField(_("attempts"), default=0)
    last_error = models.CharField(_("last error"), max_length=500, blank=True)
    created_at = models.DateTimeField(_("created"), default=timezone.now)

    class Meta:
        verbose_name = _("pending task")
        verbose_name_plural = _("pending tasks")
        ordering = ["pk"]

    def __str__(self):
        return f"{self.name} {self.args}"


# Import jobs (consultations/imports.py) ------------------------------------------------------


class ImportJob(models.Model):
    """One uploaded file imported into a consultation by a Celery task, with its progress.

    The file is kept in the default storage; ``errors`` holds the first skipped rows (row,
    line, reason), ``rows_skipped`` counts them all.
    """

    class Kind(models.TextChoices):
        MAKEORG = "makeorg", _("Make.org open-data CSV")
        POLIS = "polis", _("Polis export (ZIP of its CSV files)")
        CSV = "csv", _("Generic CSV of open answers")

    class Status(models.TextChoices):
        PENDING = "pending", _("Waiting")
        RUNNING = "running", _("Running")
        DONE = "done", _("Done")
        FAILED = "failed", _("Failed")

    ACTIVE_STATUSES = (Status.PENDING, Status.RUNNING)

    consultation = models.ForeignKey(
        Consultation,
        on_delete=models.CASCADE,
        related_name="import_jobs",
        verbose_name=_("consultation"),
    )
    kind = models.CharField(_("format"), max_length=16, choices=Kind.choices)
    file = models.FileField(_("file"), upload_to="imports/%Y/%m/", max_length=255)
    original_name = models.CharField(_("file name"), max_length=255)
    size = models.PositiveBigIntegerField(_("size (bytes)"), default=0)
    sha256 = models.CharField(_("SHA-256"), max_length=64)
    options = models.JSONField(_("options"), default=dict, blank=True)
    status = models.CharField(
        _("status"), max_length=16, choices=Status.choices, default=Status.PENDING, db_index=True
    )
    rows_total = models.PositiveIntegerField(_("rows in the file"), default=0)
    rows_done = models.PositiveIntegerField(_("rows read"), default=0)
    rows_skipped = models.PositiveIntegerField(_("rows skipped"), default=0)
    created_count = models.PositiveIntegerField(_("proposals created"), default=0)
    existing_count = models.PositiveIntegerField(_("proposals already there"), default=0)
    updated_count = models.PositiveIntegerField(_("proposals updated"), default=0)
    details = models.JSONField(_("other counts"), default=dict, blank=True)
    errors = models.JSONField(_("first skipped rows"), default=list, blank=True)
    error = models.TextField(_("error"), blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        verbose_name=_("uploaded by"),
    )
    created_at = models.DateTimeField(_("created"), auto_now_add=True)
    started_at = models.DateTimeField(_("started"), null=True, blank=True)
    finished_at = models.DateTimeField(_("finished"), null=True, blank=True)

    class Meta:
        verbose_name = _("import job")
        verbose_name_plural = _("import jobs")
        ordering = ["-created_at"]
        constraints = [
            # The same file uploaded twice at once (a double click) is imported once.
            models.UniqueConstraint(
                fields=["consultation", "sha256"],
                condition=Q(status__in=["pending", "running"]),
                name="import_job_one_active_per_file",
            ),
        ]

    def __str__(self):
        return f"{self.original_name} → {self.consultation_id} ({self.status})"

    @property
    def is_active(self):
        return self.status in self.ACTIVE_STATUSES

    @property
    def progress_percent(self):
        if self.status == self.Status.DONE:
            return 100
        if not self.rows_total:
            return 0
        return min(100, round(100 * self.rows_done / self.rows_total))


class VoteBurstFlag(models.Model):
    """Too many votes in a short window from one participant or one (hashed) IP, for moderators.

    Written by ``consultations.abuse.vote_burst_record``; one row per source and window. While a
    participant has an open or confirmed flag, their new votes are untrusted (counted in the
    displayed totals, never in the scores); confirming also distrusts the votes of the burst.
    """

    class Scope(models.TextChoices):
        PARTICIPANT = "participant", _("Participant")
        IP = "ip", _("IP address (hashed)")

    class Status(models.TextChoices):
        OPEN = "open", _("To review")
        CONFIRMED = "confirmed", _("Confirmed: votes distrusted")
        DISMISSED = "dismissed", _("Dismissed")

    scope = models.CharField(_("source"), max_length=16, choices=Scope.choices)
    source_key = models.CharField(
        _("source key"), max_length=64, help_text=_("The participant's id or the hashed IP.")
    )
    participant = models.ForeignKey(
        Participant,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="burst_flags",
        verbose_name=_("participant"),
    )
    ip_hash = models.CharField(_("hashed IP"), max_length=64, blank=True)
    consultation = models.ForeignKey(
        Consultation,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        verbose_name=_("consultation"),
    )
    window_start = models.DateTimeField(_("window start"))
    window_seconds = models.PositiveIntegerField(_("window (seconds)"))
    threshold = models.PositiveIntegerField(_("votes allowed in the window"))
    count = models.PositiveIntegerField(_("votes in the window"))
    status = models.CharField(
        _("status"), max_length=16, choices=Status.choices, default=Status.OPEN
    )
    votes_distrusted = models.PositiveIntegerField(_("votes distrusted"), default=0)
    reviewed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        verbose_name=_("reviewed by"),
    )
    reviewed_at = models.DateTimeField(_("reviewed"), null=True, blank=True)
    created_at = models.DateTimeField(_("flagged"), default=timezone.now, db_index=True)

    class Meta:
        verbose_name = _("vote burst")
        verbose_name_plural = _("vote bursts")
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["scope", "source_key", "window_start"], name="burst_flag_once_per_window"
            ),
        ]
        indexes = [
            models.Index(
                fields=["participant"],
                condition=~Q(status="dismissed"),
                name="burst_flag_active_idx",
            ),
        ]

    def __str__(self):
        return f"{self.get_scope_display()} {self.source_key[:12]}: {self.count}/{self.window_seconds}s"


# Results alerts (consultations/alerts.py) ---------------------------------------------------------


class ResultsAlert(models.Model):
    """A citizen who asked to be emailed when a consultation's results are published: once for
    its first results, once more for the final ones (published after it closed)."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="results_alerts",
        verbose_name=_("user"),
        db_index=False,  # results_alert_unique (user, consultation) covers it
    )
    consultation = models.ForeignKey(
        Consultation,
        on_delete=models.CASCADE,
        related_name="results_alerts",
        verbose_name=_("consultation"),
    )
    created_at = models.DateTimeField(_("asked"), auto_now_add=True)
    first_sent_at = models.DateTimeField(_("first results emailed"), null=True, blank=True)
    final_sent_at = models.DateTimeField(_("final results emailed"), null=True, blank=True)

    class Meta:
        verbose_name = _("results alert")
        verbose_name_plural = _("results alerts")
        constraints = [
            models.UniqueConstraint(fields=["user", "consultation"], name="results_alert_unique"),
        ]

    def __str__(self):
        return f"{self.user_id} → {self.consultation_id}"
