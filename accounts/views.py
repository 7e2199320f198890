import json

from django.contrib import messages
from django.contrib.auth import logout
from django.contrib.auth.decorators import login_required
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.utils.translation import gettext as _
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST

from . import selectors, services
from .forms import AccountEraseForm


def _render_my_data(request, form, *, status=200):
    return render(
        request,
        "accounts/my_data.html",
        {"summary": selectors.account_data_summary(user=request.user), "form": form},
        status=status,
    )


@require_GET
@login_required
@never_cache
def my_data(request):
    """What Concorde holds about the signed-in citizen: download it, or erase the account."""
    return _render_my_data(request, AccountEraseForm(user=request.user))


@require_GET
@login_required
@never_cache
def my_data_download(request):
    data = selectors.account_data_export(user=request.user)
    body = json.dumps(data, cls=selectors.ExportEncoder, ensure_ascii=False, indent=2)
    response = HttpResponse(body, content_type="application/json; charset=utf-8")
    filename = f"concorde-my-data-{timezone.localdate():%Y-%m-%d}.json"
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


@require_POST
@login_required
def account_erase(request):
    """POST only: erase the account after the confirmation form, then log out."""
    form = AccountEraseForm(request.POST, user=request.user)
    if not form.is_valid():
        return _render_my_data(request, form, status=400)
    try:
        services.account_erase(user=request.user, reason="self")
    except services.AccountError:
        logout(request)
        return redirect("home")
    logout(request)  # flushes the session (and with it any participant key)
    messages.success(
        request,
        _("Your account has been deleted. Your votes remain counted anonymously."),
    )
    return redirect("home")
