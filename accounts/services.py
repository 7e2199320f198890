"""Personal data: erasing an account (on request or after a long inactivity).

An erased account leaves no personal data behind (docs/privacy.md), but everything it gave to the
consultations stays counted:

- the User row is deleted (with its e-mail addresses, follows and partner accounts, by cascade);
- its Participant is detached from it and stripped of demographics, session key and external id,
  so that its votes, qualifications and exposures (and so every counter, score and opinion group)
  stay exactly as they were, held by an anonymous participant; a participant with no vote left is
  deleted;
- its proposals lose their author (shown as "a citizen"), public name and age;
- the audit log and Django's admin history keep what was done, but not who the person was: entries
  about the account, its participant or its proposals are redacted to ids (docs/privacy.md says why
  a staff member's own actions keep their name).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.contrib.admin.models import LogEntry
from django.contrib.contenttypes.models import ContentType
from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext as _

from consultations.models import Participant, Proposal

from .audit import audit_record
from .models import AuditEntry, User

logger = logging.getLogger(__name__)

# Keys of the audit snapshots that identify a person, per snapshot type.
_PERSONAL_KEYS = {
    "accounts.user": {"email", "first_name", "last_name", "display_name", "age", "password"},
    "consultations.participant": {
        "user_id", "session_key", "external_id", "age_range", "gender", "postal_area",
    },
    "consultations.proposal": {"author_id", "author_name", "author_age"},
}  # fmt: skip
ERASED = "[erased]"


class AccountError(ValueError):
    """An erasure that cannot be done; its message is safe to show."""


@dataclass
class ErasureReport:
    user_id: int
    votes_kept: int = 0
    proposals_anonymised: int = 0
    participant_deleted: bool = False
    audit_entries_redacted: int = 0


def account_erase(*, user: User, actor=None, reason: str = "self") -> ErasureReport:
    """Delete `user` and anonymise what they contributed (see the module docstring).

    `actor` is the staff member erasing the account from the admin (None when the citizen does it
    themselves or for the inactivity task); `reason` is "self", "staff" or "inactive". Runs in one
    transaction with the user row locked, so a concurrent vote either lands before (and is kept,
    anonymised) or fails on the missing user. Writes one "account.erase" audit entry that names the
    account by id only.
    """
    with transaction.atomic():
        user = User.objects.select_for_update().filter(pk=user.pk).first()
        if user is None:
            raise AccountError(_("This account no longer exists."))
        report = ErasureReport(user_id=user.pk)
        summary = {
            "id": user.pk,
            "is_staff": user.is_staff,
            "date_joined": user.date_joined,
            "last_login": user.last_login,
        }

        proposal_ids = list(Proposal.objects.filter(author=user).values_list("pk", flat=True))
        report.proposals_anonymised = Proposal.objects.filter(pk__in=proposal_ids).update(
            author=None, author_name="", author_age=None
        )

        participant = Participant.objects.select_for_update().filter(user=user).first()
        participant_id = participant.pk if participant else None
        if participant is not None:
            report.votes_kept = participant.votes.count()
            if report.votes_kept or participant.exposures.exists():
                # Same row, same votes: counters and engine results are untouched.
                Participant.objects.filter(pk=participant.pk).update(
                    user=None,
                    session_key=None,
                    external_id=None,
                    age_range="",
                    gender="",
                    postal_area="",
                    demographics_asked_at=None,
                )
            else:
                participant.delete()
                report.participant_deleted = True

        report.audit_entries_redacted = _redact_history(
            user=user, participant_id=participant_id, proposal_ids=proposal_ids
        )
        summary.update(votes_kept=report.votes_kept, proposals_anonymised=report.proposals_anonymised)
        user_pk = user.pk
        user.delete()
        audit_record(
            actor=actor,
            action="account.erase",
            target_type="accounts.user",
            target_id=user_pk,
            target_label=f"user #{user_pk}",
            actor_label=None if actor is not None else (
                f"user #{user_pk} (self)" if reason == "self" else "system"
            ),
            before=summary,
            note=reason,
        )
    logger.info("account erased", extra={"user_id": report.user_id, "reason": reason})
    return report


def _redact(snapshot, keys):
    if not isinstance(snapshot, dict):
        return snapshot
    return {k: (None if k.endswith("_id") or v is None else ERASED) if k in keys else v
            for k, v in snapshot.items()}  # fmt: skip


def _redact_history(*, user, participant_id, proposal_ids) -> int:
    """Strip the person from the audit log and the admin history; call inside the erasure's atomic."""
    targets = [("accounts.user", [user.pk], f"user #{user.pk}")]
    if participant_id is not None:
        targets.append(("consultations.participant", [participant_id], f"participant #{participant_id}"))
    if proposal_ids:
        targets.append(("consultations.proposal", proposal_ids, None))

    redacted = 0
    for target_type, ids, label in targets:
        keys = _PERSONAL_KEYS[target_type]
        entries = AuditEntry.objects.filter(
            target_type=target_type, target_id__in=[str(pk) for pk in ids]
        )
        for entry in entries.iterator(chunk_size=500):
            entry.before = _redact(entry.before, keys)
            entry.after = _redact(entry.after, keys)
            if label is not None:
                entry.target_label = label
            entry.save(update_fields=["before", "after", "target_label"])
            redacted += 1
        if label is not None:
            app_label, model = target_type.split(".")
            content_type = ContentType.objects.get_by_natural_key(app_label, model)
            LogEntry.objects.filter(
                content_type=content_type, object_id__in=[str(pk) for pk in ids]
            ).update(object_repr=label)
    if not user.is_staff and not user.is_superuser:
        # A citizen (or a partner account) acting: their name goes. Staff members' actions keep
        # their name (the controller's accountability, docs/privacy.md).
        # (audit_record always sets `actor` with the label, so the indexed FK finds them all.)
        redacted += AuditEntry.objects.filter(actor=user).update(actor_label=f"user #{user.pk}")
    return redacted


