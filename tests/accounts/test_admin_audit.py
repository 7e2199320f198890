"""Every change made in the Django admin lands in the audit log (accounts/admin_audit.py)."""

import datetime

import pytest
from django.contrib import admin
from django.forms import MultiWidget
from django.urls import reverse
from django.utils import timezone

from accounts.admin_audit import AuditedAdminMixin
from accounts.models import AuditEntry, User
from consultations.models import Participant, Proposal, Vote
from partners.models import Partner, PartnerMembership
from tests.factories import ConsultationFactory, PartnerFactory, ProposalFactory, UserFactory

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("english")]


@pytest.fixture
def superuser(client):
    user = UserFactory(email="chief@example.org", is_staff=True, is_superuser=True)
    client.force_login(user)
    return user


def change_url(obj):
    return reverse(f"admin:{obj._meta.app_label}_{obj._meta.model_name}_change", args=[obj.pk])


def form_data(client, obj, **changes):
    """The admin change form's current values, with `changes` applied (as a browser would post)."""
    response = client.get(change_url(obj))
    form = response.context["adminform"].form
    data = {}
    for name, field in form.fields.items():
        value = form[name].value()
        if value is None:
            continue
        if isinstance(field.widget, MultiWidget):  # split date and time
            if isinstance(value, datetime.datetime):
                value = timezone.localtime(value)
            for i, part in enumerate(field.widget.decompress(value)):
                if part is not None:
                    data[f"{name}_{i}"] = part.strftime("%H:%M:%S") if isinstance(part, datetime.time) else str(part)
            continue
        if isinstance(value, (list, tuple)):
            data[name] = [str(v) for v in value]
        elif isinstance(value, bool):
            if value:
                data[name] = "on"
        else:
            data[name] = value if isinstance(value, str) else str(value)
    for formset in response.context["inline_admin_formsets"]:
        fs = formset.formset
        prefix = fs.prefix
        data.update({f"{prefix}-TOTAL_FORMS": str(fs.total_form_count()),
                     f"{prefix}-INITIAL_FORMS": str(fs.initial_form_count()),
                     f"{prefix}-MIN_NUM_FORMS": "0", f"{prefix}-MAX_NUM_FORMS": "1000"})  # fmt: skip
        for i, inline_form in enumerate(fs.forms):
            for name in inline_form.fields:
                value = inline_form[name].value()
                if value not in (None, False):
                    data[f"{prefix}-{i}-{name}"] = "on" if value is True else str(value)
    data.update(changes)
    return data


def test_every_model_admin_of_the_project_is_audited():
    from accounts.admin import AuditEntryAdmin

    missing = [
        type(model_admin).__name__
        for model, model_admin in admin.site._registry.items()
        if model._meta.app_label in {"accounts", "actions", "causes", "consensus", "consultations", "partners"}
        and not isinstance(model_admin, AuditedAdminMixin | AuditEntryAdmin)
    ]
    assert missing == []


def test_an_admin_change_records_before_and_after(client, superuser):
    proposal = ProposalFactory(content="Il faut des pistes cyclabes")
    data = form_data(client, proposal, content="Il faut des pistes cyclables")
    response = client.post(change_url(proposal), data)
    assert response.status_code == 302, response.context["adminform"].form.errors if response.context else ""
    entry = AuditEntry.objects.get(action="proposal.admin_change")
    assert entry.actor == superuser and entry.actor_label == superuser.email
    assert entry.target_type == "consultations.proposal" and entry.target_id == str(proposal.pk)
    assert entry.before["content"] == "Il faut des pistes cyclabes"
    assert entry.after["content"] == "Il faut des pistes cyclables"
    assert "content" in entry.note


def test_an_admin_delete_records_the_state_before(client, superuser):
    partner = PartnerFactory(name="Les Amis du Parc")
    url = reverse("admin:partners_partner_delete", args=[partner.pk])
    assert client.post(url, {"post": "yes"}).status_code == 302
    assert not Partner.objects.filter(pk=partner.pk).exists()
    entry = AuditEntry.objects.get(action="partner.admin_delete")
    assert entry.before["name"] == "Les Amis du Parc" and entry.after is None
    assert entry.target_id == str(partner.pk) and entry.actor == superuser


