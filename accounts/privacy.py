"""IP addresses are never stored or logged in clear: keep `ip_hash(request)` instead.

`ip_hash` is a keyed HMAC-SHA256 of the client IP. The key is derived from ``SECRET_KEY`` (Django's
``salted_hmac`` with a fixed salt), so nobody without the secret can rebuild the table of the
4 billion IPv4 hashes and reverse it, unlike a plain SHA-256. With ``CONCORDE_IP_HASH_DAILY_SALT``
(on by default) the key also includes the UTC date: the same IP gives the same hash all day (rate
limits, burst flagging, "many votes from one address" checks keep working within a day), but
hashes of two different days cannot be linked, so a stored hash stops identifying a visitor's
history after midnight. Rotating ``SECRET_KEY`` changes every hash too (docs/privacy.md).

`client_ip(request)` reads ``REMOTE_ADDR``; behind a reverse proxy set ``CONCORDE_TRUSTED_PROXIES``
to the number of proxies in front of the app, and the client IP is then taken that many hops from
the right of ``X-Forwarded-For`` (the left part of that header is written by the client and can
be forged).
"""

from __future__ import annotations

import ipaddress
from datetime import UTC, date, datetime

from django.conf import settings
from django.utils.crypto import salted_hmac

_SALT = "concorde.accounts.privacy.ip_hash"
HASH_LENGTH = 32  # hex characters kept (128 bits): collisions are negligible at any realistic scale


def client_ip(request) -> str:
    """The client's IP address as a normalised string, or "" when unknown or malformed.

    Honours ``CONCORDE_TRUSTED_PROXIES`` (int, default 0): with N trusted proxies, the Nth address
    from the right of ``X-Forwarded-For`` is the client's.
    """
    meta = getattr(request, "META", {}) or {}
    candidate = meta.get("REMOTE_ADDR", "") or ""
    trusted = int(getattr(settings, "CONCORDE_TRUSTED_PROXIES", 0) or 0)
    if trusted > 0:
        forwarded = [part.strip() for part in meta.get("HTTP_X_FORWARDED_FOR", "").split(",")]
        forwarded = [part for part in forwarded if part]
        if len(forwarded) >= trusted:
            candidate = forwarded[-trusted]
    return _normalise(candidate)


def _normalise(value) -> str:
    value = str(value or "").strip()
    if value.startswith("[") and "]" in value:  # "[::1]:8000" → "::1"
        value = value[1 : value.index("]")]
    elif value.count(":") == 1:  # "1.2.3.4:5678" → "1.2.3.4"
        value = value.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return ""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    return address.compressed


def ip_hash(request_or_ip, *, day: date | None = None) -> str:
    """A keyed, non-reversible hash (32 hex characters) of a client IP, the only form of an IP that
    Concorde stores or logs.

    `request_or_ip` is an HttpRequest (its `client_ip`) or an IP string. Equal IPs give equal
    hashes within one UTC day (or forever when ``CONCORDE_IP_HASH_DAILY_SALT`` is false); `day`
    picks another day's key (tests, or recomputing yesterday's hash). Returns "" when the IP is
    missing or is not a valid address, so callers can store it as-is and treat "" as "unknown".
    """
    ip = _normalise(request_or_ip) if isinstance(request_or_ip, str) else client_ip(request_or_ip)
    if not ip:
        return ""
    key_salt = _SALT
    if getattr(settings, "CONCORDE_IP_HASH_DAILY_SALT", True):
        day = day or datetime.now(UTC).date()
        key_salt = f"{_SALT}:{day.isoformat()}"
    return salted_hmac(key_salt, ip, algorithm="sha256").hexdigest()[:HASH_LENGTH]
