"""Helpers of the moderation tests (unit and browser)."""

import numpy as np

from consensus.engine.embedders import get_embedder
from consensus.models import EngineRun, Idea, IdeaMembership, ProposalEmbedding

from ..factories import ProposalFactory


def run_with_ideas(consultation, groups):
    """A finished run embedded with the hashing model: one idea per group of texts."""
    embedder = get_embedder("hashing")
    run = EngineRun.objects.create(
        consultation=consultation,
        kind=EngineRun.Kind.IDEAS,
        status=EngineRun.Status.DONE,
        model_name="hashing",
        metrics={"ideas_model": "hashing"},
        parameters={"assign_threshold": 0.5},
    )
    count = 0
    for number, (label, texts) in enumerate(groups):
        proposals = [ProposalFactory(consultation=consultation, content=t) for t in texts]
        vectors = embedder.encode([p.content for p in proposals])
        centroid = vectors.mean(axis=0)
        centroid = (centroid / np.linalg.norm(centroid)).astype(np.float32)
        idea = Idea.objects.create(
            run=run,
            consultation=consultation,
            number=number,
            label=label,
            size=len(proposals),
            centroid=centroid.tobytes(),
        )
        for proposal, vector in zip(proposals, vectors, strict=True):
            ProposalEmbedding.objects.create(
                run=run,
                proposal=proposal,
                vector=vector.astype(np.float16).tobytes(),
                text_hash="x",
            )
            IdeaMembership.objects.create(run=run, idea=idea, proposal=proposal)
        count += len(proposals)
    run.input_count = count
    run.save()
    consultation.current_run = run
    consultation.save()
    return run
