"""Structured logs: a request id per HTTP request and a JSON-lines formatter (``LOG_FORMAT=json``).

``RequestIdMiddleware`` takes the request id from the ``X-Request-ID`` header set by the proxy
(when it looks sane) or makes one, keeps it in a context variable for the request's log records
and sends it back in the response's ``X-Request-ID`` header. ``RequestIdFilter`` copies it onto
every record (``record.request_id``, "-" outside a request). ``JsonFormatter`` writes one JSON
object per line: time, level, logger, message, request id, and inside a Celery task its name and
id; the ``extra={...}`` fields of a call are kept. Inside a request, records also carry
``client_ip_hash`` (``accounts.privacy.ip_hash``): no log line holds a client IP.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import traceback
import uuid
from datetime import UTC, datetime

from accounts.privacy import ip_hash

_request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
# The client's keyed IP hash (accounts/privacy.py); logs never hold the IP itself.
_client_ip_hash: contextvars.ContextVar[str] = contextvars.ContextVar("client_ip_hash", default="")
_SAFE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
HEADER = "HTTP_X_REQUEST_ID"


def current_request_id() -> str:
    return _request_id.get()


class RequestIdMiddleware:
    """Give each request an id (``request.request_id``), log it, and return it as a header."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        incoming = request.META.get(HEADER, "")
        request_id = incoming if _SAFE_ID.match(incoming) else uuid.uuid4().hex
        request.request_id = request_id
        token = _request_id.set(request_id)
        request.client_ip_hash = ip_hash(request)
        client_token = _client_ip_hash.set(request.client_ip_hash)
        try:
            response = self.get_response(request)
        finally:
            _client_ip_hash.reset(client_token)
            _request_id.reset(token)
        response.headers.setdefault("X-Request-ID", request_id)
        return response


class RequestIdFilter(logging.Filter):
    def filter(self, record):
        if not hasattr(record, "request_id"):
            record.request_id = _request_id.get()
        # django.request logs a 4xx/5xx after the middleware returned, with extra={"request": …}
        client = _client_ip_hash.get() or getattr(getattr(record, "request", None), "client_ip_hash", "")
        if client and not hasattr(record, "client_ip_hash"):
            record.client_ip_hash = client  # a JSON field of the line (never the IP)
        return True


# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message",
    "asctime",
    "request_id",
    "taskName",
}


def _current_task():
    try:
        from celery._state import get_current_task
    except ImportError:  # pragma: no cover - celery is a dependency
        return None
    return get_current_task()


class JsonFormatter(logging.Formatter):
    """One JSON object per line; never raises on odd ``extra`` values (they become strings)."""

    def format(self, record):
        entry = {
            "time": datetime.fromtimestamp(record.created, tz=UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "process": record.process,
        }
        request_id = getattr(record, "request_id", _request_id.get())
        if request_id and request_id != "-":
            entry["request_id"] = request_id
        task = _current_task()
        if task is not None and getattr(task, "request", None) is not None and task.request.id:
            entry["task"] = task.name
            entry["task_id"] = task.request.id
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc_info"] = "".join(traceback.format_exception(*record.exc_info)).rstrip()
        if record.stack_info:
            entry["stack_info"] = record.stack_info
        return json.dumps(entry, default=str, ensure_ascii=False)
