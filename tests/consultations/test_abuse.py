"""Abuse: rate limits on the real Redis, the proposal form's bot protection, vote bursts."""

import os
import time
import uuid
from collections import Counter

import pytest
import redis
from django.contrib.admin.sites import site as admin_site
from django.urls import reverse

from accounts.models import AuditEntry
from accounts.privacy import ip_hash
from consultations import abuse
from consultations.abuse import HONEYPOT_FIELD, STAMP_FIELD, form_stamp
from consultations.models import (
    Participant,
    Proposal,
    ProposalCounter,
    Qualification,
    Trust,
    Vote,
    VoteBurstFlag,
)
from consultations.services import SESSION_PARTICIPANT

from ..factories import ConsultationFactory, ProposalFactory, UserFactory

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("english")]

HX = {"HTTP_HX_REQUEST": "true"}
# Day-long windows: a fixed window ending in the middle of a test would make it flaky.
IP = "203.0.113.9"


@pytest.fixture
def redis_cache(settings):
    """The default cache on the real Redis of TEST_REDIS_URL, under a key prefix of its own
    (deleted after): no flush, so tests running beside it on that database (pytest -n) keep
    their keys, and its counters start from nothing."""
    url = os.environ.get("TEST_REDIS_URL")
    if not url:
        pytest.skip("set TEST_REDIS_URL to run the rate-limit tests on the real Redis")
    prefix = f"test-abuse-{uuid.uuid4().hex}"
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": url,
            "KEY_PREFIX": prefix,
        }
    }
    client = redis.Redis.from_url(url)
    yield client
    keys = list(client.scan_iter(f"{prefix}:*"))
    if keys:
        client.delete(*keys)


@pytest.fixture
def consultation():
    consultation = ConsultationFactory()
    for i in range(6):
        ProposalFactory(consultation=consultation, content=f"Il faut une proposition {i} pour tous")
    return consultation


def vote_url(proposal):
    return reverse("consultations:vote", args=[proposal.consultation.slug, proposal.pk])


def propose_url(consultation):
    return reverse("consultations:propose", args=[consultation.slug])


def counters_exact(proposal_ids) -> bool:
    """The counters equal a recount of the votes and qualifications, per (key, trust)."""
    truth = Counter()
    for row in Vote.objects.filter(proposal_id__in=proposal_ids).values_list(
        "proposal_id", "key", "trust"
    ):
        truth[row] += 1
    for row in Qualification.objects.filter(vote__proposal_id__in=proposal_ids).values_list(
        "vote__proposal_id", "key", "vote__trust"
    ):
        truth[row] += 1
    stored = Counter(
        {
            (c.proposal_id, c.key, c.trust): c.count
            for c in ProposalCounter.objects.filter(proposal_id__in=proposal_ids)
            if c.count
        }
    )
    assert stored == truth
    return True


def redis_dump(client) -> str:
    """Every key and string value in the Redis db, as text."""
    parts = []
    for key in client.scan_iter():
        parts.append(repr(key))
        if client.type(key) == b"string":
            parts.append(repr(client.get(key)))
    return " ".join(parts)


# Rate limits ---------------------------------------------------------------------------------


def test_votes_past_the_account_limit_get_a_clear_429_and_are_not_recorded(
    client, consultation, settings, redis_cache
):
    settings.CONCORDE_RATELIMITS = {"vote": {"user": "3/d"}}
    user = UserFactory()
    client.force_login(user)
    proposals = list(consultation.proposals.order_by("pk"))
    for proposal in proposals[:3]:
        assert client.post(vote_url(proposal), {"key": "agree"}, REMOTE_ADDR=IP).status_code == 302
    response = client.post(vote_url(proposals[3]), {"key": "agree"}, REMOTE_ADDR=IP)
    assert response.status_code == 429
    assert "too many requests" in response.content.decode()
    assert 1 <= int(response["Retry-After"]) <= 86400
    assert Vote.objects.filter(participant__user=user).count() == 3
    assert not Vote.objects.filter(proposal=proposals[3]).exists()


def test_the_ip_limit_holds_many_sessions_behind_one_address(consultation, settings, redis_cache):
    from django.test import Client

    settings.CONCORDE_RATELIMITS = {"vote": {"ip": "2/d"}}
    proposal = consultation.proposals.first()
    codes = [
        Client().post(vote_url(proposal), {"key": "agree"}, REMOTE_ADDR=IP).status_code
        for _ in range(3)
    ]
    assert codes == [302, 302, 429]
    assert Vote.objects.filter(proposal=proposal).count() == 2
    # Another address is not held.
    other = Client().post(vote_url(proposal), {"key": "agree"}, REMOTE_ADDR="198.51.100.7")
    assert other.status_code == 302


