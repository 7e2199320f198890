"""Permissions of EVERY URL pattern, for every kind of visitor, and private consultations.

The patterns are enumerated from ``config.urls`` (so a view added later is tested too), each
requested as an anonymous visitor, a citizen, a partner and a staff member, with GET, GET as an
HTMX partial (``HX-Request``) and POST:

- no answer is a 5xx;
- staff-only URLs (admin, moderation, engine runs, imports, metrics) refuse everyone else
  (login redirect, 403, 404 or 405) and a refused POST changes no row anywhere;
- partner spaces refuse non-members, and partner A cannot reach partner B's actions;
- a private consultation (a cause of kind "private consultation") leaks nowhere: no page,
  partial, API answer or export shows its question or its proposals to non-members.
"""

import re

import pytest
from django.apps import apps
from django.contrib.auth.models import Permission
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, reverse
from django.urls.exceptions import NoReverseMatch

from causes.models import Cause
from consensus.models import EngineRun
from consultations.models import Proposal
from tests.actions.factories import ActionFactory, MembershipFactory, ObjectiveFactory

from .factories import (
    CauseFactory,
    ConsultationFactory,
    PartnerFactory,
    ProposalFactory,
    UserFactory,
)

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("english")]

HX = {"HTTP_HX_REQUEST": "true"}
ROLES = ("anonymous", "citizen", "partner", "staff")

# Staff only: the name's prefix (namespace) or the exact name. Every other URL is public, or
# checks its own rules (login, partner membership, a signed token) and is tested below for
# "no 5xx" and "no private leak".
STAFF_ONLY = re.compile(
    r"^(admin:(?!(login|logout|jsi18n)$)|moderation:|imports:|metrics$|consensus:(?!results(_ideas)?$))"
)
PARTNER_ONLY = re.compile(r"^partners:space")
# Anyone logged in; anonymous visitors go to the login page.
LOGIN_ONLY = re.compile(
    r"^(accounts:|account_(email|change_password|set_password|reauthenticate)$|partners:space)"
)
# POSTed with an empty body they would log the role out or erase its account for the rest of
# the loop; their own tests cover them (allauth's, tests/accounts/).
NOT_POSTED = {"account_logout", "accounts:erase"}
REFUSED = {302, 401, 403, 404, 405}


def iter_patterns(patterns=None, namespace=None):
    """(name, pattern) of every named URL pattern."""
    for item in get_resolver().url_patterns if patterns is None else patterns:
        if isinstance(item, URLResolver):
            ns = namespace
            if item.namespace:
                ns = f"{namespace}:{item.namespace}" if namespace else item.namespace
            yield from iter_patterns(item.url_patterns, ns)
        elif isinstance(item, URLPattern) and item.name:
            yield (f"{namespace}:{item.name}" if namespace else item.name), item


@pytest.fixture
def world():
    """Two causes (public, private), a partner A with an action, a partner B with another."""
    public = ConsultationFactory()
    proposal = ProposalFactory(consultation=public)
    pending = ProposalFactory(consultation=public, status=Proposal.Status.PENDING)
    run = EngineRun.objects.create(consultation=public, status=EngineRun.Status.DONE)
    public.current_run = run
    public.save(update_fields=["current_run"])

    member = UserFactory()
    private_cause = CauseFactory(kind=Cause.Kind.PRIVATE_CONSULTATION, title="Conseil secret")
    private_cause.members.add(member)
    private = ConsultationFactory(
        cause=private_cause, question="Question confidentielle zx81?", slug="confidentiel-zx81"
    )
    secret = ProposalFactory(consultation=private, content="Il faut la proposition cachée zx81")
    private_run = EngineRun.objects.create(consultation=private, status=EngineRun.Status.DONE)
    private.current_run = private_run
    private.save(update_fields=["current_run"])

    partner_a = PartnerFactory()
    membership = MembershipFactory(partner=partner_a)
    action_a = ActionFactory(owner=partner_a, plan__cause=public.cause)
    objective_a = ObjectiveFactory(action=action_a)
    action_b = ActionFactory(owner=PartnerFactory(), plan__cause=public.cause)
    objective_b = ObjectiveFactory(action=action_b)

    staff = UserFactory(is_staff=True, is_superuser=True)
    staff.user_permissions.add(Permission.objects.get(codename="moderate_proposal"))
    return {
        "public": public,
        "proposal": proposal,
        "pending": pending,
        "run": run,
        "private": private,
        "private_run": private_run,
        "secret": secret,
        "member": member,
        "partner_a": partner_a,
        "partner_user": membership.user,
        "action_a": action_a,
        "objective_a": objective_a,
        "action_b": action_b,
        "objective_b": objective_b,
        "users": {
            "anonymous": None,
            "citizen": UserFactory(),
            "partner": membership.user,
            "staff": staff,
        },
    }


