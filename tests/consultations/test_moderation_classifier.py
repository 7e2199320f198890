"""The local classifier that pre-sorts likely refusals: off with a message when there are too few
decisions, trained by a command or the admin, shown in the queue with its reason; a human decides."""

import csv
import io
import itertools

import pytest
from django.contrib.auth.models import Permission
from django.core.management import call_command
from django.urls import reverse

from accounts.models import AuditEntry
from consultations.classifier import (
    ClassifierUnavailable,
    classifier_latest,
    classifier_train,
)
from consultations.models import (
    ModerationClassifier,
    ModeratorAssignment,
    Proposal,
    ProposalPrediction,
)
from consultations.moderation import moderation_next

from ..factories import ConsultationFactory, ProposalFactory, UserFactory

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("english")]

SUBJECTS = [
    "les bibliothèques",
    "les musées",
    "les piscines",
    "les parcs",
    "les écoles",
    "les théâtres",
]
ACTIONS = [
    "ouvrir {} le dimanche",
    "rendre {} gratuits pour les jeunes",
    "rénover {} des petites villes",
    "mieux financer {} publics",
    "adapter {} aux personnes handicapées",
    "créer plus de places dans {}",
    "ouvrir {} le soir après le travail",
]
ADS = [
    "Achetez nos montres en promo sur www.bonnes-affaires{}.com",
    "Promo -50% code PROMO{} sur notre boutique en ligne",
    "Gagnez de l'argent facilement, cliquez sur www.gain{}.net",
    "Meilleur prix garanti, livraison gratuite, commandez sur shop{}.fr",
]


def moderator(consultation):
    user = UserFactory(is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="moderate_proposal"))
    ModeratorAssignment.objects.create(moderator=user, consultation=consultation)
    return user


def decided(consultation, *, accepted=40, ads=20):
    texts = [f"Il faut {a.format(s)}" for a, s in itertools.product(ACTIONS, SUBJECTS)][:accepted]
    for text in texts:
        ProposalFactory(consultation=consultation, content=text, status="accepted")
    for i in range(ads):
        ProposalFactory(
            consultation=consultation,
            content=ADS[i % len(ADS)].format(i),
            status="refused",
            refusal_reason="advertising",
        )


def test_too_few_decisions_turns_the_classifier_off_with_a_message(client):
    consultation = ConsultationFactory()
    decided(consultation, accepted=6, ads=2)
    with pytest.raises(ClassifierUnavailable, match="Too few decisions"):
        classifier_train(consultation=consultation)
    assert not ModerationClassifier.objects.exists()
    out = io.StringIO()
    call_command("moderation_classifier_train", consultation.slug, stdout=out)
    assert "skipped" in out.getvalue() and "0 classifier(s) trained" in out.getvalue()
    ProposalFactory(consultation=consultation, status="pending")
    client.force_login(moderator(consultation))
    html = client.get("/moderation/", {"c": consultation.slug}).content.decode()
    assert "Classifier off. Too few decisions" in html
    assert 'data-testid="prediction"' not in html  # the queue works without it


def test_trained_classifier_flags_likely_refusals_with_a_reason(client):
    consultation = ConsultationFactory()
    decided(consultation)
    ad = ProposalFactory(
        consultation=consultation,
        status="pending",
        content="Achetez nos lunettes en promo sur www.lunettes-pas-cheres.com",
    )
    civic = ProposalFactory(
        consultation=consultation,
        status="pending",
        content="Il faut ouvrir les musées le samedi soir",
    )
    admin = UserFactory(is_staff=True, is_superuser=True)
    classifier = classifier_train(consultation=consultation, actor=admin)
    assert classifier.n_samples == 60 and set(classifier.classes) == {"accept", "advertising"}
    assert "auc" in classifier.metrics and classifier.metrics["class_counts"]["advertising"] == 20
    ad_guess, civic_guess = (ProposalPrediction.objects.get(proposal=p) for p in (ad, civic))
    assert ad_guess.refuse_probability > 0.5 > civic_guess.refuse_probability
    assert ad_guess.reason == "advertising"
    entry = AuditEntry.objects.get(action="moderation_classifier.train")
    assert entry.actor == admin and entry.after["n_samples"] == 60
    # The queue can put likely refusals first; the guess is shown, a human still decides.
    alice = moderator(consultation)
    assert moderation_next(moderator=alice, consultation=consultation, order="refusals") == ad
    client.force_login(alice)
    html = client.get(
        "/moderation/", {"c": consultation.slug, "order": "refusals"}
    ).content.decode()
    assert "likely refusal" in html and "Advertising" in html and "You decide." in html
    ad.refresh_from_db()
    assert ad.status == "pending"
    listing = client.get(reverse("moderation:list"), {"c": consultation.slug, "order": "refusals"})
    rows = listing.content.decode()
    assert rows.index(ad.content) < rows.index(civic.content)


