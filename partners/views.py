from django.shortcuts import get_object_or_404, render

from causes.selectors import cause_visible_list

from .models import Partner


def partner_detail(request, slug):
    partner = get_object_or_404(Partner, slug=slug)
    causes = cause_visible_list(user=request.user).filter(cause_partners__partner=partner).distinct()
    return render(request, "partners/partner_detail.html", {"partner": partner, "causes": causes})
