"""Public results of a consultation's current engine run: ideas, opinion groups, method, CSV, segments.

Visibility follows ``consultation_get_for_user`` (private consultations are 404 for outsiders),
checked on every request, partials included, before anything is read from the cache.

Caching: the sections computed from a run (ideas with their charts, opinion groups with their
map, method card) and each segment table are rendered once and kept in the cache (Redis in
production) under a key made of the consultation, its *current run id*, the section, the
segment and the language. Publishing another run changes the key, so nothing needs deleting;
``CONCORDE_RESULTS_CACHE_SECONDS`` bounds how long an entry lives (the vote shares and segment
cells read live counters). What a visitor's word search found (each idea's proposals that say
the words) is kept the same way, under a generation token that an idea renamed or proposals
moved renew (``saying_cache_prefix``). A warm page costs one query (the consultation, with its
current run id); a cache outage falls back to computing. The live counters come from the cached
``consultation_stats``: the page only peeks at the cache (counting distinct voters reads every
vote), the ``?part=counters`` partial computes them, and HTMX polls it while the consultation is
open.
"""

import csv
import hashlib
import logging
import re
import time

from django.conf import settings
from django.core.cache import cache
from django.core.paginator import EmptyPage, PageNotAnInteger, Paginator
from django.db.models import prefetch_related_objects
from django.db.models.query import Prefetch
from django.http import HttpResponseBadRequest, StreamingHttpResponse
from django.shortcuts import render
from django.template.loader import render_to_string
from django.utils import translation
from django.utils.cache import patch_vary_headers
from django.utils.http import urlencode
from django.utils.text import slugify
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django.views.decorators.http import require_GET

from actions.selectors import action_public_by_idea
from config.errors import NotFound
from config.ratelimit import rate_limit_hit, too_many_requests
from consultations.exports import download_links
from consultations.models import Participant, Proposal
from consultations.selectors import (
    consultation_get_for_user,
    consultation_stats,
    consultation_visible_list,
    stats_cache_key,
)
from consultations.services import participant_peek
from partners.selectors import idea_positions

from . import charts, selectors
from .forms import IdeasViewForm, ProposalSearchForm
from .models import Idea, IdeaMembership
from .services import min_zone_votes

logger = logging.getLogger(__name__)

# 2: the largest ideas section; 3: keywords, idea links, method; 4: the votes at the source;
# 5: the agreement score, and the categories in the method; 6: the open data section
RESULTS_CACHE_VERSION = 6
PARTS = ("counters",)

CENTRAL_PER_IDEA = 3
IDEAS_PER_ZONE = 10  # the CSV lists every idea
LARGEST_IDEAS = 12  # ideas shown by size, votes or not
IDEAS_PER_PAGE = 24  # the page of every idea
PROPOSALS_PER_PAGE = 50  # the page of one idea
SEGMENT_TOP_IDEAS = 5

DIMENSION_LABELS = {
    "age_range": gettext_lazy("Age range"),
    "gender": gettext_lazy("Gender"),
    "postal_area": gettext_lazy("Postal area"),
}
SEGMENT_VALUE_LABELS = {
    "age_range": dict(Participant.AgeRange.choices),
    "gender": dict(Participant.Gender.choices),
    "postal_area": {},
}

CSV_HEADER = [
    "idea",
    "label",
    "zone",
    "proposals",
    "share",
    "agreement",
    "disagreement",
    "trusted_votes",
    "sequence_votes",
    "group_consensus",
    "keywords",
    "theme",
    "theme_label",
    "source_votes",
    "source_adhesion",
]


def _attach_central(ideas: list[Idea], run) -> None:
    """One query: each idea gets ``central`` = its (at most 3) most central proposals."""
    central = (
        IdeaMembership.objects.filter(
            run=run, is_central=True, proposal__status=Proposal.Status.ACCEPTED
        )
        .select_related("proposal")
        .order_by("-similarity")
    )
    prefetch_related_objects(
        ideas, Prefetch("memberships", queryset=central, to_attr="central_all")
    )
    for idea in ideas:
        idea.central = idea.central_all[:CENTRAL_PER_IDEA]
        idea.central_others = selectors.central_besides_label(idea, idea.central)


def _zoned_ideas(run) -> dict[str, list[Idea]]:
    """The run's ideas by zone (ranked by ``selectors.key_ideas``) with their central proposals."""
    zoned = selectors.key_ideas(run=run, limit=IDEAS_PER_ZONE)
    _attach_central([i for group in zoned.values() for i in group], run)
    return zoned


