import factory
from django.utils import timezone

from accounts.models import User
from causes.models import Cause
from consultations.models import Consultation, Participant, Proposal
from partners.models import Partner


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = User

    email = factory.Sequence(lambda n: f"user{n}@example.org")
    password = factory.django.Password("correct horse battery")
    display_name = factory.Sequence(lambda n: f"Camille{n}")


class CauseFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Cause

    title = factory.Sequence(lambda n: f"Access to culture for all {n}")
    slug = factory.Sequence(lambda n: f"culture-{n}")
    summary = "Culture belongs to everyone."
    status = Cause.Status.ACTIVE


class ConsultationFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Consultation

    cause = factory.SubFactory(CauseFactory)
    question = factory.Sequence(lambda n: f"How can we open culture to everyone? ({n})")
    slug = factory.Sequence(lambda n: f"open-culture-{n}")
    starts_at = factory.LazyFunction(lambda: timezone.now() - timezone.timedelta(days=1))


class ProposalFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Proposal

    consultation = factory.SubFactory(ConsultationFactory)
    content = factory.Sequence(lambda n: f"Il faut ouvrir les musées le soir, proposition {n}")
    status = Proposal.Status.ACCEPTED
    author_name = "Camille"


class ParticipantFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Participant

    session_key = factory.Sequence(lambda n: f"session-{n}")


class PartnerFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Partner

    name = factory.Sequence(lambda n: f"Association {n}")
    slug = factory.Sequence(lambda n: f"association-{n}")