def test_starting_sequences_past_the_limit_gets_429_and_writes_no_exposure(
    client, consultation, settings, redis_cache
):
    from consultations.models import Exposure

    settings.CONCORDE_RATELIMITS = {"sequence": {"user": "2/d"}}
    client.force_login(UserFactory())
    url = reverse("consultations:sequence", args=[consultation.slug])
    assert [client.post(url, REMOTE_ADDR=IP).status_code for _ in range(2)] == [302, 302]
    exposures = Exposure.objects.count()
    response = client.post(url, REMOTE_ADDR=IP)
    assert response.status_code == 429
    assert Exposure.objects.count() == exposures
    assert client.get(url, REMOTE_ADDR=IP).status_code == 200  # reading the card is not limited


def test_ipv6_clients_are_limited_per_64_network(consultation, settings, redis_cache):
    """One subscriber gets a whole /64: rotating addresses inside it does not escape the limit."""
    from django.test import Client

    settings.CONCORDE_RATELIMITS = {"vote": {"ip": "2/d"}}
    proposal = consultation.proposals.first()
    codes = [
        Client().post(vote_url(proposal), {"key": "agree"}, REMOTE_ADDR=f"2001:db8:1:2::{n}").status_code
        for n in range(1, 4)
    ]
    assert codes == [302, 302, 429]
    other = Client().post(vote_url(proposal), {"key": "agree"}, REMOTE_ADDR="2001:db8:1:3::1")
    assert other.status_code == 302


def test_htmx_gets_the_429_as_an_alert_for_the_page(client, consultation, settings, redis_cache):
    settings.CONCORDE_RATELIMITS = {"qualify": {"ip": "1/d"}}
    proposal = consultation.proposals.first()
    client.post(vote_url(proposal), {"key": "agree"})
    url = reverse("consultations:qualify", args=[consultation.slug, proposal.pk])
    assert client.post(url, {"key": "like_it"}, **HX).status_code == 200
    response = client.post(url, {"key": "doable"}, **HX)
    assert response.status_code == 429
    html = response.content.decode()
    assert response["HX-Retarget"] == "#htmx-alerts" and "<html" not in html
    assert 'role="alert"' in html and "too many requests" in html
    assert "HX-Request" in response["Vary"]
    assert list(Qualification.objects.values_list("key", flat=True)) == ["like_it"]


def test_rate_limit_counters_in_redis_hold_no_clear_ip(client, consultation, settings, redis_cache):
    settings.CONCORDE_RATELIMITS = {"vote": {"ip": "100/m", "user": "100/m"}}
    settings.ACCOUNT_RATE_LIMITS = {"login": "100/m/ip"}
    proposal = consultation.proposals.first()
    client.post(vote_url(proposal), {"key": "agree"}, REMOTE_ADDR=IP)
    client.post(reverse("account_login"), {"login": "a@example.org", "password": "x"}, REMOTE_ADDR=IP)
    dump = redis_dump(redis_cache)
    assert dump, "the limits were counted in Redis"
    assert IP not in dump


def test_anonymous_proposals_past_the_ip_limit_store_no_draft(consultation, settings, redis_cache):
    from django.test import Client

    settings.CONCORDE_RATELIMITS = {"propose": {"ip": "1/d"}}
    client = Client()
    data = {STAMP_FIELD: form_stamp(), "content": "ouvrir les bibliothèques le dimanche"}
    assert client.post(propose_url(consultation), data, REMOTE_ADDR=IP).status_code == 302
    client.session.flush()
    other = Client()
    data = {STAMP_FIELD: form_stamp(), "content": "ouvrir les piscines le dimanche"}
    response = other.post(propose_url(consultation), data, REMOTE_ADDR=IP)
    assert response.status_code == 429
    assert not any("piscines" in str(v) for v in other.session.values())


def test_logins_past_the_limit_get_429(client, settings, redis_cache):
    settings.ACCOUNT_RATE_LIMITS = {"login": "2/m/ip", "login_failed": "100/m/ip"}
    UserFactory(email="lea@example.org")
    url = reverse("account_login")
    data = {"login": "lea@example.org", "password": "wrong password"}
    codes = [client.post(url, data, REMOTE_ADDR=IP).status_code for _ in range(3)]
    assert codes == [200, 200, 429]
    assert "Too many requests" in client.post(url, data, REMOTE_ADDR=IP).content.decode()