def _csv_cell(value):
    """Defuse spreadsheet formulas in free text."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return "" if value is None else value


class _Echo:
    def write(self, value):
        return value


def _csv_response(consultation, run):
    ideas = selectors.run_ideas_by_size(run=run).values_list(
        "number", "label", "size", "share", "scores", "keywords", "theme__number", "theme__label"
    )

    def rows():
        writer = csv.writer(_Echo())
        yield writer.writerow(CSV_HEADER)
        for number, label, size, share, scores, keywords, theme, theme_label in ideas.iterator(
            chunk_size=2_000
        ):
            scores = scores or {}
            yield writer.writerow(
                [
                    number,
                    _csv_cell(label),
                    scores.get("zone") or "",
                    size,
                    round(share, 4),
                    _csv_cell(scores.get("agreement")),
                    _csv_cell(scores.get("disagreement")),
                    _csv_cell(scores.get("trusted_votes")),
                    _csv_cell(scores.get("sequence_votes")),
                    _csv_cell(scores.get("group_consensus")),
                    _csv_cell("; ".join(keywords or [])),
                    _csv_cell(theme),
                    _csv_cell(theme_label),
                    _csv_cell(scores.get("source_votes")),
                    _csv_cell(scores.get("source_adhesion")),
                ]
            )

    filename = f"{slugify(consultation.slug)[:80] or 'consultation'}-results-run-{run.pk}.csv"
    response = StreamingHttpResponse(rows(), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


def _segment_table(run, zoned, dimension: str) -> dict:
    """Per-segment agreement of the top ideas' central proposals; suppressed cells stay None."""
    k = int(getattr(settings, "CONSENSUS_MIN_SEGMENT_SIZE", 10))
    top = [i for group in zoned.values() for i in group][:SEGMENT_TOP_IDEAS]
    proposal_ids = [m.proposal_id for idea in top for m in idea.central]
    scores = selectors.segment_scores(
        run_or_consultation=run, dimension=dimension, k=k, proposal_ids=proposal_ids
    )
    segments = sorted({seg for per in scores.values() for seg in per})
    value_labels = SEGMENT_VALUE_LABELS.get(dimension, {})
    columns = [(seg, value_labels.get(seg, seg)) for seg in segments]
    rows = []
    for idea in top:
        for membership in idea.central:
            per = scores.get(membership.proposal_id, {})
            cells = []
            for seg in segments:
                cell = per.get(seg)
                cells.append(
                    None if cell is None else {**cell, "percent": round(100 * cell["agreement"])}
                )
            rows.append({"idea": idea, "proposal": membership.proposal, "cells": cells})
    return {"columns": columns, "rows": rows, "k": k}


# Cache ------------------------------------------------------------------------------------------


def results_cache_key(*, consultation_id: int, run_id: int, section: str, extra: str = "") -> str:
    """Key of a rendered results section: a new current run (or language) is a new key."""
    language = translation.get_language() or settings.LANGUAGE_CODE
    return (
        f"results:v{RESULTS_CACHE_VERSION}:{consultation_id}:{run_id}:{section}:{extra}:{language}"
    )


def _search_generation_key(consultation_id: int, run_id: int) -> str:
    return f"results:v{RESULTS_CACHE_VERSION}:{consultation_id}:{run_id}:search-generation"


def saying_cache_prefix(run) -> str | None:
    """Prefix of the keys of ``run``'s cached word searches, or None when the cache is down.

    Searches are as many as the words visitors type, too many to delete one by one: their keys
    hold a generation token, which ``results_cache_forget`` drops, so that the next search
    draws a new one and reads the proposals again."""
    key = _search_generation_key(run.consultation_id, run.pk)
    try:
        generation = cache.get_or_set(key, time.time_ns, None)
    except Exception:  # noqa: BLE001 - a cache outage must not break the page
        logger.warning("results cache get failed", exc_info=True)
        return None
    return f"results:v{RESULTS_CACHE_VERSION}:{run.consultation_id}:{run.pk}:saying:{generation}"


