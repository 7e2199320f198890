"""The 404 page: the site's own, translated, with the reason when a view wrote one for the visitor.

Views raise ``NotFound(_("..."))`` for a reason worth reading ("Staff moved every proposal of this
idea into other ideas.", "There is no page 9: the ideas fill 3."). Any other 404 (an unknown URL,
``get_object_or_404``, an internal ``Http404("No such action.")``) shows the generic text only:
those messages are neither translated nor meant for visitors.
"""

from django.http import Http404
from django.shortcuts import render


class NotFound(Http404):
    """A 404 whose message is written for the visitor, translated; the 404 page shows it."""


def page_not_found(request, exception=None):
    reason = str(exception) if isinstance(exception, NotFound) else ""
    return render(request, "404.html", {"reason": reason}, status=404)