def test_delete_selected_records_one_entry_per_object(client, superuser):
    proposals = ProposalFactory.create_batch(3)
    keep = ProposalFactory()
    url = reverse("admin:consultations_proposal_changelist")
    ids = [str(p.pk) for p in proposals]
    # first POST: the confirmation page, nothing deleted nor logged
    client.post(url, {"action": "delete_selected", "_selected_action": ids})
    assert AuditEntry.objects.count() == 0 and Proposal.objects.count() == 4
    client.post(url, {"action": "delete_selected", "_selected_action": ids, "post": "yes"})
    assert list(Proposal.objects.all()) == [keep]
    entries = AuditEntry.objects.filter(action="proposal.admin_delete")
    assert sorted(entries.values_list("target_id", flat=True)) == sorted(ids)
    assert all(e.before["content"] for e in entries)


def test_an_admin_add_records_the_after_state_with_many_to_many(client, superuser):
    consultation = ConsultationFactory()
    url = reverse("admin:partners_partner_add")
    response = client.post(url, {
        "name": "Association Neuve", "slug": "association-neuve", "kind": "actor", "weight": "0",
        "memberships-TOTAL_FORMS": "0", "memberships-INITIAL_FORMS": "0",
    })  # fmt: skip
    assert response.status_code == 302, response.content.decode()[:2000]
    entry = AuditEntry.objects.get(action="partner.admin_add")
    assert entry.before is None and entry.after["name"] == "Association Neuve"
    assert consultation  # unrelated rows are not logged
    assert AuditEntry.objects.count() == 1


def test_inline_rows_are_audited_too(client, superuser):
    partner = PartnerFactory()
    member = UserFactory()
    data = form_data(client, partner)
    data.update({"memberships-TOTAL_FORMS": "1", "memberships-0-user": str(member.pk),
                 "memberships-0-role": "viewer", "memberships-0-partner": str(partner.pk)})  # fmt: skip
    response = client.post(change_url(partner), data)
    assert response.status_code == 302
    membership = PartnerMembership.objects.get()
    entry = AuditEntry.objects.get(action="partnermembership.admin_add")
    assert entry.target_id == str(membership.pk) and entry.after["role"] == "viewer"


def test_admin_actions_record_the_selection_before_and_after(client, superuser, monkeypatch):
    from consultations.admin import ProposalAdmin

    def archive(modeladmin, request, queryset):
        queryset.update(status=Proposal.Status.ARCHIVED)

    archive.short_description = "Archive"
    monkeypatch.setattr(ProposalAdmin, "actions", ["archive_for_test"], raising=False)
    monkeypatch.setattr(ProposalAdmin, "archive_for_test", staticmethod(archive), raising=False)
    proposals = ProposalFactory.create_batch(2)
    url = reverse("admin:consultations_proposal_changelist")
    ids = [str(p.pk) for p in proposals]
    client.post(url, {"action": "archive_for_test", "_selected_action": ids})
    entry = AuditEntry.objects.get(action="proposal.admin_action:archive_for_test")
    assert sorted(map(str, entry.before["ids"])) == sorted(ids)
    assert {o["status"] for o in entry.before["objects"].values()} == {"accepted"}
    assert {o["status"] for o in entry.after["objects"].values()} == {"archived"}


def test_an_action_that_audits_itself_is_not_logged_twice(client, superuser, monkeypatch):
    from accounts.audit import audit_record
    from consultations.admin import ProposalAdmin

    def accept(modeladmin, request, queryset):
        for proposal in queryset:
            audit_record(actor=request.user, action="proposal.accept", target=proposal)

    monkeypatch.setattr(ProposalAdmin, "actions", ["accept_for_test"], raising=False)
    monkeypatch.setattr(ProposalAdmin, "accept_for_test", staticmethod(accept), raising=False)
    proposal = ProposalFactory()
    client.post(reverse("admin:consultations_proposal_changelist"),
                {"action": "accept_for_test", "_selected_action": [str(proposal.pk)]})  # fmt: skip
    assert list(AuditEntry.objects.values_list("action", flat=True)) == ["proposal.accept"]


