"""Staff pages of import jobs: upload a file, watch its progress (HTMX polling), retry.

Anonymous visitors are sent to the login page (an HTMX poll gets a client redirect); signed-in
users without the ``consultations.add_importjob`` permission (staff only) get a 404, checked in
every view, partials included.
"""

from functools import wraps

from django import forms
from django.contrib import messages
from django.contrib.auth.views import redirect_to_login
from django.http import Http404, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils.cache import patch_vary_headers
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django.views.decorators.http import require_http_methods, require_POST
from django_htmx.http import HttpResponseClientRedirect, HttpResponseStopPolling

from . import imports
from .models import Consultation, ImportJob, Proposal


def import_staff_required(view):
    @wraps(view)
    def wrapper(request, *args, **kwargs):
        user = request.user
        if not user.is_authenticated:
            if getattr(request, "htmx", False):
                return HttpResponseClientRedirect(f"{reverse('account_login')}?next={request.path}")
            return redirect_to_login(request.get_full_path())
        if not (user.is_active and user.is_staff and user.has_perm("consultations.add_importjob")):
            raise Http404("No such page.")
        return view(request, *args, **kwargs)

    return wrapper


class ImportUploadForm(forms.Form):
    consultation = forms.ModelChoiceField(
        label=gettext_lazy("Consultation"),
        queryset=Consultation.objects.order_by("question"),
        to_field_name="slug",
    )
    kind = forms.ChoiceField(label=gettext_lazy("Format"), choices=ImportJob.Kind.choices)
    file = forms.FileField(
        label=gettext_lazy("File"),
        help_text=gettext_lazy("A CSV file in UTF-8, or the ZIP of a Polis export."),
    )
    update = forms.BooleanField(
        label=gettext_lazy("Update the proposals already imported"), required=False
    )
    id_column = forms.CharField(
        label=gettext_lazy("Id column (generic CSV)"), initial="id", required=False, max_length=100
    )
    text_column = forms.CharField(
        label=gettext_lazy("Text column (generic CSV)"), initial="text", required=False, max_length=100
    )
    delimiter = forms.ChoiceField(
        label=gettext_lazy("Delimiter (generic CSV)"),
        choices=[(",", ","), (";", ";"), ("tab", gettext_lazy("tab"))],
        initial=",",
        required=False,
    )
    status = forms.ChoiceField(
        label=gettext_lazy("Status of imported answers (generic CSV)"),
        choices=[
            (Proposal.Status.ACCEPTED, Proposal.Status.ACCEPTED.label),
            (Proposal.Status.PENDING, Proposal.Status.PENDING.label),
        ],
        required=False,
    )
    unmoderated = forms.ChoiceField(
        label=gettext_lazy("Unmoderated Polis comments become"),
        choices=[
            (Proposal.Status.PENDING, Proposal.Status.PENDING.label),
            (Proposal.Status.ACCEPTED, Proposal.Status.ACCEPTED.label),
        ],
        required=False,
    )
    skip_moderated_out = forms.BooleanField(
        label=gettext_lazy("Leave out comments moderated out in Polis"), required=False
    )
    conversation = forms.CharField(
        label=gettext_lazy("Polis conversation id"),
        help_text=gettext_lazy("Read from summary.csv, else from the file name, when empty."),
        required=False,
        max_length=40,
    )

    def options(self) -> dict:
        data = self.cleaned_data
        keys = (
            "update",
            "id_column",
            "text_column",
            "delimiter",
            "status",
            "unmoderated",
            "skip_moderated_out",
            "conversation",
        )
        return {key: data.get(key) for key in keys}


def _too_large(request) -> bool:
    """Refuse a body over the limit from its Content-Length, before Django reads it."""
    try:
        length = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return False
    return length > imports.import_max_bytes() + 1024 * 1024  # room for the other fields


@import_staff_required
@require_http_methods(["GET", "POST"])
def import_list(request):
    status = 200
    page_error = ""
    if request.method == "POST":
        if _too_large(request):
            form = ImportUploadForm()
            page_error = _("The file is over the limit of %(limit)d MiB.") % {
                "limit": imports.import_max_bytes() // (1024 * 1024)
            }
            status = 413
        else:
            form = ImportUploadForm(request.POST, request.FILES)
            if form.is_valid():
                try:
                    job = imports.import_job_create(
                        consultation=form.cleaned_data["consultation"],
                        kind=form.cleaned_data["kind"],
                        uploaded=form.cleaned_data["file"],
                        options=form.options(),
                        user=request.user,
                    )
                except imports.ImportUploadError as exc:
                    form.add_error("file", str(exc))
                    status = 400
                else:
                    messages.success(
                        request,
                        _("Import of %(name)s queued.") % {"name": job.original_name},
                    )
                    return redirect("imports:detail", pk=job.pk)
            else:
                status = 400
    else:
        form = ImportUploadForm(initial={"consultation": request.GET.get("consultation", "")})
    context = {
        "form": form,
        "page_error": page_error,
        "jobs": imports.import_job_list(limit=50),
        "max_mib": imports.import_max_bytes() // (1024 * 1024),
    }
    return render(request, "consultations/import_list.html", context, status=status)


@import_staff_required
@require_http_methods(["GET"])
def import_detail(request, pk):
    job = get_object_or_404(ImportJob.objects.select_related("consultation", "created_by"), pk=pk)
    context = {"job": job}
    if request.htmx:
        html = render_to_string("consultations/import_detail.html#job-body", context, request=request)
        # Finished: swap in the final state and tell htmx to stop polling.
        response = HttpResponse(html) if job.is_active else HttpResponseStopPolling(html)
    else:
        response = render(request, "consultations/import_detail.html", context)
    patch_vary_headers(response, ("HX-Request",))
    return response


@import_staff_required
@require_POST
def import_retry(request, pk):
    job = get_object_or_404(ImportJob, pk=pk)
    if imports.import_job_retry(job=job, user=request.user):
        messages.success(request, _("Import queued again."))
    else:
        messages.error(request, _("Only a failed import can be retried."))
    return redirect("imports:detail", pk=job.pk)