def kwargs_for(name, pattern, world, *, consultation=None, proposal=None, run=None):
    """Plausible URL arguments for ``name``: real objects of ``world`` where the view needs one."""
    consultation = consultation or world["public"]
    proposal = proposal or world["proposal"]
    run = run or world["run"]
    namespace = name.split(":")[0] if ":" in name else ""
    converters = dict(getattr(pattern.pattern, "converters", {}))
    params = set(converters) | set(pattern.pattern.regex.groupindex)
    values = {}
    for param in params:
        if param == "slug":
            values[param] = {
                "causes": consultation.cause.slug,
                "actions": consultation.cause.slug,
                "partners": world["partner_a"].slug,
            }.get(namespace, consultation.slug)
        elif param == "pk":
            values[param] = {
                "consensus": run.pk,
                "actions": world["action_a"].pk,
                "partners": world["action_a"].pk,
                "moderation": world["pending"].pk,
            }.get(namespace, proposal.pk)
        elif param == "objective_pk":
            values[param] = world["objective_a"].pk
        elif param == "dataset":
            values[param] = "proposals"
        elif param == "fmt":
            values[param] = "csv"
        elif param in {"object_id", "id"}:
            values[param] = "1"
        elif param == "app_label":
            values[param] = "consultations"
        elif param == "uidb36":
            values[param] = "1"
        elif param in {"key", "token", "path", "url"}:
            values[param] = "x-y"
        else:
            values[param] = "1" if converters.get(param).__class__.__name__ == "IntConverter" else "x"
    return values


def build_urls(world, **objects):
    urls, unbuildable = {}, []
    for name, pattern in iter_patterns():
        try:
            urls[name] = reverse(name, kwargs=kwargs_for(name, pattern, world, **objects) or None)
        except NoReverseMatch:
            unbuildable.append(name)
    return urls, unbuildable


def row_counts():
    return {
        model._meta.label: model._default_manager.count()
        for model in apps.get_models()
        if model._meta.managed and not model._meta.proxy
    }


def request_all(client, user, urls, *, methods=("get", "hx", "post")):
    """{(name, method): response} for every URL, the role logged in again before each."""
    results = {}
    for name, url in urls.items():
        for method in methods:
            if method == "post" and name in NOT_POSTED:
                continue
            if method != "get" and name.startswith("admin:"):
                continue  # Django's admin: its own tests; a plain GET of each page is enough here
            if user is not None:
                client.force_login(user)
            if method == "get":
                response = client.get(url)
            elif method == "hx":
                response = client.get(url, **HX)
            else:
                response = client.post(url, {}, **HX) if method == "hx-post" else client.post(url, {})
            results[(name, method)] = response
    return results


def test_every_named_url_can_be_built_for_the_checks(world):
    _urls, unbuildable = build_urls(world)
    assert not unbuildable, f"teach kwargs_for() these URL arguments: {unbuildable}"


@pytest.mark.parametrize("role", ROLES)
def test_no_url_answers_a_server_error_to_any_role(world, role):
    urls, _ = build_urls(world)
    results = request_all(Client(raise_request_exception=False), world["users"][role], urls)
    errors = {key: r.status_code for key, r in results.items() if r.status_code >= 500}
    assert not errors, errors


@pytest.mark.parametrize("role", ["anonymous", "citizen", "partner"])
def test_staff_only_urls_refuse_everyone_else_and_change_nothing(world, role):
    urls, _ = build_urls(world)
    staff_urls = {name: url for name, url in urls.items() if STAFF_ONLY.match(name)}
    assert any(name.startswith("moderation:") for name in staff_urls)
    assert any(name.startswith("consensus:") for name in staff_urls)
    before = row_counts()
    client = Client(raise_request_exception=False)
    results = request_all(client, world["users"][role], staff_urls, methods=("get", "hx", "post"))
    leaks = {}
    for (name, method), response in results.items():
        if "login" in response.get("HX-Redirect", ""):
            continue  # an HTMX request sent to the login page (HttpResponseClientRedirect)
        if response.status_code not in REFUSED:
            leaks[(name, method)] = response.status_code
        elif response.status_code == 302:
            location = response["Location"]
            if "login" not in location:
                leaks[(name, method)] = f"302 to {location}"
    assert not leaks, leaks
    after = row_counts()
    changed = {label: (before[label], after[label]) for label in before if before[label] != after[label]}
    # Logging the role in again writes sessions; nothing else may change.
    changed.pop("sessions.Session", None)
    assert not changed, changed


def test_account_pages_send_anonymous_visitors_to_login(world):
    urls, _ = build_urls(world)
    client = Client(raise_request_exception=False)
    checked = 0
    for name, url in urls.items():
        if not LOGIN_ONLY.match(name):
            continue
        for headers in ({}, HX):
            response = client.get(url, **headers)
            location = response.get("Location", "") or response.get("HX-Redirect", "")
            assert response.status_code in REFUSED | {200}, (name, response.status_code)
            assert "login" in location or response.status_code in {403, 404, 405}, (name, location)
            checked += 1
    assert checked >= 4


def test_staff_reach_the_staff_pages(world):
    urls, _ = build_urls(world)
    client = Client(raise_request_exception=False)
    client.force_login(world["users"]["staff"])
    for name in ("moderation:queue", "consensus:runs", "admin:index", "metrics"):
        if name in urls:
            assert client.get(urls[name]).status_code == 200, name
    assert client.get(reverse("admin:consultations_voteburstflag_changelist")).status_code == 200