def test_an_action_that_only_shows_a_confirmation_page_is_not_logged(client, superuser, monkeypatch):
    from django.http import HttpResponse

    from consultations.admin import ProposalAdmin

    def ask_first(modeladmin, request, queryset):
        return HttpResponse("Are you sure?")

    monkeypatch.setattr(ProposalAdmin, "actions", ["ask_first"], raising=False)
    monkeypatch.setattr(ProposalAdmin, "ask_first", staticmethod(ask_first), raising=False)
    proposal = ProposalFactory()
    response = client.post(reverse("admin:consultations_proposal_changelist"),
                           {"action": "ask_first", "_selected_action": [str(proposal.pk)]})  # fmt: skip
    assert response.content == b"Are you sure?"
    assert not AuditEntry.objects.exists()


def test_passwords_and_session_keys_never_reach_the_log(client, superuser):
    user = UserFactory(email="someone@example.org")
    data = form_data(client, user, is_staff="on")
    assert client.post(change_url(user), data).status_code == 302
    entry = AuditEntry.objects.get(action="user.admin_change")
    assert "password" not in entry.before and "password" not in entry.after
    assert entry.before["is_staff"] is False and entry.after["is_staff"] is True
    participant = Participant.objects.create(session_key="a-very-secret-session-key", gender="f")
    data = form_data(client, participant, gender="m")
    assert client.post(change_url(participant), data).status_code == 302
    entry = AuditEntry.objects.get(action="participant.admin_change")
    assert "session_key" not in entry.after and entry.after["gender"] == "m"


def test_deleting_a_user_in_the_admin_is_an_erasure(client, superuser):
    from consultations.services import participant_for_user, vote_cast

    user = UserFactory(email="leaving@example.org")
    proposal = ProposalFactory()
    vote_cast(participant=participant_for_user(user=user), proposal=proposal, key="agree")
    url = reverse("admin:accounts_user_delete", args=[user.pk])
    assert client.post(url, {"post": "yes"}).status_code == 302
    assert not User.objects.filter(pk=user.pk).exists()
    assert Vote.objects.filter(proposal=proposal).count() == 1  # still counted
    entry = AuditEntry.objects.get(action="account.erase")
    assert entry.actor == superuser and entry.note == "staff"
    assert "leaving@example.org" not in str(entry.before) + entry.target_label


def test_the_audit_admin_is_read_only(client, superuser):
    proposal = ProposalFactory()
    client.post(change_url(proposal), form_data(client, proposal, content="Il faut lire"))
    entry = AuditEntry.objects.get()
    list_url = reverse("admin:accounts_auditentry_changelist")
    assert client.get(list_url).status_code == 200
    assert client.get(reverse("admin:accounts_auditentry_add")).status_code == 403
    detail = client.get(reverse("admin:accounts_auditentry_change", args=[entry.pk]))
    assert detail.status_code == 200 and b'name="_save"' not in detail.content
    response = client.post(reverse("admin:accounts_auditentry_change", args=[entry.pk]), {"action": "x"})
    assert response.status_code == 403
    response = client.post(reverse("admin:accounts_auditentry_delete", args=[entry.pk]), {"post": "yes"})
    assert response.status_code == 403
    client.post(list_url, {"action": "delete_selected", "_selected_action": [str(entry.pk)], "post": "yes"})
    assert AuditEntry.objects.filter(pk=entry.pk).exists()
    entry.refresh_from_db()
    assert entry.after["content"] == "Il faut lire"


def test_staff_without_rights_cannot_read_the_audit_log(client):
    client.force_login(UserFactory())
    response = client.get(reverse("admin:accounts_auditentry_changelist"))
    assert response.status_code == 302 and "login" in response["Location"]


def test_delete_selected_users_erases_each_of_them(client, superuser):
    users = UserFactory.create_batch(2)
    url = reverse("admin:accounts_user_changelist")
    ids = [str(u.pk) for u in users]
    client.post(url, {"action": "delete_selected", "_selected_action": ids, "post": "yes"})
    assert not User.objects.filter(pk__in=ids).exists()
    entries = AuditEntry.objects.filter(action="account.erase", note="staff")
    assert sorted(entries.values_list("target_id", flat=True)) == sorted(ids)
    assert all(e.actor == superuser for e in entries)
