"""Moderation: the locked queue, decisions, e-mails to authors, and who may moderate.

Moderators here are assigned to every consultation the tests make (``moderator()``); the
per-consultation scope has its own tests in test_moderation_scope.py.
"""

from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission
from django.core import mail
from django.db import connection
from django.urls import reverse
from django.utils import timezone

from consultations.models import ModeratorAssignment, Proposal
from consultations.moderation import ModerationError, moderation_decide, moderation_next

from ..factories import ConsultationFactory, ProposalFactory, UserFactory

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("english")]


QUEUE = "/moderation/"


@pytest.fixture(autouse=True)
def _moderators_see_every_consultation(db):
    """Assign every moderator of these tests to every consultation, whenever either is made."""
    from django.db.models.signals import post_save

    from consultations.models import Consultation

    def assign(sender, instance, created, **kwargs):
        if created:
            for user in MODERATORS:
                ModeratorAssignment.objects.get_or_create(moderator=user, consultation=instance)

    post_save.connect(assign, sender=Consultation, dispatch_uid="test-moderation-assign")
    yield
    post_save.disconnect(sender=Consultation, dispatch_uid="test-moderation-assign")
    MODERATORS.clear()


MODERATORS = []


def moderator(**kwargs):
    from consultations.models import Consultation

    user = UserFactory(is_staff=True, **kwargs)
    user.user_permissions.add(Permission.objects.get(codename="moderate_proposal"))
    MODERATORS.append(user)
    ModeratorAssignment.objects.bulk_create(
        [ModeratorAssignment(moderator=user, consultation=c) for c in Consultation.objects.all()]
    )
    return user


def pending(consultation=None, minutes_ago=0, **kwargs):
    kwargs.setdefault("author", UserFactory(display_name="Noé"))
    return ProposalFactory(
        status="pending",
        created_at=timezone.now() - timedelta(minutes=minutes_ago),
        **({"consultation": consultation} if consultation else {}),
        **kwargs,
    )


# The queue


def test_next_is_the_oldest_pending_and_locks_it():
    consultation = ConsultationFactory()
    newer = pending(consultation, minutes_ago=5)
    older = pending(consultation, minutes_ago=50)
    ProposalFactory(
        consultation=consultation, created_at=timezone.now() - timedelta(days=9)
    )  # accepted
    alice = moderator()
    proposal = moderation_next(moderator=alice)
    assert proposal == older
    assert proposal.locked_by == alice and proposal.locked_until > timezone.now()
    assert moderation_next(moderator=alice) == older  # asking again keeps the same one
    assert newer.pk != older.pk


def test_two_moderators_never_get_the_same_proposal():
    consultation = ConsultationFactory()
    first, second = pending(consultation, minutes_ago=20), pending(consultation, minutes_ago=10)
    alice, bob, carol = moderator(), moderator(), moderator()
    assert moderation_next(moderator=alice) == first
    assert moderation_next(moderator=bob) == second
    assert moderation_next(moderator=carol) is None


def test_an_expired_lock_is_taken_over():
    proposal = pending()
    alice, bob = moderator(), moderator()
    moderation_next(moderator=alice)
    Proposal.objects.filter(pk=proposal.pk).update(
        locked_until=timezone.now() - timedelta(seconds=1)
    )
    assert moderation_next(moderator=bob) == proposal


def test_queue_can_be_limited_to_one_consultation():
    a, b = ConsultationFactory(), ConsultationFactory()
    pending(a, minutes_ago=60)
    in_b = pending(b, minutes_ago=1)
    assert moderation_next(moderator=moderator(), consultation=b) == in_b


@pytest.mark.realservices
@pytest.mark.django_db(transaction=True)
def test_parallel_moderators_on_postgres_get_distinct_proposals():
    consultation = ConsultationFactory()
    proposals = [pending(consultation, minutes_ago=100 - i) for i in range(6)]
    moderators = [moderator() for _ in range(8)]

    def take(user):
        try:
            proposal = moderation_next(moderator=user)
            return proposal.pk if proposal else None
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=8) as pool:
        taken = list(pool.map(take, moderators))
    got = [pk for pk in taken if pk is not None]
    assert len(got) == len(set(got)) == 6
    assert set(got) == {p.pk for p in proposals}