def test_failed_logins_on_one_account_are_limited(client, settings, redis_cache):
    settings.ACCOUNT_RATE_LIMITS = {"login_failed": "100/m/ip,2/5m/key"}
    UserFactory(email="lea@example.org")
    url = reverse("account_login")
    data = {"login": "lea@example.org", "password": "wrong password"}
    htmls = [
        client.post(url, data, REMOTE_ADDR=f"198.51.100.{n + 1}").content.decode() for n in range(3)
    ]
    # Three addresses, one account: the third failed login is refused before the password check.
    assert ["Too many failed login attempts" in html for html in htmls] == [False, False, True]


def test_a_redis_outage_never_costs_a_vote(client, consultation, settings):
    """The rate limiter and the burst counter fail open when the cache is unreachable."""
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": "redis://127.0.0.1:1/0",  # nothing listens there
        }
    }
    settings.CONCORDE_RATELIMITS = {"vote": {"ip": "1/m", "user": "1/d"}}
    settings.CONCORDE_VOTE_BURST = "1/60"
    proposals = list(consultation.proposals.order_by("pk"))[:2]
    for proposal in proposals:
        assert client.post(vote_url(proposal), {"key": "agree"}).status_code == 302
    assert Vote.objects.filter(proposal__in=proposals).count() == 2
    assert not VoteBurstFlag.objects.exists()


def test_rates_come_from_the_environment():
    import subprocess
    import sys

    code = (
        "import django, os; os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'config.settings');"
        "django.setup(); from django.conf import settings;"
        "print(settings.CONCORDE_RATELIMITS['vote']['ip'], settings.ACCOUNT_RATE_LIMITS['login'])"
    )
    env = dict(os.environ, CONCORDE_RATELIMIT_VOTE="7/s", CONCORDE_RATELIMIT_LOGIN="9/m/ip")
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.stdout.split() == ["7/s", "9/m/ip"], out.stderr


# Bot protection --------------------------------------------------------------------------------


def test_the_proposal_form_carries_the_stamp_and_a_hidden_honeypot(client, consultation):
    html = client.get(consultation.get_absolute_url()).content.decode()
    assert f'name="{STAMP_FIELD}"' in html
    assert f'name="{HONEYPOT_FIELD}"' in html and 'tabindex="-1"' in html
    assert 'class="hp" aria-hidden="true"' in html


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({HONEYPOT_FIELD: "http://spam.example"}, "could not accept this form"),
        ({STAMP_FIELD: ""}, "incomplete or out of date"),
        ({STAMP_FIELD: "forged:stamp"}, "incomplete or out of date"),
        ({STAMP_FIELD: form_stamp(now=time.time() - 7 * 3600)}, "expired"),
        ({STAMP_FIELD: "FRESH"}, "very fast"),
    ],
    ids=["honeypot", "no-stamp", "forged", "expired", "too-fast"],
)
@pytest.mark.parametrize("logged_in", [True, False], ids=["user", "anonymous"])
def test_bot_like_proposals_are_refused_and_nothing_is_stored(
    client, consultation, settings, data, message, logged_in
):
    settings.CONCORDE_PROPOSE_MIN_SECONDS = 3
    if logged_in:
        client.force_login(UserFactory())
    post = {STAMP_FIELD: form_stamp(now=time.time() - 30), "content": "ouvrir les musées la nuit"}
    post.update(data)
    if post[STAMP_FIELD] == "FRESH":
        post[STAMP_FIELD] = form_stamp()
    response = client.post(propose_url(consultation), post)
    assert response.status_code == 400
    html = response.content.decode()
    assert message in html and "ouvrir les musées la nuit</textarea>" in html
    assert not Proposal.objects.filter(content__contains="musées la nuit").exists()
    assert f"concorde_draft:{consultation.pk}" not in client.session


def test_a_form_sent_after_a_human_delay_goes_through(client, consultation, settings):
    settings.CONCORDE_PROPOSE_MIN_SECONDS = 3
    user = UserFactory()
    client.force_login(user)
    post = {STAMP_FIELD: form_stamp(now=time.time() - 20), "content": "ouvrir les musées la nuit"}
    assert client.post(propose_url(consultation), post).status_code == 302
    assert Proposal.objects.filter(author=user, content__contains="musées la nuit").exists()


# Vote bursts -----------------------------------------------------------------------------------


