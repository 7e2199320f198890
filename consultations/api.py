"""Read-only JSON API of published results, and the open-data export downloads.

- ``/api/consultations/``: public consultations (paginated);
- ``/api/consultations/<slug>/``: one consultation, its counters, its published run and links;
- ``.../ideas/``, ``.../proposals/``, ``.../scores/``: paginated (``?page=``, ``?page_size=``);
- ``.../export/<dataset>.<csv|parquet>``: the open-data files (consultations.exports).

The JSON endpoints serve public consultations only (active or archived causes that are not
private), whoever asks; their bodies are cached for ``CONCORDE_API_CACHE_SECONDS`` under a key
that includes the published run, so publishing a run shows at once. Visibility is checked
before the cache is read, so a consultation made private disappears at once too. Exports
follow the site's visibility instead: members of a private consultation (and staff) may
download its files, nobody else. Errors are JSON: ``{"error": {"status": 404, "message": ...}}``.
"""

from __future__ import annotations

import hashlib
import logging
import math

from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from django.core.cache import cache
from django.db.models import Prefetch
from django.http import Http404, JsonResponse, StreamingHttpResponse
from django.urls import reverse
from django.utils.cache import patch_cache_control
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET

from consensus.models import Idea, IdeaMembership, ProposalScore
from consensus.selectors import consultation_current_run

from . import exports
from .models import Consultation, Proposal
from .selectors import (
    consultation_get_for_user,
    consultation_stats,
    consultation_visible_list,
    proposal_vote_shares,
)

logger = logging.getLogger(__name__)

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 200


class ApiError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def error_response(status: int, message: str) -> JsonResponse:
    return JsonResponse({"error": {"status": status, "message": message}}, status=status)


def _api_view(view):
    """GET only; ApiError and Http404 become JSON errors; the view returns a dict or a response."""

    def wrapper(request, *args, **kwargs):
        if request.method not in ("GET", "HEAD"):
            response = error_response(405, _("Only GET is allowed: this API is read-only."))
            response["Allow"] = "GET, HEAD"
            return response
        try:
            result = view(request, *args, **kwargs)
        except ApiError as exc:
            return error_response(exc.status, exc.message)
        except Http404:
            return error_response(404, _("Not found."))
        return result

    wrapper.__name__ = view.__name__
    wrapper.__doc__ = view.__doc__
    return wrapper


def cache_seconds() -> int:
    return int(getattr(settings, "CONCORDE_API_CACHE_SECONDS", 60))


def _cached_json(request, key_extra: str, build) -> JsonResponse:
    """``build()``'s dict as JSON, cached per URL (path and query) and ``key_extra``."""
    ttl = cache_seconds()
    raw = f"{request.path}?{request.GET.urlencode()}|{key_extra}"
    key = "api:v1:" + hashlib.sha256(raw.encode()).hexdigest()
    data = None
    if ttl:
        try:
            data = cache.get(key)
        except Exception:  # noqa: BLE001 - a cache outage must not break the API
            logger.warning("api cache get failed", exc_info=True)
    if data is None:
        data = build()
        if ttl:
            try:
                cache.set(key, data, ttl)
            except Exception:  # noqa: BLE001
                logger.warning("api cache set failed", exc_info=True)
    response = JsonResponse(data, json_dumps_params={"ensure_ascii": False})
    if ttl:
        patch_cache_control(response, public=True, max_age=ttl)
    return response


def _int_param(request, name: str, default: int, *, minimum: int = 1, maximum: int | None = None):
    value = request.GET.get(name, "")
    if value == "":
        return default
    try:
        number = int(value)
    except ValueError:
        raise ApiError(
            400, _("“%(name)s” must be a whole number.") % {"name": name}
        ) from None
    if number < minimum or (maximum is not None and number > maximum):
        if maximum is None:
            message = _("“%(name)s” must be at least %(min)d.") % {"name": name, "min": minimum}
        else:
            message = _("“%(name)s” must be between %(min)d and %(max)d.") % {
                "name": name,
                "min": minimum,
                "max": maximum,
            }
        raise ApiError(400, message)
    return number


