"""Data for the stack smoke test, run as a separate process against the smoke database.

    python tests/ops/smoke_data.py

Creates an active cause and an open consultation with 48 accepted proposals (four themes) and
a few voters, then starts a FULL engine run with the ``hashing`` embedder (no model to load): the
run is enqueued on the real broker (CELERY_BROKER_URL) for the worker under test. Prints one JSON
line: {"slug", "proposal", "run"}.
"""

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

import django  # noqa: E402

django.setup()

from django.utils import timezone  # noqa: E402

from causes.models import Cause  # noqa: E402
from consensus import services  # noqa: E402
from consultations.models import Consultation, Participant, Proposal, Trust, Vote  # noqa: E402
from consultations.services import counters_recount  # noqa: E402

THEMES = {
    "Des pistes cyclables sécurisées": ["au travail", "à l'école", "en ville", "la nuit"],
    "Ouvrir les musées gratuitement": ["le dimanche", "aux étudiants", "le soir", "en été"],
    "Servir des repas bio dans les cantines": ["chaque jour", "locaux", "de saison", "au lycée"],
    "Planter des arbres en ville": [
        "sur les parkings",
        "dans les cours",
        "près des écoles",
        "partout",
    ],
}
SUFFIXES = ["", " pour tous", " dès maintenant"]

cause = Cause.objects.create(title="Smoke cause", slug="smoke-cause", status=Cause.Status.ACTIVE)
consultation = Consultation.objects.create(
    cause=cause,
    question="Comment rendre la ville plus agréable ?",
    slug="smoke",
    starts_at=timezone.now() - timezone.timedelta(days=1),
)
proposals = Proposal.objects.bulk_create(
    [
        Proposal(
            consultation=consultation,
            content=f"Il faut {head.lower()} {tail}{suffix}",
            status=Proposal.Status.ACCEPTED,
            author_name="Smoke",
        )
        for head, tails in THEMES.items()
        for tail in tails
        for suffix in SUFFIXES
    ]
)
voters = Participant.objects.bulk_create(
    [Participant(session_key=f"smoke-voter-{n}") for n in range(20)]
)
Vote.objects.bulk_create(
    [
        Vote(
            participant=voter,
            proposal=proposal,
            key="agree" if (n + i) % 3 else "disagree",
            trust=Trust.TRUSTED,
        )
        for n, voter in enumerate(voters)
        for i, proposal in enumerate(proposals)
        if (n * 7 + i) % 4 != 0
    ]
)
counters_recount(proposal_ids=[p.pk for p in proposals])
run = services.engine_run_start(
    consultation=consultation,
    kind="full",
    model_name="hashing",
    parameters={"chunk_size": 16},
)
print(json.dumps({"slug": consultation.slug, "proposal": proposals[0].pk, "run": run.pk}))