@pytest.mark.parametrize("role", ["anonymous", "citizen"])
def test_partner_spaces_refuse_non_members(world, role):
    """(Staff see every partner's space by design.)"""
    urls, _ = build_urls(world)
    client = Client(raise_request_exception=False)
    for name, url in urls.items():
        if not PARTNER_ONLY.match(name):
            continue
        for method in ("get", "post"):
            if world["users"][role] is not None:
                client.force_login(world["users"][role])
            response = client.get(url, **HX) if method == "get" else client.post(url, {})
            assert response.status_code in REFUSED, (name, method, response.status_code)


def test_partner_a_cannot_reach_partner_b_actions(world):
    client = Client(raise_request_exception=False)
    client.force_login(world["partner_user"])
    own = reverse("partners:space_action", args=[world["action_a"].pk])
    assert client.get(own).status_code == 200
    before = row_counts()
    for url, data in (
        (reverse("partners:space_action", args=[world["action_b"].pk]), None),
        (reverse("partners:space_status", args=[world["action_b"].pk]), {"status": "done"}),
        (
            reverse("partners:space_measurement", args=[world["objective_b"].pk]),
            {"value": "50", "measured_on": "2026-01-01"},
        ),
    ):
        response = client.post(url, data) if data else client.get(url)
        assert response.status_code in {403, 404}, (url, response.status_code)
        response = client.get(url, **HX) if not data else client.post(url, data, **HX)
        assert response.status_code in {403, 404, 405}, (url, response.status_code)
    changed = {k: v for k, v in row_counts().items() if before[k] != v}
    changed.pop("sessions.Session", None)
    assert not changed, changed


# Private consultations --------------------------------------------------------------------------

SECRETS = ("zx81", "Conseil secret")


@pytest.mark.parametrize("role", ["anonymous", "citizen", "partner"])
def test_a_private_consultation_leaks_nowhere(world, role):
    """Every URL, built for the public consultation and for the private one, with the search
    and similar-proposals queries aimed at the private proposal: no answer shows it."""
    urls = {}
    public, _ = build_urls(world)
    private, _ = build_urls(
        world, consultation=world["private"], proposal=world["secret"], run=world["private_run"]
    )
    for name, url in public.items():
        urls[f"{name} (public)"] = url
    for name, url in private.items():
        urls[f"{name} (private)"] = url
    searches = {
        # The queries name words of the private proposal, not the marker searched in answers.
        "search": reverse("consultations:detail", args=[world["public"].slug]) + "?q=cach%C3%A9e",
        "similar": reverse("consultations:similar", args=[world["public"].slug])
        + "?content=Il+faut+la+proposition+cach%C3%A9e",
        "home": "/",
        "cause": world["private"].cause.get_absolute_url(),
        "api search": "/api/consultations/?q=confidentielle",
    }
    urls.update(searches)
    client = Client(raise_request_exception=False)
    user = world["users"][role]
    leaks = []
    for name, url in urls.items():
        for headers in ({}, HX):
            if user is not None:
                client.force_login(user)
            response = client.get(url, **headers)
            body = b"".join(response) if response.streaming else response.content
            text = body.decode("utf-8", "replace")
            if response.status_code < 400 and any(secret in text for secret in SECRETS):
                leaks.append((name, url, response.status_code))
    assert not leaks, leaks


def test_members_see_their_private_consultation(world):
    client = Client()
    client.force_login(world["member"])
    response = client.get(world["private"].get_absolute_url())
    assert response.status_code == 200 and "zx81" in response.content.decode()
    # ...and non-members get a 404, not a 403 that would confirm it exists.
    client.force_login(world["users"]["citizen"])
    assert client.get(world["private"].get_absolute_url()).status_code == 404


def test_a_moderator_cannot_decide_outside_their_consultations(world):
    """Moderator scope: assigned to another consultation, every moderation URL on the public
    consultation's pending proposal changes nothing (full coverage in
    tests/consultations/test_moderation_scope.py)."""
    from accounts.models import AuditEntry
    from consultations.models import ModeratorAssignment

    moderator = UserFactory(is_staff=True)
    moderator.user_permissions.add(Permission.objects.get(codename="moderate_proposal"))
    ModeratorAssignment.objects.create(moderator=moderator, consultation=ConsultationFactory())
    pending = world["pending"]
    client = Client(raise_request_exception=False)
    client.force_login(moderator)
    for name in ("moderation:decide", "moderation:edit", "moderation:skip"):
        try:
            url = reverse(name, args=[pending.pk])
        except NoReverseMatch:
            continue
        for data in ({"decision": "accept"}, {"decision": "refuse", "reason": "off_topic"}, {}):
            response = client.post(url, {**data, "content": "Il faut autre chose"}, **HX)
            assert response.status_code < 500, (name, response.status_code)
    pending.refresh_from_db()
    assert pending.status == Proposal.Status.PENDING
    assert pending.content == world["pending"].content
    assert not AuditEntry.objects.filter(actor=moderator).exists()