# Decisions


def test_accept_releases_the_lock_and_emails_the_author(django_capture_on_commit_callbacks):
    proposal = pending(author=UserFactory(email="noe@example.org", display_name="Noé"))
    alice = moderator()
    moderation_next(moderator=alice)
    with django_capture_on_commit_callbacks(execute=True):
        moderation_decide(
            moderator=alice, proposal=proposal, decision="accept", base_url="https://concorde.test"
        )
    proposal.refresh_from_db()
    assert proposal.status == "accepted" and proposal.moderated_by == alice
    assert proposal.locked_by is None and proposal.locked_until is None
    (email,) = mail.outbox
    assert email.to == ["noe@example.org"]
    assert proposal.content in email.body
    assert f"https://concorde.test{proposal.get_absolute_url()}" in email.body


def test_refuse_needs_a_reason_and_emails_it(django_capture_on_commit_callbacks):
    proposal = pending()
    alice = moderator()
    for reason in ("", "bad-reason"):
        with pytest.raises(ModerationError):
            moderation_decide(moderator=alice, proposal=proposal, decision="refuse", reason=reason)
    proposal.refresh_from_db()
    assert proposal.status == "pending"
    with django_capture_on_commit_callbacks(execute=True):
        moderation_decide(moderator=alice, proposal=proposal, decision="refuse", reason="off_topic")
    proposal.refresh_from_db()
    assert (proposal.status, proposal.refusal_reason) == ("refused", "off_topic")
    (email,) = mail.outbox
    assert "Off topic" in email.body or "Hors sujet" in email.body


def test_postpone_sends_no_email(django_capture_on_commit_callbacks):
    proposal = pending()
    with django_capture_on_commit_callbacks(execute=True):
        moderation_decide(moderator=moderator(), proposal=proposal, decision="postpone")
    proposal.refresh_from_db()
    assert proposal.status == "postponed" and not mail.outbox


def test_decisions_that_break_the_rules_are_refused():
    alice, bob = moderator(), moderator()
    locked = pending()
    moderation_next(moderator=alice)
    with pytest.raises(ModerationError, match="Another moderator"):
        moderation_decide(moderator=bob, proposal=locked, decision="accept")
    archived = ProposalFactory(status="archived")
    with pytest.raises(ModerationError):
        moderation_decide(moderator=alice, proposal=archived, decision="accept")
    accepted = ProposalFactory()
    with pytest.raises(ModerationError):
        moderation_decide(moderator=alice, proposal=accepted, decision="accept")
    with pytest.raises(ModerationError):
        moderation_decide(moderator=alice, proposal=locked, decision="delete")
    locked.refresh_from_db()
    assert locked.status == "pending"


def test_email_goes_out_in_the_consultations_language(django_capture_on_commit_callbacks):
    english = pending(ConsultationFactory(language="en"))
    with django_capture_on_commit_callbacks(execute=True):
        moderation_decide(moderator=moderator(), proposal=english, decision="accept")
    assert mail.outbox[0].subject == "Your proposal is published"


# Views


def test_anonymous_visitors_are_sent_to_login(client):
    pending()
    response = client.get(QUEUE)
    assert response.status_code == 302 and response["Location"].startswith(reverse("account_login"))
    proposal = Proposal.objects.get()
    response = client.post(reverse("moderation:decide", args=[proposal.pk]), {"decision": "accept"})
    assert response.status_code == 302
    proposal.refresh_from_db()
    assert proposal.status == "pending" and proposal.locked_by is None


def test_citizens_cannot_moderate(client):
    proposal = pending()
    client.force_login(UserFactory())
    assert client.get(QUEUE).status_code == 403
    assert (
        client.post(
            reverse("moderation:decide", args=[proposal.pk]), {"decision": "accept"}
        ).status_code
        == 403
    )
    proposal.refresh_from_db()
    assert proposal.status == "pending"


