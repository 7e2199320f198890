import pytest

from accounts.audit import audit_record, model_snapshot
from accounts.models import AuditEntry
from tests.factories import ConsultationFactory, UserFactory

pytestmark = pytest.mark.django_db


def test_audit_record_keeps_who_what_and_before_after():
    staff = UserFactory(is_staff=True)
    consultation = ConsultationFactory()
    before = model_snapshot(consultation)
    consultation.question = "Renamed"
    consultation.save()

    entry = audit_record(
        actor=staff, action="consultation.edit", target=consultation, before=before,
        after=model_snapshot(consultation),
    )

    entry.refresh_from_db()
    assert entry.actor == staff and entry.actor_label == staff.email
    assert entry.target_type == "consultations.consultation"
    assert entry.target_id == str(consultation.pk)
    assert entry.before["question"] != "Renamed" and entry.after["question"] == "Renamed"


def test_audit_entry_outlives_its_actor():
    staff = UserFactory(is_staff=True)
    audit_record(actor=staff, action="x.y")
    staff.delete()
    entry = AuditEntry.objects.get()
    assert entry.actor is None and entry.actor_label  # who did it is still readable


def test_audit_log_is_read_only_in_the_admin(client):
    staff = UserFactory(is_staff=True, is_superuser=True)
    audit_record(actor=staff, action="x.y")
    client.force_login(staff)
    assert client.get("/admin/accounts/auditentry/").status_code == 200
    assert client.get("/admin/accounts/auditentry/add/").status_code == 403