def inactive_accounts(*, days: int | None = None, now=None):
    """Accounts with no login (and, if never logged in, no sign-up) for `days` days.

    Staff and superusers are never included: their accounts are closed by hand.
    """
    days = settings.CONCORDE_INACTIVE_ACCOUNT_DAYS if days is None else days
    cutoff = (now or timezone.now()) - timedelta(days=days)
    return User.objects.filter(is_staff=False, is_superuser=False).filter(
        Q(last_login__lt=cutoff) | Q(last_login__isnull=True, date_joined__lt=cutoff)
    )


def inactive_accounts_anonymise(*, days: int | None = None, limit: int | None = None, now=None) -> dict:
    """Erase every inactive account (see `inactive_accounts`); idempotent, safe to run twice at once.

    Each account is erased in its own transaction and re-checked under its row lock, so a user who
    logs in while the task runs keeps their account. `days` <= 0 disables it. Returns counts.
    """
    days = settings.CONCORDE_INACTIVE_ACCOUNT_DAYS if days is None else days
    if days <= 0:
        return {"erased": 0, "votes_kept": 0, "proposals_anonymised": 0, "disabled": True}
    ids = list(inactive_accounts(days=days, now=now).order_by("pk").values_list("pk", flat=True))
    if limit is not None:
        ids = ids[:limit]
    totals = {"erased": 0, "votes_kept": 0, "proposals_anonymised": 0}
    for pk in ids:
        with transaction.atomic():
            user = inactive_accounts(days=days, now=now).select_for_update().filter(pk=pk).first()
            if user is None:  # logged in meanwhile, or erased by a concurrent run
                continue
            report = account_erase(user=user, reason="inactive")
        totals["erased"] += 1
        totals["votes_kept"] += report.votes_kept
        totals["proposals_anonymised"] += report.proposals_anonymised
    return totals