def results_cache_forget(*, consultation_id: int, run_id: int) -> None:
    """Drop a run's cached sections, segment tables (in every language) and word searches (an
    idea renamed, proposals moved)."""
    keys = [_search_generation_key(consultation_id, run_id)]
    for language, _name in settings.LANGUAGES:
        with translation.override(language):
            keys.append(
                results_cache_key(
                    consultation_id=consultation_id, run_id=run_id, section="sections"
                )
            )
            keys += [
                results_cache_key(
                    consultation_id=consultation_id, run_id=run_id, section="segment", extra=d
                )
                for d in selectors.SEGMENT_DIMENSIONS
            ]
    try:
        cache.delete_many(keys)
    except Exception:  # noqa: BLE001 - a cache outage must not break the caller
        logger.warning("results cache delete failed", exc_info=True)


# HTML's own whitespace only: Python's \s also matches the no-break spaces French puts before
# ":" and "?", which must not become places to wrap the line
_SPACES = re.compile(r"[ \t\n\r\f]+")


def _compact(html: str) -> str:
    """Runs of whitespace as one space: the browser renders them alike (no <pre> here), and the
    cached sections are about a third smaller. No-break spaces stay."""
    return _SPACES.sub(" ", html)


def _cache_ttl() -> int:
    return int(getattr(settings, "CONCORDE_RESULTS_CACHE_SECONDS", 600))


def _cache_get(key: str):
    """The cached value, or None (none, the cache turned off or down: logged)."""
    if not _cache_ttl():
        return None
    try:
        return cache.get(key)
    except Exception:  # noqa: BLE001 - a cache outage must not break the page
        logger.warning("results cache get failed", exc_info=True)
        return None


def _cache_set(key: str, value) -> None:
    if ttl := _cache_ttl():
        try:
            cache.set(key, value, ttl)
        except Exception:  # noqa: BLE001
            logger.warning("results cache set failed", exc_info=True)


def _cached(key: str, build):
    """``build()`` through the cache; a cache error (Redis down) computes and logs."""
    value = _cache_get(key)
    if value is None:
        value = build()
        _cache_set(key, value)
    return value


ZONES = (
    ("consensual", gettext_lazy("Key ideas"), gettext_lazy("Most participants agree.")),
    (
        "controversial",
        gettext_lazy("Controversial ideas"),
        gettext_lazy("Participants are divided."),
    ),
    ("rejected", gettext_lazy("Rejected ideas"), gettext_lazy("Most participants disagree.")),
)


def _decorate(ideas: list[Idea], run, consultation) -> None:
    """Central proposals, vote-share bar and public actions on each idea: three queries."""
    idea_ids = sorted({i.pk for i in ideas})
    _attach_central(ideas, run)
    counts = selectors.run_idea_vote_counts(run=run, idea_ids=idea_ids)
    actions = action_public_by_idea(consultation=consultation, idea_ids=idea_ids)
    for idea in ideas:
        idea.shares = charts.share_bar(counts.get(idea.pk))
        idea.public_actions = actions.get(idea.pk, [])


