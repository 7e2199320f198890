"""A local text classifier that pre-sorts likely refusals in the moderation queue.

TF-IDF over character n-grams (2 to 5, within words: robust to spelling and to any language)
feeding a multinomial logistic regression, trained on one consultation's own past decisions:
the classes are "accept" and each refusal reason (reasons with too few examples fold into
"other"). For a pending proposal, P(refusal) = 1 - P(accept) and the likely reason is the most
probable refusal class. Nothing leaves the machine (scikit-learn only), and a human always
decides: the queue only shows the guess and can put likely refusals first.

``classifier_train`` refuses (``ClassifierUnavailable``, with a message for the staff) when the
consultation has too few decisions; the queue then says the classifier is off.
Train with ``manage.py moderation_classifier_train`` or the consultation admin action.
"""

from __future__ import annotations

import pickle
import threading
from collections import Counter
from dataclasses import dataclass

import numpy as np
from django.conf import settings
from django.db import transaction
from django.db.models import Count
from django.utils.translation import gettext as _

from accounts.audit import audit_record

from .models import Consultation, ModerationClassifier, Proposal, ProposalPrediction

ACCEPT = "accept"
DEFAULT_MIN_DECISIONS = 30
DEFAULT_MIN_PER_CLASS = 5  # accepted and refused decisions each
MIN_PER_REASON = 3  # rarer reasons are learnt as "other"
MAX_TRAINING_ROWS = 200_000  # the most recent decisions
PREDICT_BATCH = 2_000


class ClassifierUnavailable(Exception):
    """The classifier cannot be trained or used; the message is safe to show to staff."""


def _min_decisions() -> int:
    return getattr(settings, "CONCORDE_CLASSIFIER_MIN_DECISIONS", DEFAULT_MIN_DECISIONS)


def _min_per_class() -> int:
    return getattr(settings, "CONCORDE_CLASSIFIER_MIN_PER_CLASS", DEFAULT_MIN_PER_CLASS)


# Pure functions (no database) --------------------------------------------------------------


def build_pipeline():
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    return Pipeline(
        [
            (
                "tfidf",
                TfidfVectorizer(
                    analyzer="char_wb",
                    ngram_range=(2, 5),
                    min_df=1,
                    max_features=200_000,
                    sublinear_tf=True,
                    lowercase=True,
                    dtype=np.float32,
                ),
            ),
            ("model", LogisticRegression(max_iter=2000, C=4.0, class_weight="balanced")),
        ]
    )


def fold_rare_reasons(labels: list[str]) -> list[str]:
    """Refusal reasons seen fewer than ``MIN_PER_REASON`` times become "other"."""
    counts = Counter(labels)
    other = Proposal.RefusalReason.OTHER.value
    return [
        label if label == ACCEPT or counts[label] >= MIN_PER_REASON else other for label in labels
    ]


def check_trainable(labels: list[str]) -> None:
    accepted = sum(1 for label in labels if label == ACCEPT)
    refused = len(labels) - accepted
    if len(labels) < _min_decisions() or min(accepted, refused) < _min_per_class():
        raise ClassifierUnavailable(
            _(
                "Too few decisions to learn from: %(total)d (%(accepted)d accepted, "
                "%(refused)d refused); at least %(min)d, with %(per)d accepted and %(per)d refused."
            )
            % {
                "total": len(labels),
                "accepted": accepted,
                "refused": refused,
                "min": _min_decisions(),
                "per": _min_per_class(),
            }
        )


@dataclass(frozen=True)
class Guess:
    refuse_probability: float
    reason: str
    reason_probability: float  # P(reason | refused)


def guesses(pipeline, texts: list[str]) -> list[Guess]:
    """The refusal probability and likely reason of each text."""
    if not texts:
        return []
    classes = list(pipeline.classes_)
    probabilities = pipeline.predict_proba(texts)
    accept_col = classes.index(ACCEPT)
    reason_cols = [i for i, c in enumerate(classes) if c != ACCEPT]
    out = []
    for row in probabilities:
        refuse = float(1.0 - row[accept_col])
        best = max(reason_cols, key=lambda i: row[i])
        out.append(
            Guess(
                refuse_probability=refuse,
                reason=classes[best],
                reason_probability=float(row[best] / refuse) if refuse > 0 else 0.0,
            )
        )
    return out


