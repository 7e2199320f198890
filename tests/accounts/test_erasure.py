"""Erasing an account: nothing of the person remains, everything they gave stays counted."""

from datetime import timedelta

import pytest
from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.contenttypes.models import ContentType
from django.core.management import CommandError, call_command
from django.utils import timezone

from accounts import services
from accounts.audit import audit_record
from accounts.models import AuditEntry, User
from accounts.tasks import anonymise_inactive_accounts
from actions.models import Follow
from consultations.models import Participant, Proposal, Qualification, Vote
from consultations.services import counters_recount
from partners.models import PartnerMembership
from tests.factories import UserFactory

from .gdpr import counters_state, find_everywhere, make_citizen

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff():
    return UserFactory(email="moderator.staff@example.org", is_staff=True, display_name="Mod")


def test_erasure_leaves_nothing_of_the_person_but_anonymised_counts(staff):
    citizen = make_citizen(staff=staff)
    user = citizen.user
    LogEntry.objects.log_actions(
        user_id=staff.pk, queryset=[user], action_flag=CHANGE, change_message="edited"
    )
    other = make_citizen(tag="B")  # must stay untouched
    ids = [p.pk for p in citizen.proposals + [citizen.own_proposal]]
    counters_before = counters_state(ids)
    votes_before = Vote.objects.count()
    qualifications_before = Qualification.objects.count()
    assert find_everywhere(citizen.needles)  # the search does find them before

    report = services.account_erase(user=user, reason="self")

    assert find_everywhere(citizen.needles) == []
    assert not User.objects.filter(pk=user.pk).exists()
    # the votes stay counted: same rows, same counters, and counters equal a recount
    assert report.votes_kept == len(citizen.voted)
    assert Vote.objects.count() == votes_before
    assert Qualification.objects.count() == qualifications_before
    assert counters_state(ids) == counters_before
    assert counters_recount(proposal_ids=ids) == {"counters_fixed": 0, "totals_fixed": 0}
    # the participant is the same row, anonymous, without demographics
    participant = Participant.objects.get(pk=citizen.participant.pk)
    assert participant.user_id is None and participant.session_key is None
    assert (participant.age_range, participant.gender, participant.postal_area) == ("", "", "")
    assert participant.votes.count() == len(citizen.voted)
    # the proposal stays, authorless
    own = Proposal.objects.get(pk=citizen.own_proposal.pk)
    assert (own.author_id, own.author_name, own.author_age) == (None, "", None)
    assert own.content == citizen.own_proposal.content
    assert not Follow.objects.filter(user_id=user.pk).exists()
    assert not PartnerMembership.objects.filter(user_id=user.pk).exists()
    # the erasure is logged by id, and the staff edits before it still say what was done
    entry = AuditEntry.objects.get(action="account.erase")
    assert entry.target_label == f"user #{user.pk}" and entry.target_id == str(user.pk)
    assert entry.before["votes_kept"] == len(citizen.voted)
    edit = AuditEntry.objects.get(action="user.admin_change")
    assert edit.actor_label == staff.email and edit.before["email"] == services.ERASED
    log = LogEntry.objects.get(content_type=ContentType.objects.get_for_model(User))
    assert log.object_repr == f"user #{user.pk}"
    # the other citizen keeps everything
    assert all(hit[2] not in citizen.needles for hit in find_everywhere(other.needles))
    assert find_everywhere(other.needles)
    assert Participant.objects.get(pk=other.participant.pk).age_range == "25-34"


def test_a_participant_with_no_vote_is_deleted():
    user = UserFactory()
    participant = Participant.objects.create(user=user, age_range="18-24")
    report = services.account_erase(user=user)
    assert report.participant_deleted and not Participant.objects.filter(pk=participant.pk).exists()


def test_a_citizens_own_actions_lose_their_name_but_a_staff_members_keep_it():
    citizen = UserFactory(email="partner.person@example.net")
    staff = UserFactory(email="staff.person@example.net", is_staff=True)
    audit_record(actor=citizen, action="measurement.add")
    audit_record(actor=staff, action="proposal.accept")
    services.account_erase(user=citizen)
    services.account_erase(user=staff, reason="staff")
    labels = set(AuditEntry.objects.exclude(action="account.erase").values_list("actor_label", flat=True))
    assert labels == {f"user #{citizen.pk}", "staff.person@example.net"}