def _paginate(request, qs, serialize) -> dict:
    """One page of ``qs`` (already ordered) as {count, page, pages, next, previous, results}."""
    page = _int_param(request, "page", 1)
    size = _int_param(request, "page_size", DEFAULT_PAGE_SIZE, maximum=MAX_PAGE_SIZE)
    count = qs.count()
    pages = max(1, math.ceil(count / size))
    if page > pages:
        raise ApiError(
            404, _("Page %(page)d does not exist: there are %(pages)d.") % {"page": page, "pages": pages}
        )
    items = list(qs[(page - 1) * size : page * size])

    def link(number):
        query = request.GET.copy()
        query["page"] = number
        return request.build_absolute_uri(f"{request.path}?{query.urlencode()}")

    return {
        "count": count,
        "page": page,
        "pages": pages,
        "page_size": size,
        "next": link(page + 1) if page < pages else None,
        "previous": link(page - 1) if page > 1 else None,
        "results": serialize(items),
    }


def public_consultations():
    """Consultations the API serves: those an anonymous visitor sees."""
    return consultation_visible_list(user=AnonymousUser())


def _public_consultation(slug: str) -> Consultation:
    consultation = public_consultations().filter(slug=slug).first()
    if consultation is None:
        raise ApiError(404, _("No public consultation “%(slug)s”.") % {"slug": slug[:100]})
    return consultation


def _published_run(consultation):
    run = consultation_current_run(consultation=consultation)
    if run is None:
        raise ApiError(404, _("This consultation has no published results yet."))
    return run


def _dt(value):
    return value.isoformat() if value else None


def _consultation_summary(request, consultation: Consultation) -> dict:
    return {
        "slug": consultation.slug,
        "question": consultation.question,
        "cause": {"slug": consultation.cause.slug, "title": consultation.cause.title},
        "language": consultation.language,
        "phase": consultation.phase,
        "starts_at": _dt(consultation.starts_at),
        "ends_at": _dt(consultation.ends_at),
        "results_published": consultation.current_run_id is not None,
        "url": request.build_absolute_uri(
            reverse("api:consultation", kwargs={"slug": consultation.slug})
        ),
    }


@_api_view
def consultation_list(request):
    """Public consultations, newest first."""

    def build():
        qs = public_consultations().order_by("-starts_at", "pk")
        return _paginate(
            request, qs, lambda items: [_consultation_summary(request, c) for c in items]
        )

    return _cached_json(request, "", build)


@_api_view
def consultation_detail(request, slug):
    consultation = _public_consultation(slug)

    def build():
        data = _consultation_summary(request, consultation)
        data["description"] = consultation.description
        data["attribution"] = consultation.cause.data_attribution
        data["stats"] = consultation_stats(consultation=consultation)
        run = consultation_current_run(consultation=consultation)
        data["published_run"] = (
            None
            if run is None
            else {
                "id": run.pk,
                "kind": run.kind,
                "finished_at": _dt(run.finished_at),
                "model_name": run.model_name,
                "metrics": run.metrics or {},
            }
        )

        def url(name, **kwargs):
            return request.build_absolute_uri(
                reverse(name, kwargs={"slug": consultation.slug, **kwargs})
            )

        data["links"] = {
            "ideas": url("api:ideas"),
            "proposals": url("api:proposals"),
            "scores": url("api:scores"),
        }
        data["exports"] = {
            name: {fmt: url("api:export", dataset=name, fmt=fmt) for fmt in exports.FORMATS}
            for name in exports.DATASETS
        }
        return data

    return _cached_json(request, str(consultation.current_run_id or 0), build)


@_api_view
def idea_list(request, slug):
    """Ideas of the published run, largest first, with their most central proposals."""
    consultation = _public_consultation(slug)
    run = _published_run(consultation)

    def serialize(ideas):
        return [
            {
                "number": idea.number,
                "label": idea.label,
                "keywords": idea.keywords,
                "size": idea.size,
                "share": idea.share,
                "scores": idea.scores or {},
                # the stored label, as in the CSV and open data: the JSON is cached for every
                # language, so no translated "Theme <n>" for a theme without one
                "theme": {"number": idea.theme.number, "label": idea.theme.label}
                if idea.theme
                else None,
                "central_proposals": [
                    {"id": m.proposal_id, "content": m.proposal.content}
                    for m in idea.central[:3]
                ],
            }
            for idea in ideas
        ]

    def build():
        central = (
            IdeaMembership.objects.filter(
                run=run, is_central=True, proposal__status=Proposal.Status.ACCEPTED
            )
            .select_related("proposal")
            .order_by("-similarity")
        )
        qs = (
            Idea.objects.filter(run=run, size__gt=0)  # not an idea staff emptied
            .select_related("theme")
            .defer("centroid")
            .order_by("-size", "number")
            .prefetch_related(Prefetch("memberships", queryset=central, to_attr="central"))
        )
        data = _paginate(request, qs, serialize)
        data["run_id"] = run.pk
        return data

    return _cached_json(request, str(run.pk), build)


