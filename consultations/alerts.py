"""Results alerts: citizens who asked to be emailed when a consultation's results are published.

An alert sends two emails at most: when the consultation's first results are published, and when
its final results are (a run published after it closed). ``alerts_send`` runs after each
publication (``consultations.results_alerts_send``, queued on commit by the engine); what each
alert was sent is kept on it, so a retried or duplicated task emails nobody twice, and the
nightly run publishing again emails nobody.
"""

from __future__ import annotations

import logging

from django.conf import settings
from django.core.mail import EmailMessage, get_connection
from django.db import IntegrityError, transaction
from django.db.models import Count, Q
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone, translation
from django.utils.translation import gettext as _

from causes.models import Cause
from config.optout import optout_token, optout_token_read
from consensus.models import EngineRun
from consensus.selectors import consultation_highlights

from .models import Consultation, ResultsAlert

logger = logging.getLogger(__name__)

STOP_SALT = "concorde.results-alert.stop"
SEND_BATCH = 100

FIRST, FINAL = "first", "final"


def _published(consultation: Consultation) -> bool:
    run = consultation.current_run if consultation.current_run_id else None
    return run is not None and run.status == EngineRun.Status.DONE


def alert_create(*, consultation: Consultation, user) -> ResultsAlert:
    """Ask for the results of ``consultation`` by email (again: nothing changes). Asked once
    results are out (the page shows them), it waits for the final results only."""
    first_sent = timezone.now() if _published(consultation) else None
    try:
        with transaction.atomic():
            alert, _created = ResultsAlert.objects.get_or_create(
                consultation=consultation, user=user, defaults={"first_sent_at": first_sent}
            )
    except IntegrityError:  # a double click raced us to the unique constraint
        alert = ResultsAlert.objects.get(consultation=consultation, user=user)
    return alert


def alert_delete(*, consultation_id: int, user_id: int) -> bool:
    deleted, _rows = ResultsAlert.objects.filter(
        consultation_id=consultation_id, user_id=user_id
    ).delete()
    return bool(deleted)


def alert_exists(*, consultation: Consultation, user) -> bool:
    if not user.is_authenticated:
        return False
    return ResultsAlert.objects.filter(consultation=consultation, user=user).exists()


def alert_box(*, consultation: Consultation, user) -> dict:
    """The context of the "email me the results" box (``_results_alert.html``): whether to show
    it (``results_alert_box``: not once the final results are out, nor once results are out
    for a consultation that never closes), whether results are out already
    (``results_published``: then only the final ones are to come), and whether ``user`` asked."""
    published = _published(consultation)
    show = not published or (consultation.ends_at is not None and _kind(consultation) != FINAL)
    return {
        "results_alert_box": show,
        "results_published": published,
        "results_alert": show and alert_exists(consultation=consultation, user=user),
    }


def alerts_waiting(*, consultation: Consultation) -> dict:
    """For staff: how many alerts wait for the first results, and for the final ones."""
    return ResultsAlert.objects.filter(consultation=consultation).aggregate(
        first=Count("pk", filter=Q(first_sent_at__isnull=True)),
        final=Count("pk", filter=Q(final_sent_at__isnull=True)),
    )


def stop_token(*, consultation_id: int, user_id: int) -> str:
    """The signed opt-out token of the emails' link (works without logging in)."""
    return optout_token(salt=STOP_SALT, key="c", target_id=consultation_id, user_id=user_id)


def stop_token_read(token: str) -> tuple[int, int] | None:
    """(consultation_id, user_id) from a token, or None when it was tampered with."""
    return optout_token_read(salt=STOP_SALT, key="c", token=token)


def _kind(consultation: Consultation) -> str:
    """Final results: published after the consultation closed; first results otherwise."""
    run = consultation.current_run
    closed = consultation.ends_at is not None and consultation.ends_at <= timezone.now()
    if closed and run.published_at is not None and run.published_at >= consultation.ends_at:
        return FINAL
    return FIRST


def alerts_send(*, consultation_id: int) -> int:
    """Email the alerts of ``consultation_id`` that its results are published; returns how many.

    Nothing without a published run, for a cause the public cannot see (a draft), or to someone
    who may no longer see a private consultation. A batch of alerts is locked (SKIP LOCKED), sent,
    then marked in one transaction: two tasks at once share the alerts out, and a batch whose
    sending failed is left unmarked for the task's retry.
    """
    from actions.services import site_url  # the site's base URL, as in the actions' emails

    consultation = (
        Consultation.objects.select_related("cause", "current_run")
        .filter(pk=consultation_id, current_run__status=EngineRun.Status.DONE)
        .first()
    )
    if consultation is None or consultation.cause.status not in (
        Cause.Status.ACTIVE,
        Cause.Status.ARCHIVED,
    ):
        return 0
    kind = _kind(consultation)
    sent_field = "final_sent_at" if kind == FINAL else "first_sent_at"
    pending = ResultsAlert.objects.filter(
        consultation=consultation, **{f"{sent_field}__isnull": True}, user__is_active=True
    ).exclude(user__email="")
    if consultation.cause.kind == Cause.Kind.PRIVATE_CONSULTATION:
        pending = pending.filter(user__in=consultation.cause.members.all())
    base = site_url()
    results_url = base + reverse("consensus:results", kwargs={"slug": consultation.slug})
    highlights = consultation_highlights(consultation=consultation)
    if highlights:  # what came out, in the email itself: each idea with its page's address
        highlights["ideas"] = [
            (
                idea.label,
                base
                + reverse(
                    "consensus:results_idea",
                    kwargs={"slug": consultation.slug, "number": idea.number},
                ),
            )
            for idea in highlights["ideas"]
        ]
    sent = 0
    # In the consultation's language when the site speaks it, else in the site's own.
    language = consultation.language
    if language not in dict(settings.LANGUAGES):
        language = settings.LANGUAGE_CODE
    with translation.override(language):
        subject = (
            _("Final results: “%(question)s”")
            if kind == FINAL
            else _("The first results are out: “%(question)s”")
        ) % {"question": consultation.question}
        while True:
            with transaction.atomic():
                batch = list(
                    pending.select_related("user")
                    .select_for_update(skip_locked=True, of=("self",))
                    .order_by("pk")[:SEND_BATCH]
                )
                if not batch:
                    break
                messages = [
                    _email(alert, consultation, kind, subject, results_url, base, highlights)
                    for alert in batch
                ]
                sent += get_connection().send_messages(messages) or 0
                now, ids = timezone.now(), [alert.pk for alert in batch]
                ResultsAlert.objects.filter(pk__in=ids).update(**{sent_field: now})
                # the final email stands for the first one too, if that never went
                ResultsAlert.objects.filter(pk__in=ids, first_sent_at__isnull=True).update(
                    first_sent_at=now
                )
    logger.info("consultation %s: %s results email(s) sent (%s)", consultation_id, sent, kind)
    return sent


def _email(alert, consultation, kind, subject, results_url, base, highlights) -> EmailMessage:
    token = stop_token(consultation_id=consultation.pk, user_id=alert.user_id)
    stop_url = base + reverse("consultations:results_alert_stop", kwargs={"token": token})
    body = render_to_string(
        "consultations/email/results_published.txt",
        {
            "consultation": consultation,
            "final": kind == FINAL,
            "results_url": results_url,
            "stop_url": stop_url,
            "highlights": highlights,
        },
    )
    return EmailMessage(
        subject,
        body,
        to=[alert.user.email],
        headers={
            "List-Unsubscribe": f"<{stop_url}>",
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        },
    )
