"""gunicorn settings for the ``web`` process of the Procfile, read from the environment.

    gunicorn config.wsgi:application -c config/gunicorn.conf.py

WEB_BIND (default 0.0.0.0:$PORT, PORT 8000), WEB_CONCURRENCY (worker processes, default 2),
WEB_THREADS (threads per worker, default 1 = sync workers; above 1 = gthread workers, pair with
DB_POOL_MAX_SIZE >= WEB_THREADS), WEB_TIMEOUT (seconds, default 30), WEB_MAX_REQUESTS (recycle a
worker after N requests, default 2000, 0 = never), FORWARDED_ALLOW_IPS (proxies trusted for
X-Forwarded-*, default 127.0.0.1), WEB_CONTROL_SOCKET (path of gunicorn's control socket; off
by default). Access logs go to stdout, as JSON lines when LOG_FORMAT=json, with the client IP
replaced by its keyed hash (accounts/privacy.py) and the request id (X-Request-ID response header) either way. Command-line flags override these.
"""

import json
import os


def _int(name, default):
    value = os.environ.get(name, "")
    return int(value) if value.strip() else default


bind = os.environ.get("WEB_BIND") or f"0.0.0.0:{os.environ.get('PORT', '8000')}"
workers = _int("WEB_CONCURRENCY", 2)
threads = _int("WEB_THREADS", 1)
worker_class = "gthread" if threads > 1 else "sync"
timeout = _int("WEB_TIMEOUT", 30)
graceful_timeout = _int("WEB_GRACEFUL_TIMEOUT", 20)
keepalive = 5
max_requests = _int("WEB_MAX_REQUESTS", 2000)
max_requests_jitter = max_requests // 10
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")
# gunicorn's control socket (`gunicornc`) defaults to one path per user, which two gunicorns on a
# host would share: off unless WEB_CONTROL_SOCKET names a path for this one.
if os.environ.get("WEB_CONTROL_SOCKET"):
    control_socket = os.environ["WEB_CONTROL_SOCKET"]
else:
    control_socket_disable = True
if os.path.isdir("/dev/shm"):
    worker_tmp_dir = "/dev/shm"  # heartbeat file off the (possibly slow) disk

accesslog = "-"
from gunicorn.glogging import Logger  # noqa: E402


def _client_ip_hash(environ):
    """The client's keyed IP hash (accounts/privacy.py): access logs never hold an IP in clear."""
    try:
        from types import SimpleNamespace

        from accounts.privacy import ip_hash

        return ip_hash(SimpleNamespace(META=environ)) or "-"
    except Exception:  # Django not set up in this process: log nothing rather than the IP
        return "-"


class PrivateAccessLogger(Logger):
    """The "h" atom (remote address) is replaced by the client's IP hash."""

    def atoms(self, resp, req, environ, request_time):
        atoms = super().atoms(resp, req, environ, request_time)
        atoms["h"] = _client_ip_hash(environ)
        return atoms


logger_class = PrivateAccessLogger
if os.environ.get("LOG_FORMAT", "plain").strip().lower() == "json":

    class JsonAccessLogger(PrivateAccessLogger):
        """Escapes every atom for JSON, so that a quote in a path or user agent stays valid."""

        def atoms(self, resp, req, environ, request_time):
            escaped = {}
            for key, value in super().atoms(resp, req, environ, request_time).items():
                if isinstance(value, str):
                    value = json.dumps(value, ensure_ascii=False)[1:-1]
                escaped[key] = value
            return escaped

    logger_class = JsonAccessLogger
    access_log_format = (
        '{"time":"%(t)s","level":"INFO","logger":"gunicorn.access","client_ip_hash":"%(h)s",'
        '"method":"%(m)s","path":"%(U)s","query":"%(q)s","status":%(s)s,"bytes":"%(B)s",'
        '"duration_ms":%(M)s,"user_agent":"%(a)s","request_id":"%({x-request-id}o)s"}'
    )
else:
    access_log_format = '%(h)s %(t)s "%(r)s" %(s)s %(B)s %(M)sms "%(a)s" rid=%({x-request-id}o)s'
