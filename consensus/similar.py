"""Accepted proposals near a text by meaning, from a consultation's current engine run.

Citizens see them while they type a proposal (``consultations.selectors.proposal_similar``),
moderators beside a pending proposal (``consultations.moderation.moderation_assistance``).

The run's ideas are the index. The text is embedded with the model that made them and compared
with every idea's centre; its nearest proposals are then looked for exactly among the stored
vectors of the members of the nearest ideas, nearest first, until ``candidates_max`` vectors
(the last idea's most central members): an inverted-file index whose lists are the ideas, so a
request reads a bounded number of vectors at any size. A run with at most ``candidates_max``
vectors is searched whole (exact). Measured in ``bench/similar_search.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from consultations.models import Consultation, Proposal

from .models import EngineRun, Idea, IdeaMembership
from .selectors import stored_vectors

# Cosine a stored proposal needs to count as near: CHANCE_SDS standard deviations above the
# mean cosine of two proposals of the run drawn at random (``EngineRun.metrics["chance_cosine"]``),
# so the bar follows the model and how close the consultation's proposals are to each other.
# USE-m3 (scratch measure, session 19): on Make.org's 18,705 proposals chance is 0.170 +- 0.091,
# a bar of 0.35; on its 400 most supported, mostly about the environment, 0.249 +- 0.115, a bar
# of 0.48. Hand-written paraphrases of those proposals score 0.30-0.58; with 3 standard
# deviations instead of 2 the 400 would show none of their originals. Runs from before that
# measure: MIN_SIMILARITY.
CHANCE_SDS = 2
MIN_SIMILARITY = 0.5
N_IDEAS = 3  # nearest idea centres reported
# Vectors read per request. On Make.org's 18,690 proposals (USE-m3, 200 of them as queries,
# scratch measure), the share of the exact 5 nearest found: 0.77 with the members of the 3
# nearest ideas (1,048 vectors on average), 0.90 with 3,000 vectors, 0.94 with 5,000, 0.99
# with 10,000.
CANDIDATES_MAX = 5_000


@dataclass
class TextNeighbours:
    run: EngineRun
    proposals: list[tuple[Proposal, float]] = field(default_factory=list)  # best first
    ideas: list[tuple[Idea, float]] = field(default_factory=list)  # nearest centres first


def text_neighbours(
    *,
    consultation: Consultation,
    text: str,
    limit: int = 5,
    exclude: tuple[int, ...] = (),
    min_similarity: float | None = None,
    n_ideas: int = N_IDEAS,
    candidates_max: int = CANDIDATES_MAX,
) -> TextNeighbours | None:
    """The accepted proposals nearest to ``text`` (at least ``min_similarity``, by default the
    run's ``similarity_floor``; at most ``limit``, none of ``exclude``) and the nearest idea
    centres, in the consultation's current run. None when the engine cannot say: no finished
    run, a model this machine cannot load without a long wait, vectors of another size. A model
    that fails to load raises.
    """
    from .engine.embedders import StaticEmbedder, get_embedder
    from .engine.ideas import nearest_neighbors

    run = EngineRun.objects.filter(
        pk=consultation.current_run_id, status=EngineRun.Status.DONE
    ).first()
    model_name = run and ((run.metrics or {}).get("ideas_model") or run.model_name)
    if not model_name:
        return None
    embedder = get_embedder(model_name)
    if isinstance(embedder, StaticEmbedder) and not embedder.built:
        # distilling it takes ~20 s: not in a request (`manage.py embedder_build_static`)
        return None
    query = embedder.encode([text])[0].astype(np.float32)
    found = TextNeighbours(run=run)

    ideas = [i for i in Idea.objects.filter(run=run, size__gt=0).order_by("number") if i.centroid]
    if ideas:
        centres = np.stack([np.frombuffer(bytes(i.centroid), dtype=np.float32) for i in ideas])
        if centres.shape[1] != query.shape[0]:
            return None
        sims = centres @ query
        order_all = np.lexsort((np.arange(len(ideas)), -sims))
        found.ideas = [(ideas[i], float(sims[i])) for i in order_all[:n_ideas]]

    members = None  # every vector of the run
    if (run.input_count or 0) > candidates_max and ideas:
        whole, left = [], candidates_max
        for i in order_all:  # nearest ideas first, whole while they fit
            if ideas[i].size > left:
                break
            whole.append(ideas[i].pk)
            left -= ideas[i].size
        members = list(
            IdeaMembership.objects.filter(idea_id__in=whole).values_list("proposal_id", flat=True)
        )
        if left and len(whole) < len(ideas):  # the next idea's most central members
            members += (
                IdeaMembership.objects.filter(idea_id=ideas[order_all[len(whole)]].pk)
                .order_by("-similarity", "pk")
                .values_list("proposal_id", flat=True)[:left]
            )
    rows = stored_vectors(
        run_ids=run.vector_run_ids, proposal_ids=members, exclude=exclude, limit=candidates_max
    )
    if not rows:
        return found if found.ideas else None
    matrix = np.frombuffer(b"".join(v for _pk, v in rows), dtype=np.float16)
    if matrix.size != len(rows) * query.shape[0]:
        return None
    matrix = matrix.reshape(len(rows), -1)
    if min_similarity is None:
        min_similarity = similarity_floor(run)
    # a few more than asked: some may have been refused since the run
    near = nearest_neighbors(query, matrix, k=limit + 10, min_similarity=min_similarity)
    ids = [rows[int(i)][0] for i in near.indices]
    accepted = Proposal.objects.filter(pk__in=ids, status=Proposal.Status.ACCEPTED).in_bulk()
    found.proposals = [
        (accepted[pk], float(sim))
        for pk, sim in zip(ids, near.similarities, strict=True)
        if pk in accepted
    ][:limit]
    return found


def similarity_floor(run: EngineRun) -> float:
    """The cosine a proposal needs to be shown as similar in this run (see CHANCE_SDS)."""
    chance = (run.metrics or {}).get("chance_cosine")
    if not chance:
        return MIN_SIMILARITY
    return round(chance["mean"] + CHANCE_SDS * chance["sd"], 4)
