#!/usr/bin/env bash
# make run: the embedded PostgreSQL (unless DATABASE_URL is set), then the server.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
export SHELFSYNC_LOCAL_MODE=1
if [[ -z "${DATABASE_URL:-}" ]]; then
  scripts/pg.sh start
  PGBIN=$(scripts/pg.sh pgbin)
  ADMIN=$(scripts/pg.sh url postgres)
  if [[ -z "$("$PGBIN/psql" "$ADMIN" -Atc "SELECT 1 FROM pg_database WHERE datname = 'shelfsync'")" ]]; then
    "$PGBIN/psql" "$ADMIN" -qc "CREATE DATABASE shelfsync" >/dev/null
  fi
  export DATABASE_URL="$(scripts/pg.sh url shelfsync)"
fi
exec build/shelfsync serve
