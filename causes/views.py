from django.shortcuts import get_object_or_404, render

from consensus.selectors import consultation_highlights, shared_ideas_across
from consultations.selectors import consultation_stats, consultation_visible_list

from .selectors import cause_visible_list


def cause_detail(request, slug):
    """A cause: its consultations, each with its counters and what came out of it so far."""
    cause = get_object_or_404(cause_visible_list(user=request.user), slug=slug)
    consultations = consultation_visible_list(user=request.user).filter(cause=cause)
    partners = cause.cause_partners.select_related("partner")
    cards = [
        (c, consultation_stats(consultation=c), consultation_highlights(consultation=c))
        for c in consultations
    ]
    # the same ideas in several of its consultations (several countries, years or questions)
    shared = shared_ideas_across(consultations=consultations) if len(cards) > 1 else []
    return render(
        request,
        "causes/cause_detail.html",
        {"cause": cause, "consultations": cards, "partners": partners, "shared": shared},
    )
