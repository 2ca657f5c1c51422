#!/usr/bin/env bash
# Team mode (README): a PostgreSQL backend store and an MLflow tracking server with proxied
# artifacts, both on this machine, in the foreground; Ctrl-C (or SIGTERM) stops both.
#
#   scripts/team_server.sh [extra `mlflow server` options, e.g. --allowed-hosts mlflow.example.com]
#
# Environment:
#   TEAM_DIR  folder for the database cluster, its password and the artifacts (default .team)
#   PG_PORT   PostgreSQL's port on 127.0.0.1 (default 5433, beside a system cluster on 5432)
#   HOST      the tracking server's interface (default 127.0.0.1; 0.0.0.0 for other machines)
#   PORT      the tracking server's port (default 5000)
#   WORKERS   tracking server worker processes (default 2)
#
# PostgreSQL listens on 127.0.0.1 only and asks for a password (scram-sha-256) generated once into
# $TEAM_DIR/pgpass (mode 600), which libpq reads through PGPASSFILE: it never appears on a command
# line. Debian's initdb and postgres refuse to run as root, so as root they run as `postgres`.
set -euo pipefail

TEAM_DIR=$(realpath -m "${TEAM_DIR:-.team}")
PG_PORT=${PG_PORT:-5433}
HOST=${HOST:-127.0.0.1}
PORT=${PORT:-5000}
WORKERS=${WORKERS:-2}
PGDATA="$TEAM_DIR/pgdata"
SOCKETS="$TEAM_DIR/sockets"        # postgres's unix socket; /var/run/postgresql may not exist
PGLOG="$TEAM_DIR/pglog/postgres.log"  # in a folder of its own: the postgres user writes it
ARTIFACTS="$TEAM_DIR/artifacts"
export PGPASSFILE="$TEAM_DIR/pgpass"

die() { echo "error: $*" >&2; exit 1; }
say() { echo "team-server: $*" >&2; }

pg_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }
BIN=$(pg_bin)
if [ -z "$BIN" ]; then
  if [ "$(id -u)" = 0 ]; then
    say "installing PostgreSQL (Debian package postgresql)"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null) \
      || die "could not install PostgreSQL: run 'apt-get install postgresql'"
    BIN=$(pg_bin)
  fi
  [ -n "$BIN" ] || die "PostgreSQL is not installed: run 'sudo apt-get install postgresql'"
fi
command -v mlflow >/dev/null || die "mlflow is not on PATH: run 'make setup' (or activate .venv)"

# Run a PostgreSQL server program as the postgres user when we are root.
as_pg() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

mkdir -p "$PGDATA" "$SOCKETS" "$(dirname "$PGLOG")" "$ARTIFACTS"
chmod 700 "$PGDATA"
if [ "$(id -u)" = 0 ]; then
  chown postgres: "$PGDATA" "$SOCKETS" "$(dirname "$PGLOG")"
  as_pg test -w "$PGDATA" \
    || die "user postgres cannot reach $PGDATA: put TEAM_DIR under folders others may enter"
fi

if [ ! -f "$PGDATA/PG_VERSION" ]; then
  say "creating the database cluster in $PGDATA"
  password=$(head -c 32 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c 32)
  pwfile="$TEAM_DIR/.initdb-password"   # initdb wants an empty data folder
  (umask 077; printf '%s\n' "$password" > "$pwfile")
  [ "$(id -u)" = 0 ] && chown postgres: "$pwfile"
  as_pg "$BIN/initdb" -D "$PGDATA" -U postgres -E UTF8 --auth-local=peer \
    --auth-host=scram-sha-256 --pwfile="$pwfile" > "$TEAM_DIR/initdb.log" \
    || { rm -f "$pwfile"; die "initdb failed: see $TEAM_DIR/initdb.log"; }
  rm -f "$pwfile"
  (umask 077; printf '127.0.0.1:*:*:postgres:%s\n' "$password" > "$PGPASSFILE")
fi
[ -f "$PGPASSFILE" ] || die "$PGPASSFILE is missing: remove $PGDATA to create the cluster anew"

MLFLOW_PID=""
stop() {
  trap - EXIT INT TERM
  if [ -n "$MLFLOW_PID" ]; then
    say "stopping the tracking server"
    kill -TERM -- "-$MLFLOW_PID" 2>/dev/null || true
    wait "$MLFLOW_PID" 2>/dev/null || true
  fi
  say "stopping PostgreSQL"
  as_pg "$BIN/pg_ctl" -D "$PGDATA" -m fast -w stop >/dev/null 2>&1 || true
  rm -f "$TEAM_DIR/mlflow.pid"
}
trap stop EXIT INT TERM

if ! as_pg "$BIN/pg_ctl" -D "$PGDATA" status >/dev/null 2>&1; then
  as_pg "$BIN/pg_ctl" -D "$PGDATA" -l "$PGLOG" -w -t 60 \
    -o "-c listen_addresses=127.0.0.1 -p $PG_PORT -k $SOCKETS" start >/dev/null \
    || die "PostgreSQL did not start: see $PGLOG"
fi
psql() { "$BIN/psql" -h 127.0.0.1 -p "$PG_PORT" -U postgres -v ON_ERROR_STOP=1 -qtA "$@"; }
if [ "$(psql -d postgres -c "SELECT 1 FROM pg_database WHERE datname = 'mlflow'")" != 1 ]; then
  psql -d postgres -c "CREATE DATABASE mlflow" || die "could not create database mlflow"
fi

say "PostgreSQL on 127.0.0.1:$PG_PORT (database mlflow), artifacts in $ARTIFACTS"
say "MLFLOW_TRACKING_URI=http://$HOST:$PORT"
# `+psycopg2`: SQLAlchemy 2.1 reads a bare postgresql:// as psycopg 3, not the psycopg2 we install.
# Its own process group, so that stopping reaches the server's workers too.
setsid mlflow server \
  --backend-store-uri "postgresql+psycopg2://postgres@127.0.0.1:$PG_PORT/mlflow" \
  --serve-artifacts --artifacts-destination "$ARTIFACTS" \
  --host "$HOST" --port "$PORT" --workers "$WORKERS" "$@" &
MLFLOW_PID=$!
echo "$MLFLOW_PID" > "$TEAM_DIR/mlflow.pid"
wait "$MLFLOW_PID"
