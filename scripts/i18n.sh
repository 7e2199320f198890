#!/usr/bin/env bash
# Refreshes the French and English catalogues from the code and templates, then compiles them.
# English is the source language: its catalogue repeats each message (scripts/i18n_fill_en.py).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
mkdir -p locale
$PY manage.py makemessages -l fr -l en --no-obsolete --ignore ".venv/*" --ignore "bench/*" --ignore "tests/*" --ignore "staticfiles/*"
$PY scripts/i18n_fill_en.py locale/en/LC_MESSAGES/django.po
$PY manage.py compilemessages -l fr -l en --ignore ".venv/*"