def _build_sections(consultation, run) -> dict[str, str]:
    """The run's sections rendered to HTML: ideas (with vote-share bars), groups (with map),
    method, and the open data's files."""
    # Ideas by zone (ranked by ``selectors.key_ideas``) need votes; the largest ideas show what
    # the engine found before anyone votes. An idea may be in both lists (two objects).
    zoned = selectors.key_ideas(run=run, limit=IDEAS_PER_ZONE)
    largest = selectors.largest_ideas(run=run, limit=LARGEST_IDEAS)
    # ideas of imported proposals, by the votes they received where they were made
    min_votes = min_zone_votes()  # for a category, and for the votes at the source
    at_source = selectors.ideas_by_support_at_source(
        run=run, min_votes=min_votes, limit=IDEAS_PER_ZONE
    )
    _decorate(
        [i for group in zoned.values() for i in group]
        + largest
        + at_source["most"]
        + at_source["least"],
        run,
        consultation,
    )
    # themes of a single idea say nothing: the section shows from two themes up
    themes = [theme for theme in selectors.run_themes(run=run) if theme.size]
    themes = themes if len(themes) >= 2 else []
    widest = max((theme.share for theme in themes), default=0.0)
    for theme in themes:
        theme.bar = max(1, round(100 * theme.share / widest)) if widest else 0
    groups = selectors.run_opinion_groups(run=run)
    for group in groups:
        group.style = charts.group_style(group.number)
        group.swatch = charts.marker_path(group.style["shape"], 8, 8, 5)
    opinion_map = (
        charts.opinion_map(selectors.run_opinion_map(run=run, grid=charts.MAP_GRID), groups)
        if groups
        else None
    )
    metrics = run.metrics or {}
    context = {
        "consultation": consultation,
        "run": run,
        "zones": [(zone, title, help_text, zoned[zone]) for zone, title, help_text in ZONES],
        "largest": largest,
        "supported": at_source["most"],
        "unsupported": at_source["least"],
        "min_votes": min_votes,
        "themes": themes,
        "any_zoned": any(zoned.values()),
        "n_ideas": largest[0].n_published if largest else 0,
        "groups": groups,
        "map": opinion_map,
        "n_votes": metrics.get("n_votes"),
        "n_participants": metrics.get("n_participants"),
        "model_label": selectors.model_label(run.model_name) if run.model_name else None,
        "n_proposals": metrics.get("n_proposals"),
        "n_unique_texts": metrics.get("n_unique_texts"),
        "n_noise": metrics.get("n_noise"),
        "exposure": selectors.exposure_summary(run=run),
        "weighting": selectors.weighting_summary(run=run, min_votes=min_votes),
    }
    template = "consensus/_results_sections.html"
    sections = {
        name: _compact(render_to_string(f"{template}#{name}", context)).strip()
        for name in ("ideas", "source_nav", "themes", "groups", "weighting", "method")
    }
    downloads = [
        {**dataset, "files": [(DIMENSION_LABELS.get(d, ""), urls) for d, urls in dataset["files"]]}
        for dataset in download_links(consultation=consultation, grouped=bool(groups))
    ]
    sections["open_data"] = _compact(
        render_to_string(
            "consensus/_open_data.html", {"consultation": consultation, "downloads": downloads}
        )
    ).strip()
    return sections


def results_sections(*, consultation, run_id: int) -> dict[str, str] | None:
    """Cached HTML of the run's sections; None when the run is not (or no longer) published."""

    def build():
        run = selectors.consultation_current_run(consultation=consultation)
        if run is None or run.pk != run_id:
            return None
        return _build_sections(consultation, run)

    key = results_cache_key(consultation_id=consultation.pk, run_id=run_id, section="sections")
    return _cached(key, build)


def results_segment_html(*, consultation, run_id: int, dimension: str) -> str:
    """Cached HTML of the segment table of ``dimension`` (k-anonymous cells)."""

    def build():
        run = selectors.consultation_current_run(consultation=consultation)
        segment = _segment_table(run, _zoned_ideas(run), dimension) if run else None
        return _compact(
            render_to_string("consensus/_results_sections.html#segment_table", {"segment": segment})
        )

    key = results_cache_key(
        consultation_id=consultation.pk, run_id=run_id, section="segment", extra=dimension
    )
    return _cached(key, build)


# Views ------------------------------------------------------------------------------------------


def _bad_request(message: str):
    response = HttpResponseBadRequest(message, content_type="text/plain; charset=utf-8")
    patch_vary_headers(response, ("HX-Request",))
    return response


def _counters_context(consultation, *, peek: bool = False) -> dict:
    """Live counters. ``peek``: only what the cache holds (None otherwise), for the page.

    Counting distinct voters reads every vote (about a second on 2M votes): the page never
    waits for it; when the cached figures have expired it loads them by HTMX instead.
    """
    if peek and getattr(settings, "CONCORDE_STATS_CACHE_SECONDS", 30):
        try:
            stats = cache.get(stats_cache_key(consultation))
        except Exception:  # noqa: BLE001 - Redis down: let the partial compute them
            logger.warning("stats cache peek failed", exc_info=True)
            stats = None
    else:
        stats = consultation_stats(consultation=consultation)
    return {
        "consultation": consultation,
        "stats": stats,
        "poll_seconds": int(getattr(settings, "CONCORDE_RESULTS_POLL_SECONDS", 15)),
    }


