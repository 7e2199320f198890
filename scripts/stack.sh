#!/usr/bin/env bash
# The production stack as plain processes (no Docker): migrate, then the Procfile's processes
# (web = gunicorn, worker = Celery on queue "web", engine = Celery on queue "engine", beat).
#
#   scripts/stack.sh                 # every process of the Procfile
#   scripts/stack.sh web engine      # only these
#
# Environment (defaults = this machine's PostgreSQL and Redis):
#   DATABASE_URL        postgres://postgres@127.0.0.1:5432/concorde
#   REDIS_URL           redis://127.0.0.1:6379/0   (cache)
#   CELERY_BROKER_URL   redis://127.0.0.1:6379/1   (broker and result backend)
#   WEB_BIND            0.0.0.0:$PORT (PORT 8000), where gunicorn listens
#   STACK_RUNNER        honcho (when installed) or plain (background processes started here)
#   STACK_SKIP_MIGRATE  1 to skip `manage.py migrate`
#   STACK_STOP_TIMEOUT  seconds a process gets to stop after SIGTERM before SIGKILL (default 30;
#                       Celery finishes its running tasks in that time, engine tasks are acks_late
#                       and are redelivered if killed)
# Ctrl-C or SIGTERM stops every process; so does any process exiting on its own.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
[ -x "$ROOT/.venv/bin/python" ] && export PATH="$ROOT/.venv/bin:$PATH"
PY=${PYTHON:-python}

export DATABASE_URL=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/concorde}
export REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379/0}
export CELERY_BROKER_URL=${CELERY_BROKER_URL:-redis://127.0.0.1:6379/1}
export WEB_BIND=${WEB_BIND:-0.0.0.0:${PORT:-8000}}  # honcho would otherwise set PORT=5000
export PYTHONUNBUFFERED=1
STOP_TIMEOUT=${STACK_STOP_TIMEOUT:-30}
PROCFILE=${PROCFILE:-$ROOT/Procfile}

log() { echo "stack: $*" >&2; }

# The Procfile's entries, "name<TAB>command", in file order.
entries=$(sed -n -E 's/^([A-Za-z0-9_-]+):[[:space:]]*(.+)$/\1\t\2/p' "$PROCFILE")
if [ "$#" -gt 0 ]; then
  for name in "$@"; do
    grep -q "^$name"$'\t' <<<"$entries" || { log "no process '$name' in $PROCFILE"; exit 2; }
  done
fi

if [ "${STACK_SKIP_MIGRATE:-0}" != 1 ]; then
  log "migrate"
  $PY manage.py migrate --noinput
  if [ "${DJANGO_ENV:-}" = production ]; then
    $PY manage.py collectstatic --noinput -v 0
  fi
fi

runner=${STACK_RUNNER:-}
if [ -z "$runner" ]; then
  if command -v honcho >/dev/null 2>&1; then runner=honcho; else runner=plain; fi
fi

if [ "$runner" = honcho ]; then
  # honcho starts each process in its own group, forwards SIGINT/SIGTERM to all of them and stops
  # them all when one exits. exec: our PID is honcho's, so `kill <pid>` stops the stack.
  log "starting with honcho: ${*:-every process}"
  exec honcho --no-colour start -f "$PROCFILE" -d "$ROOT" "$@"
fi

# Plain background processes, each in its own process group (set -m) so that a stop reaches the
# children gunicorn and Celery fork.
set -m
pids=()
names=()
stopping=0

stop_all() {
  [ "$stopping" = 1 ] && return
  stopping=1
  trap '' INT TERM
  log "stopping ${names[*]:-nothing}"
  local pid
  for pid in "${pids[@]}"; do kill -TERM -- "-$pid" 2>/dev/null || true; done
  local deadline=$((SECONDS + STOP_TIMEOUT))
  while [ "$SECONDS" -lt "$deadline" ]; do
    local alive=0
    for pid in "${pids[@]}"; do kill -0 -- "-$pid" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && break
    sleep 0.5
  done
  for pid in "${pids[@]}"; do
    if kill -0 -- "-$pid" 2>/dev/null; then
      log "process group $pid did not stop in ${STOP_TIMEOUT}s: SIGKILL"
      kill -KILL -- "-$pid" 2>/dev/null || true
    fi
  done
  wait 2>/dev/null || true
  log "stopped"
}
trap 'stop_all; exit 0' INT TERM
trap 'stop_all' EXIT

while IFS=$'\t' read -r name command; do
  [ -z "$name" ] && continue
  if [ "$#" -gt 0 ] && ! printf '%s\n' "$@" | grep -qx "$name"; then continue; fi
  # Each line is prefixed with the process name, like honcho does; the prefixer ignores SIGTERM
  # (it shares the group) and ends when the process closes its output, so last words get out.
  bash -c "exec $command" > >(trap '' TERM; exec sed -u "s/^/$name | /") 2>&1 &
  pids+=("$!")
  names+=("$name")
  log "started $name (pid $!): $command"
done <<<"$entries"

# Any process that exits ends the stack (the others are stopped by the EXIT trap).
set +e
wait -n "${pids[@]}"
rc=$?
log "a process exited (status $rc): stopping the others"
exit "$rc"
