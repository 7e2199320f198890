"""Refuse requests whose parameters hold a NUL character, with a clear 400.

PostgreSQL text cannot hold NUL (0x00): a query string such as ``?q=a%00b`` reaching a
``filter(content__icontains=q)`` would fail inside the database driver with a 500. Django's
form fields already refuse it; this covers every raw ``request.GET``/``request.POST`` read too,
for every view (found by tests/test_fuzz.py).
"""

from django.http import HttpResponseBadRequest
from django.utils.translation import gettext as _


def _has_nul(querydict) -> bool:
    return any("\x00" in key or any("\x00" in v for v in values) for key, values in querydict.lists())


class RejectNulBytesMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if _has_nul(request.GET) or (request.method == "POST" and _has_nul(request.POST)):
            return HttpResponseBadRequest(
                _("Bad request: the text sent contains a NUL character, which is not allowed."),
                content_type="text/plain; charset=utf-8",
            )
        return self.get_response(request)
