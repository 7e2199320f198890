"""IP addresses are kept only as keyed hashes (accounts/privacy.py)."""

import runpy
from datetime import date, timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest
from django.test import RequestFactory

from accounts.privacy import client_ip, ip_hash

ROOT = Path(__file__).resolve().parents[2]
IP = "203.0.113.42"


def request(**meta):
    return RequestFactory().get("/", **meta)


def test_the_hash_is_stable_within_a_day_and_hides_the_ip():
    first = ip_hash(IP)
    assert first == ip_hash(IP) == ip_hash(request(REMOTE_ADDR=IP))
    assert len(first) == 32 and int(first, 16) >= 0
    assert IP not in first and "203" not in first[:3]
    assert ip_hash("203.0.113.43") != first


def test_the_key_rotates_every_day_unless_told_otherwise(settings):
    monday, tuesday = date(2026, 11, 23), date(2026, 11, 24)
    assert ip_hash(IP, day=monday) != ip_hash(IP, day=tuesday)
    settings.CONCORDE_IP_HASH_DAILY_SALT = False
    assert ip_hash(IP, day=monday) == ip_hash(IP, day=tuesday)


def test_the_hash_depends_on_the_secret_key(settings):
    """A keyed HMAC: without SECRET_KEY nobody can hash the 2^32 IPv4 addresses to reverse it."""
    import hashlib

    before = ip_hash(IP)
    assert before not in {hashlib.sha256(IP.encode()).hexdigest()[:32], hashlib.md5(IP.encode()).hexdigest()}
    settings.SECRET_KEY = "another-secret-key-for-this-test-only"
    assert ip_hash(IP) != before


def test_equivalent_spellings_of_one_address_hash_alike():
    assert ip_hash("::ffff:203.0.113.42") == ip_hash(IP) == ip_hash(f" {IP}:51234 ")
    assert ip_hash("2001:db8:0:0:0:0:0:1") == ip_hash("2001:db8::1") == ip_hash("[2001:db8::1]:443")


@pytest.mark.parametrize("bad", ["", None, "not an ip", "999.1.1.1", "1.2.3.4.5", "<script>"])
def test_a_missing_or_malformed_address_gives_an_empty_hash(bad):
    assert ip_hash(bad if bad is not None else "") == ""
    assert ip_hash(request(REMOTE_ADDR=bad or "")) == ""


def test_forwarded_for_is_ignored_unless_proxies_are_trusted(settings):
    spoofed = request(REMOTE_ADDR="10.0.0.1", HTTP_X_FORWARDED_FOR=f"6.6.6.6, {IP}")
    assert client_ip(spoofed) == "10.0.0.1"
    settings.CONCORDE_TRUSTED_PROXIES = 1
    assert client_ip(spoofed) == IP  # the hop the proxy wrote, not the client-written left part
    assert ip_hash(spoofed) == ip_hash(IP)
    settings.CONCORDE_TRUSTED_PROXIES = 3  # fewer hops than proxies: fall back on REMOTE_ADDR
    assert client_ip(spoofed) == "10.0.0.1"


def test_no_code_reads_the_client_address_except_the_privacy_module():
    """IPs never stored in clear: REMOTE_ADDR / X-Forwarded-For are read in accounts/privacy.py only."""
    offenders = []
    for app in ("accounts", "actions", "causes", "config", "consensus", "consultations", "partners"):
        for path in (ROOT / app).rglob("*.py"):
            if path.name == "privacy.py" and path.parent.name == "accounts":
                continue
            text = path.read_text()
            if "REMOTE_ADDR" in text or "HTTP_X_FORWARDED_FOR" in text:
                offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []


@pytest.mark.parametrize("log_format", ["plain", "json"])
def test_gunicorn_access_logs_carry_the_hash_not_the_ip(monkeypatch, log_format):
    monkeypatch.setenv("LOG_FORMAT", log_format)
    conf = runpy.run_path(str(ROOT / "config" / "gunicorn.conf.py"))
    logger_class = conf["logger_class"]
    assert issubclass(logger_class, conf["PrivateAccessLogger"])
    logger = logger_class.__new__(logger_class)  # atoms() needs no configured handlers
    environ = {"REMOTE_ADDR": IP, "REQUEST_METHOD": "GET", "RAW_URI": "/", "PATH_INFO": "/",
               "QUERY_STRING": "", "SERVER_PROTOCOL": "HTTP/1.1"}  # fmt: skip
    resp = SimpleNamespace(status="200 OK", sent=10, headers=[("X-Request-ID", "abc")])
    atoms = logger.atoms(resp, SimpleNamespace(headers=[]), environ, timedelta(milliseconds=5))
    line = conf["access_log_format"] % _Atoms(atoms)
    assert ip_hash(IP) in line and IP not in line


class _Atoms(dict):
    """gunicorn's SafeAtoms in short: unknown atoms render as "-"."""

    def __getitem__(self, key):
        return super().get(key.lower() if key.startswith("{") else key, "-")


@pytest.mark.django_db
def test_json_logs_of_a_request_carry_the_ip_hash_not_the_ip(client):
    import io
    import json
    import logging

    from config.observability import JsonFormatter, RequestIdFilter

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("django.request")
    logger.addHandler(handler)
    try:
        assert client.get("/no-such-page/", REMOTE_ADDR=IP).status_code == 404
    finally:
        logger.removeHandler(handler)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert lines and all(line["client_ip_hash"] == ip_hash(IP) for line in lines)
    assert IP not in stream.getvalue()
