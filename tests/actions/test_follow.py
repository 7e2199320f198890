import re
from decimal import Decimal

import pytest
from django.core import mail
from django.urls import reverse
from django.utils import timezone

from actions import services
from actions.models import Action, ActionPlan, Follow
from actions.tasks import notify_followers
from consultations.services import participant_for_user, vote_cast

from ..factories import ProposalFactory, UserFactory
from .factories import ActionFactory, ObjectiveFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def action():
    action = ActionFactory(title="Ouvrir les musées le soir")
    action.proposals.add(ProposalFactory())
    ObjectiveFactory(action=action, baseline=Decimal(0), target=Decimal(10))
    return action


def voter_of(action):
    user = UserFactory()
    vote_cast(
        participant=participant_for_user(user=user), proposal=action.proposals.get(), key="agree"
    )
    return user


def test_a_voter_can_follow_once(client, action):
    user = voter_of(action)
    client.force_login(user)
    html = client.get(action.get_absolute_url()).content.decode()
    assert reverse("actions:follow", args=[action.pk]) in html
    for _ in range(2):
        response = client.post(reverse("actions:follow", args=[action.pk]))
        assert response.status_code == 302
    assert Follow.objects.filter(user=user, action=action).count() == 1
    html = client.get(action.get_absolute_url()).content.decode()
    assert reverse("actions:unfollow", args=[action.pk]) in html


def test_someone_who_did_not_vote_cannot_follow(client, action):
    client.force_login(UserFactory())
    html = client.get(action.get_absolute_url()).content.decode()
    assert reverse("actions:follow", args=[action.pk]) not in html
    client.post(reverse("actions:follow", args=[action.pk]))
    assert not Follow.objects.exists()


def test_anonymous_follow_goes_to_login(client, action):
    response = client.post(reverse("actions:follow", args=[action.pk]))
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]
    assert not Follow.objects.exists()


def test_draft_action_cannot_be_followed(client, action):
    user = voter_of(action)
    Action.objects.filter(pk=action.pk).update(status=Action.Status.DRAFT)
    client.force_login(user)
    assert client.post(reverse("actions:follow", args=[action.pk])).status_code == 404
    assert not Follow.objects.exists()


def test_followers_are_emailed_when_a_measurement_is_posted(
    action, django_capture_on_commit_callbacks
):
    follower = voter_of(action)
    services.follow_create(action=action, user=follower)
    voter_of(action)  # voted, but does not follow
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        services.measurement_create(
            objective=action.objectives.get(),
            user=None,
            value=Decimal(4),
            measured_on=timezone.localdate(),
        )
    assert len(callbacks) == 1
    assert len(mail.outbox) == 1
    email = mail.outbox[0]
    assert email.to == [follower.email]
    assert "Ouvrir les musées le soir" in email.subject
    assert "40 %" in email.body
    assert action.get_absolute_url() in email.body
    unfollow = re.search(r"https?://\S+/actions/unfollow/\S+/", email.body).group(0)
    assert email.extra_headers["List-Unsubscribe"] == f"<{unfollow}>"


def test_followers_are_emailed_when_the_status_changes_only(
    action, django_capture_on_commit_callbacks
):
    services.follow_create(action=action, user=voter_of(action))
    with django_capture_on_commit_callbacks(execute=True):
        services.action_status_update(action=action, user=None, status="in_progress", note="Rien")
    assert mail.outbox == []  # same status: a note only
    with django_capture_on_commit_callbacks(execute=True):
        services.action_status_update(action=action, user=None, status="done")
    assert len(mail.outbox) == 1
    assert action.title in mail.outbox[0].subject


def test_nothing_is_sent_for_an_action_that_is_not_public(action):
    services.follow_create(action=action, user=voter_of(action))
    ActionPlan.objects.filter(pk=action.plan_id).update(status=ActionPlan.Status.DRAFT)
    assert notify_followers.delay(action.pk, "measurement").get() == 0
    assert mail.outbox == []


def test_rolled_back_measurement_sends_nothing(action, django_capture_on_commit_callbacks):
    services.follow_create(action=action, user=voter_of(action))
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        services.measurement_create(
            objective=action.objectives.get(),
            user=None,
            value=Decimal(4),
            measured_on=timezone.localdate(),
        )
    # The task is only queued for after the commit (a rollback would drop it).
    assert len(callbacks) == 1 and mail.outbox == []


def test_unknown_event_is_refused(action):
    with pytest.raises(ValueError):
        notify_followers.delay(action.pk, "nonsense").get()


def test_unfollow_link_asks_then_unfollows_without_login(client, action):
    user = voter_of(action)
    services.follow_create(action=action, user=user)
    token = services.unfollow_token(action_id=action.pk, user_id=user.pk)
    url = reverse("actions:unfollow_email", args=[token])
    response = client.get(url)  # a mail scanner opening the link changes nothing
    assert response.status_code == 200 and "<form" in response.content.decode()
    assert Follow.objects.count() == 1
    assert client.post(url).status_code == 200
    assert not Follow.objects.exists()


def test_tampered_unfollow_token_is_404(client, action):
    user = voter_of(action)
    services.follow_create(action=action, user=user)
    token = services.unfollow_token(action_id=action.pk, user_id=user.pk)
    assert (
        client.post(reverse("actions:unfollow_email", args=[token[:-2] + "xx"])).status_code == 404
    )
    assert Follow.objects.count() == 1


def test_logged_in_unfollow_button(client, action):
    user = voter_of(action)
    services.follow_create(action=action, user=user)
    client.force_login(user)
    assert client.post(reverse("actions:unfollow", args=[action.pk])).status_code == 302
    assert not Follow.objects.exists()
