#!/usr/bin/env bash
# One command to a running platform: install, migrate, load a real demo consultation,
# run the consensus engine on it, and serve http://127.0.0.1:8000 with a staff login printed.
# With nothing set it uses SQLite and in-process Celery; set DATABASE_URL / CELERY_BROKER_URL for
# PostgreSQL and Redis.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
PY=.venv/bin/python
$PY manage.py migrate --noinput
$PY manage.py load_demo ${DEMO_LIMIT:+--limit "$DEMO_LIMIT"}
$PY manage.py engine_run
$PY manage.py demo_admin
echo
ADDR="${ADDR:-127.0.0.1:8000}"
echo "Concorde is starting on http://$ADDR  (admin: http://$ADDR/admin/, credentials above)"
exec $PY manage.py runserver "$ADDR"