def test_erasing_an_account_twice_is_refused_cleanly():
    user = UserFactory()
    stale = User.objects.get(pk=user.pk)
    services.account_erase(user=user)
    with pytest.raises(services.AccountError):
        services.account_erase(user=stale)
    assert AuditEntry.objects.filter(action="account.erase").count() == 1


# Inactive accounts -----------------------------------------------------------------------------


def _age(user, *, days, logged_in=True):
    moment = timezone.now() - timedelta(days=days)
    User.objects.filter(pk=user.pk).update(
        date_joined=moment, last_login=moment if logged_in else None
    )


def test_inactive_accounts_are_erased_and_active_ones_kept(settings):
    settings.CONCORDE_INACTIVE_ACCOUNT_DAYS = 365
    old = make_citizen(tag="Old")
    _age(old.user, days=400)
    never = UserFactory()
    _age(never, days=400, logged_in=False)
    recent = UserFactory()
    _age(recent, days=10)
    joined_long_ago_active_lately = UserFactory()
    _age(joined_long_ago_active_lately, days=400)
    User.objects.filter(pk=joined_long_ago_active_lately.pk).update(last_login=timezone.now())
    old_staff = UserFactory(is_staff=True)
    _age(old_staff, days=4000)
    ids = [p.pk for p in old.proposals + [old.own_proposal]]
    counters_before = counters_state(ids)

    result = anonymise_inactive_accounts.delay().get()

    assert result == {"erased": 2, "votes_kept": len(old.voted), "proposals_anonymised": 1}
    remaining = set(User.objects.values_list("pk", flat=True))
    assert remaining == {recent.pk, joined_long_ago_active_lately.pk, old_staff.pk}
    assert find_everywhere(old.needles) == []
    assert counters_state(ids) == counters_before
    assert counters_recount(proposal_ids=ids) == {"counters_fixed": 0, "totals_fixed": 0}
    # idempotent: a second run finds nothing and changes nothing
    assert anonymise_inactive_accounts.delay().get()["erased"] == 0
    assert AuditEntry.objects.filter(action="account.erase", note="inactive").count() == 2


def test_a_user_who_logs_in_during_the_run_keeps_the_account(settings, monkeypatch):
    settings.CONCORDE_INACTIVE_ACCOUNT_DAYS = 30
    user = UserFactory()
    _age(user, days=60)
    real = services.inactive_accounts
    calls = {"n": 0}

    def login_meanwhile(**kwargs):
        calls["n"] += 1
        if calls["n"] == 2:  # after the id list is read, before the row is locked
            User.objects.filter(pk=user.pk).update(last_login=timezone.now())
        return real(**kwargs)

    monkeypatch.setattr(services, "inactive_accounts", login_meanwhile)
    assert services.inactive_accounts_anonymise()["erased"] == 0
    assert User.objects.filter(pk=user.pk).exists()


def test_zero_days_disables_the_anonymisation(settings):
    settings.CONCORDE_INACTIVE_ACCOUNT_DAYS = 0
    user = UserFactory()
    _age(user, days=5000)
    assert services.inactive_accounts_anonymise()["erased"] == 0
    assert User.objects.filter(pk=user.pk).exists()


def test_the_command_counts_with_dry_run_then_erases(settings, capsys):
    settings.CONCORDE_INACTIVE_ACCOUNT_DAYS = 365
    user = UserFactory()
    _age(user, days=100)
    call_command("anonymise_inactive_accounts", "--days", "30", "--dry-run")
    assert "1 account(s)" in capsys.readouterr().out
    assert User.objects.filter(pk=user.pk).exists()
    call_command("anonymise_inactive_accounts")  # 365 days: not yet
    assert User.objects.filter(pk=user.pk).exists()
    call_command("anonymise_inactive_accounts", "--days", "30")
    assert "1 account(s) erased" in capsys.readouterr().out
    assert not User.objects.filter(pk=user.pk).exists()
    with pytest.raises(CommandError):
        call_command("anonymise_inactive_accounts", "--days", "0")


def test_the_beat_schedule_runs_the_anonymisation_nightly():
    from django.conf import settings

    entry = settings.CELERY_BEAT_SCHEDULE["accounts-anonymise-inactive"]
    assert entry["task"] == anonymise_inactive_accounts.name