@require_GET
def results(request, slug):
    consultation = consultation_get_for_user(slug=slug, user=request.user)
    dimension = request.GET.get("dimension", "")
    part = request.GET.get("part", "")
    if dimension and dimension not in selectors.SEGMENT_DIMENSIONS:
        return _bad_request(
            _("Unknown segment “%(dimension)s”: choose one of %(choices)s.")
            % {"dimension": dimension[:40], "choices": ", ".join(selectors.SEGMENT_DIMENSIONS)}
        )
    if part and part not in PARTS:
        return _bad_request(
            _("Unknown part “%(part)s”: choose one of %(choices)s.")
            % {"part": part[:40], "choices": ", ".join(PARTS)}
        )
    htmx = getattr(request, "htmx", False)

    if part == "counters":
        response = render(
            request, "consensus/results.html#counters", _counters_context(consultation)
        )
        patch_vary_headers(response, ("HX-Request",))
        return response

    run_id = consultation.current_run_id
    if run_id and request.GET.get("format") == "csv":
        run = selectors.consultation_current_run(consultation=consultation)
        if run is not None:
            return _csv_response(consultation, run)

    segment_html = (
        results_segment_html(consultation=consultation, run_id=run_id, dimension=dimension)
        if run_id and dimension
        else ""
    )
    context = {
        "consultation": consultation,
        "dimension": dimension,
        "dimensions": list(DIMENSION_LABELS.items()),
        "segment_html": segment_html,
    }
    if htmx and "dimension" in request.GET:
        response = render(request, "consensus/results.html#segments", context)
    else:
        sections = results_sections(consultation=consultation, run_id=run_id) if run_id else None
        context.update(_counters_context(consultation, peek=True))
        context["sections"] = sections
        if sections:  # the visitor's own group, outside the sections every visitor shares
            context["your_group"] = selectors.participant_group(
                run_id=run_id, participant=participant_peek(request)
            )
        context["per_zone"] = IDEAS_PER_ZONE
        response = render(request, "consensus/results.html", context)
    patch_vary_headers(response, ("HX-Request",))
    return response


@require_GET
def results_ideas(request, slug):
    """Every idea of the published run, largest first, a page at a time; ``?theme=<number>``:
    the ideas of one theme; ``?q=<words>``: those whose proposals say them, the most first
    (rate-limited: a pass over the proposals, about 1 s at 2M)."""
    consultation = consultation_get_for_user(slug=slug, user=request.user)
    run = selectors.consultation_current_run(consultation=consultation)
    if run is None:
        raise NotFound(_("The results are not available yet: the votes have not been analysed."))
    ideas, theme, words, error = ideas_filtered_or_error(
        request, run, selectors.run_ideas_by_size(run=run), rate_limit="search"
    )
    if error:
        return error
    page, error = ideas_page_or_error(request, ideas)
    if error:
        return error
    ideas = list(page.object_list)
    _decorate(ideas, run, consultation)
    context = {
        "consultation": consultation,
        "run": run,
        "page": page,
        "ideas": ideas,
        "theme": theme,
        "words": words,
        "query": filters_query(theme, words),
    }
    return render(request, "consensus/results_ideas.html", context)


def page_or_error(request, paginator: Paginator, no_such_page: str):
    """The requested page, or the response that says why there is none: 400 for a page that
    is not a number, 404 (``no_such_page`` % page, pages) for one out of range."""
    try:
        return paginator.page(request.GET.get("page", 1)), None
    except PageNotAnInteger:
        return None, _bad_request(_("The page must be a whole number."))
    except EmptyPage:
        raise NotFound(
            no_such_page % {"page": request.GET.get("page", "")[:12], "pages": paginator.num_pages}
        ) from None


def theme_filter_or_error(request, run, ideas):
    """``(ideas, theme, error)``: the ideas of the theme ``?theme=<number>`` names, or all of
    them (theme None) without it; error is the 400 response for a number that is not a whole
    number (a theme the run lacks: 404)."""
    if "theme" not in request.GET:
        return ideas, None, None
    number = request.GET["theme"]
    if not number.isascii() or not number.isdigit():
        return ideas, None, _bad_request(_("The theme must be a whole number."))
    theme = selectors.run_theme_get(run=run, number=int(number))
    return ideas.filter(theme=theme), theme, None


