"""The audit log of staff actions.

Call `audit_record` from every service or view that lets staff (moderators, engine operators, admins) change
something, inside the same transaction as the change, so that an action and its log entry land together.
`model_snapshot` gives the JSON "before"/"after" of a model instance.
"""

from django.core.serializers.json import DjangoJSONEncoder
from django.db import models

from .models import AuditEntry


def model_snapshot(instance, *, fields=None):
    """A JSON-serialisable dict of the concrete fields of `instance` (foreign keys as ids)."""
    if instance is None:
        return None
    data = {}
    for field in instance._meta.concrete_fields:
        if fields is not None and field.name not in fields:
            continue
        if isinstance(field, models.FileField):
            value = getattr(instance, field.attname)
            data[field.name] = str(value) if value else ""
            continue
        if isinstance(field, models.BinaryField):  # vectors, pickled models: their size only
            value = field.value_from_object(instance)
            data[field.name] = None if value is None else f"{len(bytes(value))} bytes"
            continue
        data[field.attname if field.is_relation else field.name] = field.value_from_object(instance)
    return _jsonable(data)


def _jsonable(value):
    import json

    return json.loads(json.dumps(value, cls=DjangoJSONEncoder))


def audit_record(
    *,
    actor,
    action,
    target=None,
    before=None,
    after=None,
    note="",
    target_type="",
    target_id="",
    target_label=None,
    actor_label=None,
):
    """Write one audit entry. `actor` is a User (or None for the system), `action` a short dotted verb
    such as "proposal.accept", `target` the model instance acted on. `target_type` names the kind of
    object when there is no single target (a bulk action on "consultations.proposal");
    `target_label` replaces `str(target)` and `actor_label` the actor's email where those would be
    personal data (an erased account: docs/privacy.md)."""
    entry = AuditEntry(
        actor=actor if getattr(actor, "pk", None) else None,
        actor_label=(getattr(actor, "email", "") or "")[:254] if actor is not None else "system",
        action=action[:80],
        before=_jsonable(before) if before is not None else None,
        after=_jsonable(after) if after is not None else None,
        note=note,
    )
    if target is not None:
        entry.target_type = target._meta.label_lower
        entry.target_id = str(target.pk)
        entry.target_label = str(target)[:255]
    elif target_type:
        entry.target_type = target_type[:100]
        entry.target_id = str(target_id)[:64]
    if target_label is not None:
        entry.target_label = str(target_label)[:255]
    if actor_label is not None:
        entry.actor_label = str(actor_label)[:254]
    entry.save()
    return entry