@_api_view
def proposal_list(request, slug):
    """Accepted proposals (oldest first) with their vote counts, idea and votes at the source
    (or null); ``?idea=<number>``."""
    consultation = _public_consultation(slug)
    run = consultation_current_run(consultation=consultation)
    idea = request.GET.get("idea", "")
    if idea:
        if run is None:
            raise ApiError(404, _("This consultation has no published results yet."))
        idea = _int_param(request, "idea", 0, minimum=0)

    def serialize(proposals):
        ids = [p.pk for p in proposals]
        shares = proposal_vote_shares(proposal_ids=ids)
        ideas = {}
        if run is not None:
            ideas = dict(
                IdeaMembership.objects.filter(run=run, proposal_id__in=ids).values_list(
                    "proposal_id", "idea__number"
                )
            )
        out = []
        for p in proposals:
            votes = shares[p.pk]
            out.append(
                {
                    "id": p.pk,
                    "content": p.content,
                    "created_at": _dt(p.created_at),
                    "origin": p.origin,
                    "votes": {key: votes[key] for key in ("agree", "disagree", "neutral", "total")},
                    "idea": ideas.get(p.pk),
                    "at_source": (
                        {"votes": support.votes, "share_for": support.adhesion}
                        if (support := p.source_support)
                        else None
                    ),
                }
            )
        return out

    def build():
        qs = Proposal.objects.filter(
            consultation=consultation, status=Proposal.Status.ACCEPTED
        ).only("pk", "content", "created_at", "origin", "source_votes", "source_adhesion")
        if idea != "":
            qs = qs.filter(idea_memberships__run=run, idea_memberships__idea__number=idea)
        return _paginate(request, qs.order_by("pk"), serialize)

    return _cached_json(request, str(run.pk if run else 0), build)


@_api_view
def score_list(request, slug):
    """Scores of the published run, best first; ``?zone=consensus|rejection|...``."""
    consultation = _public_consultation(slug)
    run = _published_run(consultation)
    zone = request.GET.get("zone", "")
    if zone and zone not in ProposalScore.Zone.values:
        raise ApiError(
            400,
            _("Unknown zone “%(zone)s”: choose one of %(choices)s.")
            % {"zone": zone[:40], "choices": ", ".join(ProposalScore.Zone.values)},
        )

    def serialize(scores):
        return [
            {
                "proposal": {"id": s.proposal_id, "content": s.proposal.content},
                **{name: getattr(s, name) for name in exports.SCORE_FIELDS},
            }
            for s in scores
        ]

    def build():
        qs = ProposalScore.objects.filter(
            run=run, proposal__status=Proposal.Status.ACCEPTED
        ).select_related("proposal")
        if zone:
            qs = qs.filter(zone=zone)
        data = _paginate(request, qs.order_by("-top_score", "proposal_id"), serialize)
        data["run_id"] = run.pk
        return data

    return _cached_json(request, str(run.pk), build)


@require_GET
def export(request, slug, dataset, fmt):
    """An open-data file, streamed. Members of a private consultation may download it."""
    try:
        consultation = consultation_get_for_user(slug=slug, user=request.user)
    except Http404:
        return error_response(404, _("No consultation “%(slug)s”.") % {"slug": slug[:100]})
    try:
        chunks, content_type, filename = exports.export_stream(
            consultation=consultation,
            dataset=dataset,
            fmt=fmt,
            dimension=request.GET.get("dimension", ""),
        )
    except exports.ExportError as exc:
        return error_response(exc.status, str(exc))
    response = StreamingHttpResponse(chunks, content_type=content_type)
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    if consultation.cause.is_private:
        patch_cache_control(response, private=True, no_store=True)
    return response


def not_found(request, path=""):
    return error_response(404, _("No such API endpoint."))
