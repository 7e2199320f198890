from django.shortcuts import get_object_or_404, render

from consultations.selectors import consultation_visible_list

from .selectors import cause_visible_list


def cause_detail(request, slug):
    cause = get_object_or_404(cause_visible_list(user=request.user), slug=slug)
    consultations = consultation_visible_list(user=request.user).filter(cause=cause)
    partners = cause.cause_partners.select_related("partner")
    return render(
        request,
        "causes/cause_detail.html",
        {"cause": cause, "consultations": consultations, "partners": partners},
    )