def evaluate(texts: list[str], labels: list[str], *, seed: int = 0) -> dict:
    """Held-out quality (20 %, stratified on accept/refuse): AUC, precision and recall at 0.5."""
    from sklearn.metrics import precision_score, recall_score, roc_auc_score
    from sklearn.model_selection import train_test_split

    refused = np.array([label != ACCEPT for label in labels])
    try:
        train_idx, test_idx = train_test_split(
            np.arange(len(texts)), test_size=0.2, random_state=seed, stratify=refused
        )
    except ValueError:
        return {}
    train_labels = [labels[i] for i in train_idx]
    if len(set(train_labels)) < 2 or ACCEPT not in train_labels:
        return {}
    pipeline = build_pipeline().fit([texts[i] for i in train_idx], train_labels)
    found = guesses(pipeline, [texts[i] for i in test_idx])
    scores = np.array([g.refuse_probability for g in found])
    truth = refused[test_idx]
    metrics = {
        "test_size": len(test_idx),
        "precision": float(precision_score(truth, scores >= 0.5, zero_division=0)),
        "recall": float(recall_score(truth, scores >= 0.5, zero_division=0)),
    }
    if truth.any() and not truth.all():
        metrics["auc"] = float(roc_auc_score(truth, scores))
    refusals = [k for k, i in enumerate(test_idx) if labels[i] != ACCEPT]
    if refusals:
        hits = sum(1 for k in refusals if found[k].reason == labels[test_idx[k]])
        metrics["reason_accuracy"] = hits / len(refusals)
    return metrics


# Database side -----------------------------------------------------------------------------


def training_data(*, consultation: Consultation) -> tuple[list[str], list[str]]:
    """Texts and labels ("accept" or the refusal reason) of the consultation's decided proposals."""
    rows = (
        Proposal.objects.filter(
            consultation=consultation,
            status__in=[Proposal.Status.ACCEPTED, Proposal.Status.REFUSED],
        )
        .order_by("-pk")
        .values_list("content", "status", "refusal_reason")[:MAX_TRAINING_ROWS]
    )
    texts, labels = [], []
    for content, status, reason in rows.iterator(chunk_size=5_000):
        texts.append(content)
        labels.append(ACCEPT if status == Proposal.Status.ACCEPTED else (reason or "other"))
    return texts, fold_rare_reasons(labels)


@transaction.atomic
def classifier_train(*, consultation: Consultation, actor=None) -> ModerationClassifier:
    """Train a classifier on the consultation's decisions, store it and score its pending proposals.

    Raises ``ClassifierUnavailable`` when there are too few decisions (nothing is written).
    """
    texts, labels = training_data(consultation=consultation)
    check_trainable(labels)
    metrics = evaluate(texts, labels)
    metrics["class_counts"] = dict(Counter(labels))
    pipeline = build_pipeline().fit(texts, labels)
    classifier = ModerationClassifier.objects.create(
        consultation=consultation,
        model=pickle.dumps(pipeline, protocol=pickle.HIGHEST_PROTOCOL),
        classes=[str(c) for c in pipeline.classes_],
        n_samples=len(texts),
        metrics=metrics,
        trained_by=actor if getattr(actor, "pk", None) else None,
    )
    _remember(classifier.pk, pipeline)
    predicted = classifier_predict_pending(classifier=classifier)
    audit_record(
        actor=actor,
        action="moderation_classifier.train",
        target=consultation,
        after={"classifier": classifier.pk, "n_samples": len(texts), "metrics": metrics},
        note=f"{predicted} pending proposals scored",
    )
    return classifier


def classifiers_retrain_open() -> dict:
    """Retrain the classifier of every open consultation decided on since its latest one.

    What the nightly beat task runs. Idempotent: a consultation with no proposal accepted
    or refused after its latest classifier was trained is skipped, so a repeated or
    retried call trains nothing twice. Too few decisions: skipped with the reason.
    Returns ``{"trained": [slug, ...], "skipped": {slug: reason}}``.
    """
    trained: list[str] = []
    skipped: dict[str, str] = {}
    for consultation in Consultation.objects.order_by("pk"):
        if not consultation.is_open:
            continue
        latest = classifier_latest(consultation=consultation)
        decided = Proposal.objects.filter(
            consultation=consultation,
            status__in=[Proposal.Status.ACCEPTED, Proposal.Status.REFUSED],
        )
        if latest is not None and not decided.filter(moderated_at__gt=latest.created_at).exists():
            skipped[consultation.slug] = "no new decision since the latest classifier"
            continue
        try:
            classifier_train(consultation=consultation)
        except ClassifierUnavailable as error:
            skipped[consultation.slug] = str(error)
            continue
        trained.append(consultation.slug)
    return {"trained": trained, "skipped": skipped}