def test_proposals_sent_after_training_are_scored_when_shown(client):
    consultation = ConsultationFactory()
    decided(consultation)
    classifier_train(consultation=consultation)
    late = ProposalFactory(
        consultation=consultation, status="pending", content="Promo code PROMO99 sur shop99.fr"
    )
    assert not ProposalPrediction.objects.filter(proposal=late).exists()
    client.force_login(moderator(consultation))
    html = client.get("/moderation/", {"c": consultation.slug}).content.decode()
    assert late.content in html and 'data-testid="prediction"' in html
    prediction = ProposalPrediction.objects.get(proposal=late)
    assert prediction.classifier == classifier_latest(consultation=consultation)


def test_admin_action_trains_the_classifier(client):
    consultation = ConsultationFactory()
    decided(consultation)
    client.force_login(UserFactory(is_staff=True, is_superuser=True))
    response = client.post(
        reverse("admin:consultations_consultation_changelist"),
        {"action": "train_moderation_classifier", "_selected_action": [consultation.pk]},
        follow=True,
    )
    assert (
        response.status_code == 200
        and "classifier trained on 60 decisions" in response.content.decode()
    )
    assert ModerationClassifier.objects.filter(consultation=consultation).count() == 1


def test_command_needs_a_known_consultation():
    from django.core.management.base import CommandError

    with pytest.raises(CommandError):
        call_command("moderation_classifier_train", "no-such-consultation")
    with pytest.raises(CommandError):
        call_command("moderation_classifier_train")


def test_trained_on_real_polis_moderation_it_beats_chance(data_dir):
    """Polis moderators' own decisions (1 accepted, -1 moderated out) of one conversation."""
    path = data_dir / "polis" / "austria-climate.5twd2jsnkf.2022-08-08" / "comments.csv"
    if not path.exists():
        pytest.skip(f"{path} is absent")
    consultation = ConsultationFactory(language="de")
    rows = [r for r in csv.DictReader(path.open(encoding="utf-8")) if r["moderated"] in ("1", "-1")]
    Proposal.objects.bulk_create(
        [
            Proposal(
                consultation=consultation,
                content=r["comment-body"][:1000],
                status="accepted" if r["moderated"] == "1" else "refused",
                refusal_reason="" if r["moderated"] == "1" else "other",
            )
            for r in rows
        ]
    )
    out = io.StringIO()
    call_command("moderation_classifier_train", consultation.slug, stdout=out)
    classifier = classifier_latest(consultation=consultation)
    assert classifier.n_samples == len(rows)
    assert classifier.metrics["auc"] > 0.5, classifier.metrics
    assert "held-out AUC" in out.getvalue()


def test_nightly_retrain_trains_once_per_batch_of_new_decisions():
    from django.conf import settings
    from django.utils import timezone

    from consultations.tasks import moderation_classifiers_retrain

    consultation = ConsultationFactory()
    assert consultation.is_open
    decided(consultation)
    Proposal.objects.filter(consultation=consultation).update(moderated_at=timezone.now())
    sparse = ConsultationFactory()  # open, with too few decisions
    first = moderation_classifiers_retrain.delay().get()
    assert first["trained"] == [consultation.slug]
    assert "decisions" in first["skipped"][sparse.slug]
    # A repeated (or retried) run finds nothing new: nothing is trained twice.
    again = moderation_classifiers_retrain.delay().get()
    assert again["trained"] == [] and consultation.slug in again["skipped"]
    assert ModerationClassifier.objects.filter(consultation=consultation).count() == 1
    ProposalFactory(
        consultation=consultation,
        content="Il faut encore plus de bancs publics",
        status="accepted",
        moderated_at=timezone.now(),
    )
    assert moderation_classifiers_retrain.delay().get()["trained"] == [consultation.slug]
    assert ModerationClassifier.objects.filter(consultation=consultation).count() == 2
    entry = settings.CELERY_BEAT_SCHEDULE["moderation-classifiers-retrain"]
    assert entry["task"] == moderation_classifiers_retrain.name
