from django.db.models import Q, QuerySet

from .models import Cause


def cause_visible_list(*, user) -> QuerySet[Cause]:
    """Causes a user may see: active public ones, private ones they belong to; staff see all."""
    qs = Cause.objects.all()
    if user.is_authenticated and user.is_staff:
        return qs
    qs = qs.filter(status__in=[Cause.Status.ACTIVE, Cause.Status.ARCHIVED])
    if user.is_authenticated:
        return qs.filter(~Q(kind=Cause.Kind.PRIVATE_CONSULTATION) | Q(members=user)).distinct()
    return qs.exclude(kind=Cause.Kind.PRIVATE_CONSULTATION)
