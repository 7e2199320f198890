"""Saving a consultation's admin page as staff do, with its inlines (tests' helper)."""

from django.urls import reverse

INLINES = ("moderator_assignments", "population_shares")


def consultation_admin_post(client, consultation, *, fields=None, inlines=None):
    """POSTs the consultation's admin change page with its current values, ``fields`` changed,
    and per inline prefix the rows given (every other inline empty); returns the response."""
    inlines = inlines or {}
    url = reverse("admin:consultations_consultation_change", args=[consultation.pk])
    form = client.get(url).context["adminform"].form
    data = {
        name: value
        for name, value in form.initial.items()
        if value is not None and not isinstance(value, list | dict)
    }
    data.update(
        {
            "cause": consultation.cause_id,
            "question": consultation.question,
            "slug": consultation.slug,
            "language": consultation.language,
            "countries": "[]",
            "starts_at_0": consultation.starts_at.strftime("%Y-%m-%d"),
            "starts_at_1": consultation.starts_at.strftime("%H:%M:%S"),
        }
    )
    for prefix in INLINES:
        rows = inlines.get(prefix, [])
        data[f"{prefix}-TOTAL_FORMS"] = str(len(rows))
        data[f"{prefix}-INITIAL_FORMS"] = "0"
        for i, row in enumerate(rows):
            data.update({f"{prefix}-{i}-{field}": value for field, value in row.items()})
    data.pop("current_run", None)
    data.pop("ends_at", None)
    data.update(fields or {})
    return client.post(url, data)
