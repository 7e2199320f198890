"""Security settings: Content-Security-Policy, CSRF on every POST (HTMX included), production
headers (HSTS, secure cookies), and secrets only from the environment.

`manage.py check --deploy` in production mode is tested in tests/test_settings.py.
"""

import os
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest
from django.test import Client
from django.urls import reverse

from .test_permissions import HX, build_urls, world  # noqa: F401 (the fixture)

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("english")]
ROOT = Path(__file__).resolve().parents[1]

# Views that take POSTs without a CSRF token on purpose, and why.
CSRF_EXEMPT = {
    # One-click unsubscribe from an e-mail (RFC 8058): the signed token is the credential.
    "actions:unfollow_email",
    "consultations:results_alert_stop",
}


class InlineCode(HTMLParser):
    """Collects what a strict Content-Security-Policy would block in a page."""

    def __init__(self):
        super().__init__()
        self.found = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "script" and not attrs.get("src") and attrs.get("type") != "application/json":
            self.found.append("<script> without src")
        if tag == "style":
            self.found.append("<style>")
        if "style" in attrs:
            self.found.append(f'style="" on <{tag}>')
        for name in attrs:
            if name.startswith("on"):
                self.found.append(f"{name}= on <{tag}>")
        href = attrs.get("href") or attrs.get("src") or attrs.get("action") or ""
        if href.strip().lower().startswith("javascript:"):
            self.found.append(f"javascript: URL on <{tag}>")


def inline_code(html: str) -> list[str]:
    parser = InlineCode()
    parser.feed(html)
    return parser.found


def test_pages_send_a_strict_content_security_policy(client):
    response = client.get("/")
    policy = response["Content-Security-Policy"]
    directives = dict(
        (part.strip().split(" ", 1) + [""])[:2] for part in policy.split(";") if part.strip()
    )
    assert directives["default-src"] == "'self'"
    assert directives["script-src"] == "'self'" and directives["style-src"] == "'self'"
    assert directives["frame-ancestors"] == "'none'" and directives["object-src"] == "'none'"
    assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
    assert response["X-Frame-Options"] == "DENY"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Referrer-Policy"] == "same-origin"


@pytest.mark.parametrize("role", ["anonymous", "staff"])
def test_no_page_needs_inline_code_that_the_policy_blocks(world, role):  # noqa: F811
    """Every page and partial (GET), as anonymous and as staff (who see the admin): no inline
    script, <style>, style="" or on*="" handler, which the policy would block."""
    urls, _ = build_urls(world)
    client = Client(raise_request_exception=False)
    user = world["users"][role]
    problems = {}
    checked = 0
    for name, url in urls.items():
        for headers in ({}, HX):
            if user is not None:
                client.force_login(user)
            response = client.get(url, **headers)
            if response.status_code != 200 or "text/html" not in response.get("Content-Type", ""):
                continue
            checked += 1
            found = inline_code(response.content.decode())
            if found:
                problems[(name, bool(headers))] = sorted(set(found))
    assert checked > 20
    assert not problems, problems


def test_htmx_is_configured_not_to_inject_its_inline_style(client):
    html = client.get("/").content.decode()
    assert "includeIndicatorStyles" in html and '"includeIndicatorStyles": false' in html


# CSRF --------------------------------------------------------------------------------------------


def test_every_post_without_a_csrf_token_is_refused(world):  # noqa: F811
    """Each URL, POSTed with a logged-in staff session but no token, plain and as HTMX: 403."""
    urls, _ = build_urls(world)
    client = Client(enforce_csrf_checks=True, raise_request_exception=False)
    accepted = {}
    for name, url in urls.items():
        for headers in ({}, HX):
            client.force_login(world["users"]["staff"])
            response = client.post(url, {"key": "agree", "content": "Il faut du pain"}, **headers)
            if response.status_code != 403:
                accepted.setdefault(name, set()).add(response.status_code)
    assert set(accepted) == CSRF_EXEMPT, accepted


