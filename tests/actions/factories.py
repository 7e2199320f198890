"""Factories for action plans (kept beside their tests; they build on tests/factories.py)."""

import datetime
from decimal import Decimal

import factory
from django.utils import timezone

from actions.models import Action, ActionPlan, Measurement, Objective
from partners.models import PartnerMembership

from ..factories import CauseFactory, PartnerFactory, UserFactory


class ActionPlanFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ActionPlan

    cause = factory.SubFactory(CauseFactory)
    title = factory.Sequence(lambda n: f"Plan culture pour tous {n}")
    status = ActionPlan.Status.PUBLISHED


class ActionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Action

    plan = factory.SubFactory(ActionPlanFactory)
    title = factory.Sequence(lambda n: f"Ouvrir les médiathèques le dimanche {n}")
    owner = factory.SubFactory(PartnerFactory)
    status = Action.Status.IN_PROGRESS


class ObjectiveFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Objective

    action = factory.SubFactory(ActionFactory)
    indicator = factory.Sequence(lambda n: f"Médiathèques ouvertes le dimanche {n}")
    unit = "sites"
    baseline = Decimal(0)
    target = Decimal(100)
    baseline_on = factory.LazyFunction(lambda: timezone.localdate() - datetime.timedelta(days=30))
    due_date = factory.LazyFunction(lambda: timezone.localdate() + datetime.timedelta(days=335))


class MeasurementFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Measurement

    objective = factory.SubFactory(ObjectiveFactory)
    value = Decimal(10)
    measured_on = factory.LazyFunction(timezone.localdate)


class MembershipFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = PartnerMembership

    partner = factory.SubFactory(PartnerFactory)
    user = factory.SubFactory(UserFactory)
    role = PartnerMembership.Role.EDITOR