def test_superusers_moderate_without_the_explicit_permission(client):
    pending()
    client.force_login(UserFactory(is_staff=True, is_superuser=True))
    assert client.get(QUEUE).status_code == 200


def test_queue_page_shows_the_oldest_with_its_lock_and_shortcuts(client):
    old = pending(minutes_ago=30)
    pending(minutes_ago=3)
    alice = moderator()
    client.force_login(alice)
    response = client.get(QUEUE)
    html = response.content.decode()
    assert old.content in html
    assert "Locked for you until" in html
    for key in ("A", "R", "P"):
        assert f'aria-keyshortcuts="{key}"' in html
    assert "2 proposals waiting" in html
    old.refresh_from_db()
    assert old.locked_by == alice


def test_deciding_through_the_page_moves_to_the_next_and_emails(
    client, django_capture_on_commit_callbacks, settings
):
    settings.CONCORDE_SITE_URL = "https://concorde.example"
    first = pending(minutes_ago=30)
    second = pending(minutes_ago=3)
    client.force_login(moderator())
    client.get(QUEUE)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            reverse("moderation:decide", args=[first.pk]), {"decision": "accept"}, follow=True
        )
    html = response.content.decode()
    assert second.content in html and "Accepted" in html
    first.refresh_from_db()
    assert first.status == "accepted" and len(mail.outbox) == 1
    assert f"https://concorde.example{first.get_absolute_url()}" in mail.outbox[0].body
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            reverse("moderation:decide", args=[second.pk]),
            {"decision": "refuse", "reason": "duplicate"},
            HTTP_HX_REQUEST="true",
        )
    html = response.content.decode()
    assert "<html" not in html and 'id="queue"' in html and "Nothing to moderate" in html
    assert "HX-Request" in response["Vary"]
    second.refresh_from_db()
    assert second.refusal_reason == "duplicate" and len(mail.outbox) == 2


@pytest.mark.parametrize(
    "data",
    [{}, {"decision": "delete"}, {"decision": "refuse"}, {"decision": "refuse", "reason": "rude"}],
)
def test_bad_decisions_are_400_and_change_nothing(client, data):
    proposal = pending()
    client.force_login(moderator())
    response = client.post(reverse("moderation:decide", args=[proposal.pk]), data)
    assert response.status_code == 400
    proposal.refresh_from_db()
    assert proposal.status == "pending"
    assert not mail.outbox


def test_deciding_on_a_proposal_locked_by_someone_else_is_400(client):
    proposal = pending()
    moderation_next(moderator=moderator())
    client.force_login(moderator())
    response = client.post(reverse("moderation:decide", args=[proposal.pk]), {"decision": "accept"})
    assert response.status_code == 400 and "Another moderator" in response.content.decode()


def test_unknown_proposal_or_consultation_filter_is_404(client):
    client.force_login(moderator())
    assert (
        client.post(reverse("moderation:decide", args=[999999]), {"decision": "accept"}).status_code
        == 404
    )
    assert client.get(QUEUE, {"c": "nope"}).status_code == 404


def test_two_moderators_through_the_page_see_different_proposals(client):
    first, second = pending(minutes_ago=30), pending(minutes_ago=3)
    client.force_login(moderator())
    assert first.content in client.get(QUEUE).content.decode()
    client.force_login(moderator())
    html = client.get(QUEUE).content.decode()
    assert second.content in html and first.content not in html


def test_the_consultation_filter_counts_only_pending_proposals(client):
    from consultations.moderation import moderation_consultations

    busy, quiet = ConsultationFactory(question="A busy one"), ConsultationFactory(question="B")
    pending(busy)
    pending(busy, minutes_ago=5)
    ProposalFactory.create_batch(3, consultation=busy)  # accepted
    ProposalFactory(consultation=quiet)
    ProposalFactory(consultation=quiet, status="refused", refusal_reason="spam")
    user = moderator()
    counts = {c.question: c.pending for c in moderation_consultations(moderator=user)}
    assert counts == {"A busy one": 2, "B": 0}
    client.force_login(user)
    html = client.get(QUEUE).content.decode()
    assert "A busy one (2)" in html and "B (0)" in html
