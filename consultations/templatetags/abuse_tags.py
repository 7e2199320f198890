"""``{% bot_protection_fields %}``: the proposal form's honeypot and signed timestamp."""

from django import template
from django.utils.html import format_html
from django.utils.translation import gettext as _

from consultations.abuse import HONEYPOT_FIELD, STAMP_FIELD, form_stamp

register = template.Library()


@register.simple_tag
def bot_protection_fields():
    # The honeypot is moved off-screen by CSS (.hp), hidden from screen readers and skipped by
    # the Tab key, so people never fill it; bots that fill every field do.
    return format_html(
        '<input type="hidden" name="{}" value="{}">'
        '<div class="hp" aria-hidden="true"><label for="id_{}">{}</label>'
        '<input type="text" id="id_{}" name="{}" value="" tabindex="-1" autocomplete="off"></div>',
        STAMP_FIELD,
        form_stamp(),
        HONEYPOT_FIELD,
        _("Leave this field empty"),
        HONEYPOT_FIELD,
        HONEYPOT_FIELD,
    )
