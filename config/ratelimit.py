"""Rate limits per client IP (hashed) and per account, counted in the cache (Redis in production).

The counting is django-ratelimit's (fixed windows, one atomic ``INCR`` per limit and request);
this module only says *what* is limited and answers a clear, translated 429.

- Rates come from ``settings.CONCORDE_RATELIMITS`` (``{"vote": {"ip": "300/m", "user":
  "60/m"}, ...}``), each read from the environment in config/settings.py
  (``CONCORDE_RATELIMIT_VOTE``, ``CONCORDE_RATELIMIT_VOTE_USER``, ...). A rate is
  ``"<count>/<period>"`` with a period such as ``s``, ``m``, ``h``, ``d`` or ``5m``; an empty
  rate turns that limit off.
- The IP key is ``client_network_hash(request)``, the keyed hash of the client's address (for
  IPv6, of its /64 network, ``CONCORDE_RATELIMIT_IPV6_PREFIX``: one subscriber gets a whole /64
  and could otherwise rotate addresses past any limit). The address itself never reaches
  Redis; django-ratelimit hashes the key once more into its cache key.
- The "user" key is the account, or for an anonymous visitor their browser session's
  participant key (bots that drop cookies are held by the IP limit).
- The cache failing (Redis down) fails *open*: a vote must never be lost because the rate
  limiter could not count it (docs/reliability.md). The failure is logged.

``django_ratelimit`` is deliberately not in INSTALLED_APPS: its system check rejects the local
memory cache of a newcomer's setup and does not know Django's own Redis backend, which
supports the atomic increment it needs.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
from http import HTTPStatus

from django.conf import settings
from django.shortcuts import render
from django.utils.cache import patch_vary_headers
from django.utils.translation import gettext as _
from django_ratelimit.core import get_usage

from accounts.privacy import client_ip, ip_hash

logger = logging.getLogger(__name__)

SESSION_PARTICIPANT = "concorde_participant"  # consultations.services.SESSION_PARTICIPANT


def client_network_hash(request) -> str:
    """``ip_hash`` of the client's IPv4 address, or of its IPv6 /64 network; "" when unknown."""
    ip = client_ip(request)
    if not ip:
        return ""
    address = ipaddress.ip_address(ip)
    if address.version == 6:
        prefix = int(getattr(settings, "CONCORDE_RATELIMIT_IPV6_PREFIX", 64))
        ip = str(ipaddress.IPv6Network(f"{ip}/{prefix}", strict=False).network_address)
    return ip_hash(ip)


def _ip_key(group, request) -> str:
    return client_network_hash(request) or "unknown"


def _user_key(group, request) -> str | None:
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated:
        return f"user:{user.pk}"
    session = getattr(request, "session", None)
    participant = session.get(SESSION_PARTICIPANT) if session is not None else None
    return f"session:{participant}" if participant else None


KEYS = {"ip": _ip_key, "user": _user_key}


def rates_for(action: str) -> dict[str, str]:
    return {
        scope: rate
        for scope, rate in getattr(settings, "CONCORDE_RATELIMITS", {}).get(action, {}).items()
        if rate
    }


def rate_limit_hit(request, action: str) -> int | None:
    """Count one ``action`` for this request against every configured limit.

    Returns None when the request is within its limits, else the seconds until the earliest
    window that refused it ends (for ``Retry-After``). Every limit is counted, also after one
    refused, so a client hammering from one IP with many accounts is held by both.
    """
    retry_after = None
    for scope, rate in rates_for(action).items():
        keyfn = KEYS[scope]
        if keyfn(action, request) is None:
            continue
        try:
            usage = get_usage(
                request, group=f"concorde:{action}:{scope}", key=keyfn, rate=rate, increment=True
            )
        except Exception:  # a cache outage must not turn a vote into a 500
            logger.warning("rate limit %s/%s not counted: cache unavailable", action, scope)
            continue
        if usage and usage["should_limit"]:
            wait = max(1, int(usage["time_left"]))
            retry_after = wait if retry_after is None else min(retry_after, wait)
    return retry_after


def too_many_requests(request, *, retry_after: int | None = None):
    """The 429 answer: a page, or for HTMX an alert swapped into ``#htmx-alerts``."""
    context = {
        "message": _(
            "You are going too fast: too many requests in a short time. "
            "Please wait a moment, then try again."
        ),
        "retry_after": retry_after,
    }
    htmx = bool(getattr(request, "htmx", False))
    template = "429.html#alert" if htmx else "429.html"
    response = render(request, template, context, status=HTTPStatus.TOO_MANY_REQUESTS)
    if htmx:
        response["HX-Retarget"] = "#htmx-alerts"
        response["HX-Reswap"] = "innerHTML"
    if retry_after:
        response["Retry-After"] = str(retry_after)
    patch_vary_headers(response, ["HX-Request"])
    return response


def rate_limited(action: str, *, methods=("POST",)):
    """View decorator: count ``action`` on each request of ``methods`` and answer 429 beyond it.

    Put it under ``require_POST`` and friends and above nothing that writes: the limit is
    checked before the view runs, so a refused request stores nothing.
    """

    def decorator(view):
        @functools.wraps(view)
        def wrapper(request, *args, **kwargs):
            if request.method in methods:
                retry_after = rate_limit_hit(request, action)
                if retry_after is not None:
                    logger.info("rate limited: %s (%s)", action, client_network_hash(request))
                    return too_many_requests(request, retry_after=retry_after)
            return view(request, *args, **kwargs)

        return wrapper

    return decorator


try:  # allauth's own limits (login, signup, password reset) key on the hashed IP too.
    from allauth.account.adapter import DefaultAccountAdapter
except ImportError:  # pragma: no cover
    DefaultAccountAdapter = object


class HashedIpAccountAdapter(DefaultAccountAdapter):
    """allauth's adapter, with the client IP replaced by its keyed hash.

    allauth puts the client IP in its rate-limit cache keys; this keeps it out of Redis.
    (The IP is otherwise only used in allauth's optional e-mail notifications, which are off.)
    """

    def get_client_ip(self, request) -> str:
        return client_network_hash(request) or "unknown"