def test_htmx_posts_carry_the_token_in_a_header_and_go_through(world):  # noqa: F811
    """base.html puts the token in hx-headers; HTMX sends it as X-CSRFToken."""
    client = Client(enforce_csrf_checks=True)
    proposal = world["proposal"]
    page = client.get(proposal.get_absolute_url()).content.decode()
    header = re.search(r"hx-headers='\{\"x-csrftoken\": \"([^\"]+)\"\}'", page)
    assert header, "the page has no hx-headers with the CSRF token"
    url = reverse("consultations:vote", args=[proposal.consultation.slug, proposal.pk])
    assert client.post(url, {"key": "agree"}, **HX).status_code == 403
    response = client.post(url, {"key": "agree"}, HTTP_X_CSRFTOKEN=header.group(1), **HX)
    assert response.status_code == 200
    assert proposal.votes.count() == 1


# Production settings -------------------------------------------------------------------------


def _production(code: str, **extra) -> str:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"DATABASE_URL", "SECRET_KEY", "DJANGO_ALLOW_ASYNC_UNSAFE", "REDIS_URL"}
    }
    env.update(
        DJANGO_ENV="production", SECRET_KEY="s" * 30 + "Zq8!x" * 8, ALLOWED_HOSTS="example.org"
    )
    env.update(extra)
    script = (
        "import os, django; os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'config.settings');"
        "django.setup(); from django.conf import settings;" + code
    )
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_production_sends_hsts_and_secure_cookies_and_redirects_to_https():
    out = _production(
        "from django.test import Client; c = Client();"
        "r = c.get('/i18n/setlang/', HTTP_HOST='example.org');"
        "s = c.get('/i18n/setlang/', HTTP_HOST='example.org', secure=True);"
        "print(r.status_code, r['Location']);"
        "print(s['Strict-Transport-Security']);"
        "print(settings.SESSION_COOKIE_SECURE, settings.CSRF_COOKIE_SECURE,"
        " settings.SESSION_COOKIE_HTTPONLY, settings.SECURE_PROXY_SSL_HEADER[0])"
    )
    redirect, hsts, cookies = out.splitlines()[-3:]
    assert redirect == "301 https://example.org/i18n/setlang/"
    assert re.fullmatch(r"max-age=\d+; includeSubDomains; preload", hsts)
    assert int(hsts.split("=")[1].split(";")[0]) >= 31536000
    assert cookies == "True True True HTTP_X_FORWARDED_PROTO"


def test_secrets_come_from_the_environment_only():
    """No credential is written in the settings: the production key is the one given."""
    assert _production("print(settings.SECRET_KEY)", SECRET_KEY="k" * 50) == "k" * 50
    source = (ROOT / "config" / "settings.py").read_text()
    for match in re.finditer(r"^([A-Z_]*(?:PASSWORD|SECRET|SECRET_KEY|TOKEN|API_KEY))\s*=\s*(.+)$", source, re.M):
        name, value = match.groups()
        assert value.startswith(("env(", "os.environ", "SECRET_KEY")) or "dev-only" in value, name


# Dependency audit (scripts/audit.py, run by scripts/test.sh) ------------------------------------


def _audit_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("concorde_audit", ROOT / "scripts" / "audit.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_audit_fails_on_a_known_vulnerability(monkeypatch, capsys):
    audit = _audit_module()
    report = {
        "dependencies": [
            {"name": "django", "version": "5.2.0", "vulns": [{"id": "PYSEC-X", "fix_versions": ["5.2.1"]}]},
            {"name": "redis", "version": "5.0", "vulns": []},
        ]
    }
    monkeypatch.setattr(audit, "run_audit", lambda: (report, ""))
    assert audit.main() == 1
    assert "django 5.2.0: PYSEC-X (fixed in: 5.2.1)" in capsys.readouterr().out


def test_an_unreachable_audit_database_warns_and_never_reports_clean(monkeypatch, capsys):
    audit = _audit_module()
    monkeypatch.setattr(audit, "run_audit", lambda: (None, "ConnectionError"))
    monkeypatch.setattr(audit.time, "sleep", lambda seconds: None)
    monkeypatch.delenv("CONCORDE_AUDIT_STRICT", raising=False)
    assert audit.main() == 0
    out = capsys.readouterr()
    assert "NO DEPENDENCY AUDIT WAS DONE" in out.err and "no known vulnerability" not in out.out
    monkeypatch.setenv("CONCORDE_AUDIT_STRICT", "1")
    assert audit.main() == 2