def classifier_latest(*, consultation: Consultation) -> ModerationClassifier | None:
    return (
        ModerationClassifier.objects.filter(consultation=consultation)
        .defer("model")
        .order_by("-created_at", "-pk")
        .first()
    )


_PIPELINES: dict[int, object] = {}
_LOCK = threading.Lock()


def _remember(pk: int, pipeline) -> None:
    with _LOCK:
        if len(_PIPELINES) >= 8:
            _PIPELINES.pop(next(iter(_PIPELINES)))
        _PIPELINES[pk] = pipeline


def classifier_pipeline(classifier: ModerationClassifier):
    """The fitted pipeline, unpickled once per process."""
    with _LOCK:
        pipeline = _PIPELINES.get(classifier.pk)
    if pipeline is None:
        blob = ModerationClassifier.objects.values_list("model", flat=True).get(pk=classifier.pk)
        # The blob is written by ``classifier_train`` only (never uploaded): trusted data.
        pipeline = pickle.loads(bytes(blob))  # noqa: S301
        _remember(classifier.pk, pipeline)
    return pipeline


def classifier_predict(*, classifier: ModerationClassifier, proposals) -> list[ProposalPrediction]:
    """Score these proposals with the classifier and upsert their predictions."""
    proposals = list(proposals)
    if not proposals:
        return []
    found = guesses(classifier_pipeline(classifier), [p.content for p in proposals])
    rows = [
        ProposalPrediction(
            proposal=p,
            classifier=classifier,
            refuse_probability=g.refuse_probability,
            reason=g.reason if g.reason in Proposal.RefusalReason.values else "",
            reason_probability=g.reason_probability,
        )
        for p, g in zip(proposals, found, strict=True)
    ]
    ProposalPrediction.objects.bulk_create(
        rows,
        update_conflicts=True,
        unique_fields=["proposal"],
        update_fields=[
            "classifier",
            "refuse_probability",
            "reason",
            "reason_probability",
            "created_at",
        ],
    )
    return rows


def classifier_predict_pending(*, classifier: ModerationClassifier) -> int:
    """Score every pending proposal of the classifier's consultation, in batches. Returns the count."""
    pending = Proposal.objects.filter(
        consultation_id=classifier.consultation_id, status=Proposal.Status.PENDING
    ).order_by("pk")
    done, last = 0, 0
    while True:
        batch = list(pending.filter(pk__gt=last).only("pk", "content")[:PREDICT_BATCH])
        if not batch:
            return done
        classifier_predict(classifier=classifier, proposals=batch)
        done += len(batch)
        last = batch[-1].pk


def classifier_predict_missing(*, proposals) -> None:
    """Score the shown proposals that have no prediction from their consultation's latest classifier.

    Called by the moderation pages for what they are about to show, so proposals submitted after
    the last training still get their guess. Sets ``proposal.prediction`` on each.
    """
    latest: dict[int, ModerationClassifier | None] = {}
    todo: dict[int, list[Proposal]] = {}
    for proposal in proposals:
        cid = proposal.consultation_id
        if cid not in latest:
            latest[cid] = classifier_latest(consultation=proposal.consultation)
        classifier = latest[cid]
        if classifier is None:
            continue
        try:
            current = proposal.prediction
        except ProposalPrediction.DoesNotExist:
            current = None
        if current is None or current.classifier_id != classifier.pk:
            todo.setdefault(cid, []).append(proposal)
    for cid, batch in todo.items():
        for proposal, row in zip(
            batch, classifier_predict(classifier=latest[cid], proposals=batch), strict=True
        ):
            proposal.prediction = row


def classifier_status(*, consultation: Consultation | None) -> dict:
    """What the queue says about the classifier of the filtered consultation."""
    if consultation is None:
        return {"enabled": False, "message": ""}  # several consultations: no single classifier
    classifier = classifier_latest(consultation=consultation)
    if classifier is None:
        counts = dict(
            Proposal.objects.filter(
                consultation=consultation,
                status__in=[Proposal.Status.ACCEPTED, Proposal.Status.REFUSED],
            )
            .values_list("status")
            .annotate(n=Count("pk"))
            .order_by()
        )
        labels = [ACCEPT] * counts.get(Proposal.Status.ACCEPTED, 0) + ["other"] * counts.get(
            Proposal.Status.REFUSED, 0
        )
        try:
            check_trainable(labels)
        except ClassifierUnavailable as error:
            return {"enabled": False, "message": _("Classifier off. %(why)s") % {"why": error}}
        return {
            "enabled": False,
            "message": _("Classifier not trained yet: an administrator can train it."),
        }
    return {"enabled": True, "classifier": classifier, "message": ""}
