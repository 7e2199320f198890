"""Writes for action plans: measurements, status updates, follows and follower emails."""

import datetime
import logging
from decimal import Decimal

from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from django.contrib.sites.models import Site
from django.core.exceptions import ValidationError
from django.core.mail import EmailMessage, get_connection
from django.db import IntegrityError, transaction
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone, translation
from django.utils.translation import gettext as _

from config.optout import optout_token, optout_token_read

from .models import Action, ActionUpdate, Follow, Measurement, Objective
from .selectors import (
    action_followable_by,
    action_prefetch_objectives,
    action_public_list,
    actions_progress,
)

logger = logging.getLogger(__name__)

EVENT_MEASUREMENT = "measurement"
EVENT_STATUS = "status"
EVENTS = (EVENT_MEASUREMENT, EVENT_STATUS)
UNFOLLOW_SALT = "actions.unfollow"


class FollowError(ValueError):
    """A follow that breaks a rule; its message is safe to show."""


def measurement_create(
    *,
    objective: Objective,
    user,
    value: Decimal,
    measured_on: datetime.date,
    evidence_url: str = "",
    evidence_file=None,
    note: str = "",
) -> Measurement:
    """Record a measurement and tell the action's followers once the transaction commits.

    The caller has checked that ``user`` may change the objective's action
    (``selectors.objective_get_for_editor``).
    """
    if measured_on > timezone.localdate():
        raise ValidationError({"measured_on": _("A measurement cannot be dated in the future.")})
    with transaction.atomic():
        measurement = Measurement(
            objective=objective,
            value=value,
            measured_on=measured_on,
            evidence_url=evidence_url,
            note=note,
            entered_by=user,
        )
        if evidence_file:
            measurement.evidence_file = evidence_file
        measurement.full_clean(exclude=["evidence_file"])
        measurement.save()
        from .tasks import notify_followers

        notify_followers.delay_on_commit(objective.action_id, EVENT_MEASUREMENT)
    return measurement


def action_status_update(*, action: Action, user, status: str, note: str = "") -> ActionUpdate:
    """Post a status update (a new status, or the same one with a note).

    Followers are emailed when the status really changes. The action row is locked so that two
    partners posting at once each see the right previous status.
    """
    if status not in Action.Status.values:
        raise ValidationError({"status": _("Unknown status.")})
    with transaction.atomic():
        locked = Action.objects.select_for_update().get(pk=action.pk)
        previous = locked.status
        if status != previous:
            Action.objects.filter(pk=action.pk).update(status=status, updated_at=timezone.now())
        update = ActionUpdate.objects.create(
            action_id=action.pk, status=status, previous_status=previous, note=note, author=user
        )
        if status != previous:
            from .tasks import notify_followers

            notify_followers.delay_on_commit(action.pk, EVENT_STATUS)
    action.status = status
    return update


def follow_create(*, action: Action, user) -> Follow:
    """Follow an action; only citizens who voted on a proposal it builds on may."""
    if not action_followable_by(action=action, user=user):
        raise FollowError(
            _("Only people who voted on a proposal this action builds on can follow it.")
        )
    try:
        with transaction.atomic():
            follow, _created = Follow.objects.get_or_create(action=action, user=user)
    except IntegrityError:  # a double click raced us to the unique constraint
        follow = Follow.objects.get(action=action, user=user)
    return follow


def follow_delete(*, action_id: int, user_id: int) -> bool:
    deleted, _ = Follow.objects.filter(action_id=action_id, user_id=user_id).delete()
    return bool(deleted)


def unfollow_token(*, action_id: int, user_id: int) -> str:
    """A signed token for the opt-out link in emails (works without logging in)."""
    return optout_token(salt=UNFOLLOW_SALT, key="a", target_id=action_id, user_id=user_id)


def unfollow_token_read(token: str) -> tuple[int, int] | None:
    """(action_id, user_id) from a token, or None when it was tampered with."""
    return optout_token_read(salt=UNFOLLOW_SALT, key="a", token=token)


def site_url() -> str:
    """The site's base URL for links in emails."""
    configured = getattr(settings, "CONCORDE_SITE_URL", "")
    if configured:
        return configured.rstrip("/")
    domain = Site.objects.get_current().domain
    scheme = "http" if domain.split(":")[0] in {"localhost", "127.0.0.1"} else "https"
    return f"{scheme}://{domain}"


def followers_notify(*, action_id: int, event: str) -> int:
    """Email every follower of a public action that it moved; returns the number of emails.

    Nothing is sent for an action the public cannot see (a draft, or a draft plan).
    """
    if event not in EVENTS:
        raise ValueError(f"unknown event {event!r}")
    qs = action_public_list(user=AnonymousUser()).filter(pk=action_id)
    action = action_prefetch_objectives(qs).first()
    if action is None:
        return 0
    row = actions_progress([action])[0]
    base = site_url()
    follows = Follow.objects.filter(action_id=action_id).select_related("user").order_by("pk")
    sent = 0
    with translation.override(settings.LANGUAGE_CODE):
        subject = (
            _("New measurement on “%(title)s”")
            if event == EVENT_MEASUREMENT
            else _("“%(title)s” is now %(status)s")
        ) % {"title": action.title, "status": action.get_status_display().lower()}
        connection = get_connection()
        batch = []
        for follow in follows.iterator(chunk_size=500):
            if not follow.user.email or not follow.user.is_active:
                continue
            token = unfollow_token(action_id=action_id, user_id=follow.user_id)
            unfollow_url = base + reverse("actions:unfollow_email", kwargs={"token": token})
            body = render_to_string(
                "actions/email/action_moved.txt",
                {
                    "action": action,
                    "row": row,
                    "event": event,
                    "action_url": base + action.get_absolute_url(),
                    "unfollow_url": unfollow_url,
                },
            )
            batch.append(
                EmailMessage(
                    subject,
                    body,
                    to=[follow.user.email],
                    headers={
                        "List-Unsubscribe": f"<{unfollow_url}>",
                        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
                    },
                    connection=connection,
                )
            )
            if len(batch) >= 100:
                sent += connection.send_messages(batch) or 0
                batch = []
        if batch:
            sent += connection.send_messages(batch) or 0
    logger.info("action %s: %s email(s) sent for %s", action_id, sent, event)
    return sent