def test_a_vote_burst_is_flagged_and_later_votes_are_untrusted(
    client, consultation, settings, redis_cache
):
    settings.CONCORDE_VOTE_BURST = "3/86400"
    proposals = list(consultation.proposals.order_by("pk"))
    for proposal in proposals[:5]:
        assert client.post(vote_url(proposal), {"key": "agree"}, REMOTE_ADDR=IP).status_code == 302
    participant = Participant.objects.get(session_key=client.session[SESSION_PARTICIPANT])
    flag = VoteBurstFlag.objects.get(scope=VoteBurstFlag.Scope.PARTICIPANT)
    assert (flag.participant, flag.count, flag.threshold, flag.window_seconds) == (
        participant,
        5,
        3,
        86400,
    )
    assert flag.ip_hash == ip_hash(IP) and IP not in flag.ip_hash
    assert flag.status == VoteBurstFlag.Status.OPEN
    trusts = list(Vote.objects.filter(participant=participant).order_by("pk").values_list("trust", flat=True))
    # The 4th vote crossed the threshold; from the 5th on, the votes are untrusted.
    assert trusts == [Trust.TRUSTED] * 4 + [Trust.UNTRUSTED]
    assert counters_exact([p.pk for p in proposals])


def test_a_burst_from_many_sessions_on_one_ip_is_flagged(consultation, settings, redis_cache):
    from django.test import Client

    settings.CONCORDE_VOTE_BURST = "100/86400"
    settings.CONCORDE_VOTE_BURST_IP = "2/86400"
    proposal = consultation.proposals.first()
    for _ in range(4):
        Client().post(vote_url(proposal), {"key": "agree"}, REMOTE_ADDR=IP)
    flag = VoteBurstFlag.objects.get(scope=VoteBurstFlag.Scope.IP)
    assert flag.source_key == ip_hash(IP) and flag.count == 4
    assert Vote.objects.filter(proposal=proposal).count() == 4  # flagged, not refused


def _burst(client, consultation, settings):
    settings.CONCORDE_VOTE_BURST = "2/86400"
    proposals = list(consultation.proposals.order_by("pk"))
    for proposal in proposals[:3]:
        client.post(vote_url(proposal), {"key": "agree"})
    vote = Vote.objects.filter(proposal=proposals[0]).get()
    client.post(
        reverse("consultations:qualify", args=[consultation.slug, proposals[0].pk]),
        {"key": "like_it"},
    )
    assert Qualification.objects.filter(vote=vote).exists()
    return VoteBurstFlag.objects.get(scope=VoteBurstFlag.Scope.PARTICIPANT), proposals


def _scored(proposal_ids):
    return Vote.objects.filter(proposal_id__in=proposal_ids).exclude(trust=Trust.UNTRUSTED).count()


def test_confirming_a_burst_distrusts_its_votes_and_keeps_counters_exact(
    client, consultation, settings, redis_cache
):
    flag, proposals = _burst(client, consultation, settings)
    moderator = UserFactory(is_staff=True)
    ids = [p.pk for p in proposals[:3]]
    assert _scored(ids) == 3
    abuse.burst_flag_confirm(flag=flag, actor=moderator)
    flag.refresh_from_db()
    assert flag.status == VoteBurstFlag.Status.CONFIRMED and flag.votes_distrusted == 3
    assert _scored(ids) == 0
    assert counters_exact(ids)
    entry = AuditEntry.objects.get(action="vote_burst.confirm")
    assert entry.actor == moderator and entry.after["status"] == "confirmed"
    # Later votes of a confirmed participant stay untrusted.
    client.post(vote_url(proposals[4]), {"key": "disagree"})
    assert Vote.objects.get(proposal=proposals[4]).trust == Trust.UNTRUSTED


def test_dismissing_a_burst_trusts_later_votes_again(client, consultation, settings, redis_cache):
    flag, proposals = _burst(client, consultation, settings)
    settings.CONCORDE_VOTE_BURST = "100/86400"
    abuse.burst_flag_dismiss(flag=flag, actor=UserFactory(is_staff=True))
    client.post(vote_url(proposals[5]), {"key": "neutral"})
    assert Vote.objects.get(proposal=proposals[5]).trust == Trust.TRUSTED
    assert AuditEntry.objects.filter(action="vote_burst.dismiss").count() == 1


def test_moderators_see_and_act_on_bursts_in_the_admin(client, consultation, settings, redis_cache):
    flag, _proposals = _burst(client, consultation, settings)
    assert VoteBurstFlag in admin_site._registry
    staff = UserFactory(is_staff=True, is_superuser=True)
    client.force_login(staff)
    url = reverse("admin:consultations_voteburstflag_changelist")
    html = client.get(url).content.decode()
    assert str(flag.count) in html and flag.get_status_display() in html
    response = client.post(
        url, {"action": "confirm_bursts", "_selected_action": [flag.pk]}, follow=True
    )
    assert response.status_code == 200
    flag.refresh_from_db()
    assert flag.status == VoteBurstFlag.Status.CONFIRMED
