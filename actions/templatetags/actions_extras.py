from decimal import Decimal

from django import template
from django.utils.formats import number_format

register = template.Library()


@register.filter
def measure(value):
    """A measured Decimal without trailing zeros, localised: 12.5000 → "12,5" in French."""
    if value is None or value == "":
        return ""
    value = Decimal(value)
    if value == value.to_integral_value():
        value = value.quantize(Decimal(1))
    else:
        value = value.normalize()
    return number_format(value, use_l10n=True, force_grouping=True)


@register.filter
def measurement_percent(measurement, objective):
    """The progress one measurement stood for, in whole percent (for history tables)."""
    from actions.selectors import objective_progress, percent

    return percent(
        objective_progress(
            baseline=objective.baseline, target=objective.target, value=measurement.value
        )
    )
