#!/usr/bin/env bash
# The whole test suite, against the real PostgreSQL and Redis of this machine.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh || exit 1
bash scripts/services.sh || exit 1
# Chromium for the browser tests, gettext for the catalogue check (Debian packages).
missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v xgettext >/dev/null 2>&1 || missing+=(gettext)
if [ ${#missing[@]} -gt 0 ]; then
  echo "Installing ${missing[*]}..."
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null) \
    || echo "warning: could not install ${missing[*]}; the tests that need them will fail or skip" >&2
fi
export DATABASE_URL=${TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/concorde}
export TEST_REDIS_URL=${TEST_REDIS_URL:-redis://127.0.0.1:6379/15}
unset CELERY_BROKER_URL REDIS_URL DJANGO_ENV
.venv/bin/ruff check . || exit 1
.venv/bin/python scripts/audit.py || exit 1  # pip-audit; an unreachable database warns, never passes silently
.venv/bin/python -m pytest --create-db -q "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
  echo "pytest collected no tests: failing on purpose." >&2
  exit 1
fi
exit "$rc"
