"""Small consultations for the engine's Django tests: four clear themes and two voting camps."""

from consultations.models import Participant, Proposal, Vote
from consultations.services import counters_recount

from ..factories import ConsultationFactory, ProposalFactory

THEMES = [
    (
        "Des pistes cyclables sécurisées pour aller à vélo",
        ["au travail", "à l'école", "en ville", "la nuit", "le long du canal", "vers la gare",
         "entre villages", "au marché", "en hiver", "sans voiture", "avec les enfants", "partout"],
    ),
    (
        "Ouvrir les musées gratuitement",
        ["le dimanche", "aux étudiants", "le soir", "aux familles", "en été", "aux retraités",
         "pendant les vacances", "aux chômeurs", "aux écoles", "le premier lundi", "aux jeunes",
         "toute l'année"],
    ),
    (
        "Servir des repas bio dans les cantines scolaires",
        ["chaque jour", "locaux", "végétariens", "de saison", "sans plastique", "au collège",
         "au lycée", "en maternelle", "moins chers", "faits maison", "variés", "équilibrés"],
    ),
    (
        "Planter des arbres et des forêts urbaines",
        ["sur les parkings", "dans les cours", "le long des routes", "près des écoles",
         "sur les toits", "en banlieue", "au centre", "dans les friches", "autour des hôpitaux",
         "sur les places", "dans les quartiers", "partout en ville"],
    ),
]  # fmt: skip

HASHING = {"model_name": "hashing", "parameters": {"chunk_size": 10}}


def theme_texts():
    return [f"{head} {tail}" for head, tails in THEMES for tail in tails]


def consultation_with_themes(**kwargs):
    """A consultation with 48 accepted proposals (4 themes x 12), plus refused and pending ones."""
    consultation = ConsultationFactory(**kwargs)
    for text in theme_texts():
        ProposalFactory(consultation=consultation, content=text)
    ProposalFactory(
        consultation=consultation,
        content="Texte refusé",
        status=Proposal.Status.REFUSED,
        refusal_reason="test",
    )
    ProposalFactory(
        consultation=consultation, content="Texte en attente", status=Proposal.Status.PENDING
    )
    return consultation


def add_votes(consultation, *, n_participants=40, untrusted=5):
    """Two camps that split on themes 0 and 1 and all agree on theme 3; counters rebuilt.

    Camp A (even participants) agrees with cycling and disagrees with museums; camp B the opposite.
    Everybody agrees with trees; cantines get neutral votes. Half of the votes are sequence votes.
    ``untrusted`` extra participants vote only untrusted (they must never reach the engine).
    """
    proposals = list(
        Proposal.objects.filter(
            consultation=consultation, status=Proposal.Status.ACCEPTED
        ).order_by("pk")
    )
    theme_of = {p.pk: i // 12 for i, p in enumerate(proposals)}
    votes = []
    for n in range(n_participants + untrusted):
        participant = Participant.objects.create(session_key=f"{consultation.slug}-voter-{n}")
        for p in proposals:
            theme = theme_of[p.pk]
            camp_a = n % 2 == 0
            if theme == 0:
                key = "agree" if camp_a else "disagree"
            elif theme == 1:
                key = "disagree" if camp_a else "agree"
            elif theme == 2:
                key = "neutral"
            else:
                key = "agree"
            if n >= n_participants:
                trust = "untrusted"
                key = "disagree"
            else:
                trust = "sequence" if (n + p.pk) % 2 else "trusted"
            votes.append(
                Vote(
                    participant=participant,
                    proposal=p,
                    key=key,
                    trust=trust,
                    in_sequence=trust == "sequence",
                )
            )
    Vote.objects.bulk_create(votes)
    counters_recount(proposal_ids=[p.pk for p in proposals])
    return proposals
