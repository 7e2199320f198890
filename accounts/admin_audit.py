"""Every change made through the Django admin lands in the audit log (accounts/audit.py).

`AuditedAdminMixin` goes first in the bases of every ModelAdmin of the project::

    class ProposalAdmin(AuditedAdminMixin, admin.ModelAdmin): ...

It records, in the admin's own transaction:

- add and change (``save_model``): the object's state before and after, many-to-many ids included
  (the "after" is completed once ``save_related`` has saved them), and the changed field names;
- delete (``delete_model``) and bulk delete (``delete_queryset``, the "delete selected" action):
  the state before, one entry per object;
- inline rows added, changed or deleted (``save_formset``), as entries on the inline's model;
- admin actions: one entry per run with the selected ids and their states before and after
  (at most `audit_max_objects` of them), unless the action wrote its own audit entries (as the
  services called by most Concorde actions do) or only showed an intermediate page.

Passwords and anonymous session keys are never copied into the log (`audit_exclude_fields`).
"""

from __future__ import annotations

import functools

from django.db import models, router, transaction
from django.http import HttpResponseRedirect

from .audit import audit_record, model_snapshot
from .models import AuditEntry


class AuditedAdminMixin:
    # Credentials never go into the log: a password hash, an anonymous voter's session key.
    audit_exclude_fields: tuple[str, ...] = ("password", "session_key")
    audit_max_objects = 200  # objects snapshotted per bulk action (the ids are always all kept)

    # Snapshots -----------------------------------------------------------------------------

    def audit_snapshot(self, obj):
        return _snapshot(obj, exclude=self.audit_exclude_fields)

    def audit_verb(self, verb: str) -> str:
        return f"{self.model._meta.model_name}.admin_{verb}"

    def _db_state(self, obj):
        if obj is None or obj.pk is None:
            return None
        return type(obj)._default_manager.filter(pk=obj.pk).first()

    # Add / change ----------------------------------------------------------------------------

    def save_model(self, request, obj, form, change):
        before = self.audit_snapshot(self._db_state(obj)) if change else None
        super().save_model(request, obj, form, change)
        entry = audit_record(
            actor=request.user,
            action=self.audit_verb("change" if change else "add"),
            target=obj,
            before=before,
            after=self.audit_snapshot(obj),
            note=_changed_note(form),
        )
        _pending(request)[id(obj)] = entry

    def save_related(self, request, form, formsets, change):
        super().save_related(request, form, formsets, change)
        entry = _pending(request).pop(id(form.instance), None)
        if entry is not None and form.instance.pk is not None:
            after = _jsonable_snapshot(self.audit_snapshot(form.instance))
            if after != entry.after:  # many-to-many fields saved after save_model
                AuditEntry.objects.filter(pk=entry.pk).update(after=after)

    # Delete ----------------------------------------------------------------------------------

    def delete_model(self, request, obj):
        audit_record(
            actor=request.user,
            action=self.audit_verb("delete"),
            target=obj,
            before=self.audit_snapshot(obj),
        )
        super().delete_model(request, obj)

    def delete_queryset(self, request, queryset):
        with transaction.atomic(using=router.db_for_write(self.model)):
            for obj in queryset.iterator(chunk_size=500):
                audit_record(
                    actor=request.user,
                    action=self.audit_verb("delete"),
                    target=obj,
                    before=self.audit_snapshot(obj),
                    note="delete_selected",
                )
            super().delete_queryset(request, queryset)

    # Inlines ---------------------------------------------------------------------------------

    def save_formset(self, request, form, formset, change):
        model = formset.model
        verb = model._meta.model_name
        before = {}
        for inline_form in formset.initial_forms:
            instance = inline_form.instance
            if instance.pk is None:
                continue
            if formset.can_delete and formset._should_delete_form(inline_form):
                audit_record(
                    actor=request.user,
                    action=f"{verb}.admin_delete",
                    target=instance,
                    before=self.audit_snapshot(self._db_state(instance)),
                    note=f"inline of {form.instance._meta.label_lower} #{form.instance.pk}",
                )
            elif inline_form.has_changed():
                before[instance.pk] = self.audit_snapshot(self._db_state(instance))
        super().save_formset(request, form, formset, change)
        note = f"inline of {form.instance._meta.label_lower} #{form.instance.pk}"
        for obj in getattr(formset, "new_objects", []):
            audit_record(
                actor=request.user, action=f"{verb}.admin_add", target=obj,
                after=self.audit_snapshot(obj), note=note,
            )  # fmt: skip
        for obj, changed in getattr(formset, "changed_objects", []):
            audit_record(
                actor=request.user, action=f"{verb}.admin_change", target=obj,
                before=before.get(obj.pk), after=self.audit_snapshot(obj),
                note=f"{note}: {', '.join(changed)}",
            )  # fmt: skip

    # Actions ---------------------------------------------------------------------------------

    def get_actions(self, request):
        actions = super().get_actions(request)
        for name, (func, action_name, description) in list(actions.items()):
            if name == "delete_selected" or getattr(func, "_concorde_audited", False):
                continue  # deletions are logged by delete_queryset
            actions[name] = (self._audited_action(func, action_name), action_name, description)
        return actions

    def _audited_action(self, func, name):
        @functools.wraps(func)
        def audited(modeladmin, request, queryset):
            ids = list(queryset.values_list("pk", flat=True))
            shown = ids[: self.audit_max_objects]
            manager = queryset.model._default_manager

            def states():
                return {str(o.pk): self.audit_snapshot(o) for o in manager.filter(pk__in=shown)}

            last_entry = AuditEntry.objects.order_by("-pk").values_list("pk", flat=True).first() or 0
            with transaction.atomic(using=router.db_for_write(queryset.model)):
                before = states()
                response = func(modeladmin, request, queryset)
                after = states()
                wrote_own = AuditEntry.objects.filter(pk__gt=last_entry, actor=request.user).exists()
                intermediate_page = response is not None and not isinstance(
                    response, HttpResponseRedirect
                )
                if not wrote_own and not (intermediate_page and _jsonable_snapshot(before) == _jsonable_snapshot(after)):
                    audit_record(
                        actor=request.user,
                        action=self.audit_verb(f"action:{name}"),
                        target_type=queryset.model._meta.label_lower,
                        target_id=str(ids[0]) if len(ids) == 1 else "",
                        target_label=f"{len(ids)} × {queryset.model._meta.verbose_name}",
                        before={"ids": ids, "objects": before},
                        after={"objects": after},
                        note=name,
                    )
            return response

        audited._concorde_audited = True
        return audited


def _snapshot(obj, *, exclude=()):
    if obj is None:
        return None
    data = {k: v for k, v in model_snapshot(obj).items() if k not in exclude}
    if obj.pk is not None:
        for field in obj._meta.many_to_many:
            if field.name in exclude or not isinstance(field, models.ManyToManyField):
                continue
            data[field.name] = sorted(getattr(obj, field.name).values_list("pk", flat=True))
    return data


def _jsonable_snapshot(value):
    from .audit import _jsonable

    return _jsonable(value) if value is not None else None


def _changed_note(form) -> str:
    changed = getattr(form, "changed_data", None) or []
    return ("changed: " + ", ".join(changed)) if changed else ""


def _pending(request) -> dict:
    # Per request, never on the ModelAdmin (one instance serves every thread).
    if not hasattr(request, "_audit_pending"):
        request._audit_pending = {}
    return request._audit_pending