def ideas_filtered_or_error(request, run, ideas, *, rate_limit: str | None = None):
    """``(ideas, theme, words, error)``: ``ideas`` (``run``'s) of the theme ``?theme=`` names
    and, with ``?q=<words>``, those whose proposals say them, the most first
    (`selectors.ideas_saying`). error: the 400 for bad input (an unknown theme raises 404), or
    the 429 once the ``rate_limit`` action is over its limit (a search reads every proposal).

    With ``rate_limit`` (the public page), what a search found is cached per run and words
    (``saying_cache_prefix``): a search already made, or its next page, reads no proposal and
    counts against no limit. Staff searches (no limit) always read the proposals as they are."""
    words, error = search_words_or_error(request)
    if error:
        return ideas, None, "", error
    ideas, theme, error = theme_filter_or_error(request, run, ideas)
    if error or not words:
        return ideas, theme, words, error
    counts = None
    if rate_limit:
        prefix = saying_cache_prefix(run)
        key = prefix and f"{prefix}:{hashlib.sha256(words.encode()).hexdigest()}"
        counts = _cache_get(key) if key else None
        if counts is None:
            if (retry_after := rate_limit_hit(request, rate_limit)) is not None:
                return ideas, theme, words, too_many_requests(request, retry_after=retry_after)
            counts = selectors.proposals_saying(run=run, words=words)
            if key:
                _cache_set(key, counts)
    return selectors.ideas_saying(ideas, run=run, words=words, counts=counts), theme, words, None


def filters_query(theme, words: str) -> str:
    """The query string that keeps a list of ideas' theme and words (for its pager)."""
    kept = {"theme": theme.number} if theme else {}
    if words:
        kept["q"] = words
    return urlencode(kept)


def search_words_or_error(request):
    """``(words, error)``: the words ``?q=`` looks for in the proposals ("" for none), or the
    400 response that says why they cannot be (too long, a NUL character)."""
    form = ProposalSearchForm(request.GET)
    if not form.is_valid():
        return "", _bad_request(" ".join(form.errors["q"]))
    return form.cleaned_data["q"], None


def ideas_view_or_error(request):
    """``(compact, error)``: whether ``?view=list`` asks for the ideas as a compact list, or
    the 400 response that says which views there are."""
    form = IdeasViewForm(request.GET)
    if not form.is_valid():
        return False, _bad_request(" ".join(form.errors["view"]))
    return form.cleaned_data["view"] == "list", None


def ideas_page_or_error(request, ideas, per_page: int | None = None):
    """``page_or_error`` for a list of ideas, ``IDEAS_PER_PAGE`` a page unless told."""
    return page_or_error(
        request,
        Paginator(ideas, per_page or IDEAS_PER_PAGE),
        _("There is no page %(page)s: the ideas fill %(pages)d."),
    )


@require_GET
def results_idea(request, slug, number):
    """One idea of the published run: its figures, then every proposal in it, a page at a time;
    ``?q=<words>``: only those that say them (rate-limited as the search of every idea)."""
    consultation = consultation_get_for_user(slug=slug, user=request.user)
    run = selectors.consultation_current_run(consultation=consultation)
    if run is None:
        raise NotFound(_("The results are not available yet: the votes have not been analysed."))
    idea = selectors.run_idea_get(run=run, number=number)
    if not idea.size:
        raise NotFound(_("Staff moved every proposal of this idea into other ideas."))
    words, error = search_words_or_error(request)
    if error:
        return error
    every = rows = selectors.idea_members(idea=idea)
    if words:
        if (retry_after := rate_limit_hit(request, "search")) is not None:
            return too_many_requests(request, retry_after=retry_after)
        rows = selectors.rows_saying(every, field="proposal__content", words=words)
    page, error = page_or_error(
        request,
        Paginator(rows, PROPOSALS_PER_PAGE),
        _("There is no page %(page)s: the idea's proposals fill %(pages)d."),
    )
    if error:
        return error
    _decorate([idea], run, consultation)
    members = selectors.rows_by_id(every, page.object_list) if words else list(page.object_list)
    scores = selectors.proposal_scores_by_id(run=run, proposal_ids=[m.proposal_id for m in members])
    for member in members:
        member.score = scores.get(member.proposal_id)
    context = {
        "consultation": consultation,
        "run": run,
        "idea": idea,
        "ideas": [idea],
        "neighbours": selectors.idea_neighbours(idea=idea),
        # the same idea in the cause's other consultations the viewer may see
        "elsewhere": selectors.idea_elsewhere(
            idea=idea,
            consultations=consultation_visible_list(user=request.user)
            .filter(cause_id=consultation.cause_id)
            .exclude(pk=consultation.pk),
        ),
        "positions": idea_positions(idea=idea),  # partners' public positions (partners app)
        "group_votes": charts.group_vote_bars(
            selectors.group_votes(
                run_id=run.pk, group_counts=(idea.scores or {}).get("group_counts")
            )
        ),
        "page": page,
        "members": members,
        "words": words,
        "query": urlencode({"q": words}) if words else "",  # what the pager's links keep
    }
    return render(request, "consensus/results_idea.html", context)
