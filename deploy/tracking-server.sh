#!/usr/bin/env bash
# A team's MLflow tracking server: PostgreSQL backend (a private cluster in DIR), artifacts
# served by the server from DIR/artifacts, optional basic auth (SPEC 7, 8).
#
#   deploy/tracking-server.sh start  [DIR]   create DIR once, start PostgreSQL + MLflow, wait for /health
#   deploy/tracking-server.sh stop   [DIR]   stop both (runs and artifacts stay in DIR)
#   deploy/tracking-server.sh status [DIR]   exit 0 and print the URL when the server answers
#   deploy/tracking-server.sh backup DIR OUT    pg_dump of both databases, then a copy of the
#                                               artifacts, into the new folder OUT; safe while running
#   deploy/tracking-server.sh restore DIR OUT   a fresh DIR from backup OUT (then `start DIR`)
#
# DIR defaults to $XIQA_SERVER_DIR, else ./tracking-server. It holds postgres/ (the cluster),
# artifacts/, logs/{postgres,mlflow}.log, the pid file, server.url and, mode 600, pg-password (generated at
# creation unless XIQA_PG_PASSWORD is given) and basic_auth.ini. Settings (environment):
#   XIQA_SERVER_HOST     interface MLflow listens on (127.0.0.1; 0.0.0.0 for other machines,
#                        then also pass --allowed-hosts through XIQA_SERVER_OPTS)
#   XIQA_SERVER_PORT     MLflow's port (5000)
#   XIQA_PG_PORT         PostgreSQL's port, on 127.0.0.1 only; fixed when DIR is created (5433)
#   XIQA_SERVER_WORKERS  MLflow worker processes (2)
#   XIQA_SERVER_OPTS     extra `mlflow server` options, e.g. "--allowed-hosts mlflow.lab:5000"
#   XIQA_ARTIFACTS_DESTINATION  where served artifacts go (DIR/artifacts), e.g. s3://bucket/xiqa
#                        (an S3-compatible store: boto3 and AWS_* / MLFLOW_S3_ENDPOINT_URL set here)
#   XIQA_PG_BIN          folder of initdb / pg_ctl (found under /usr/lib/postgresql otherwise)
#   XIQA_SERVER_AUTH=1   basic auth; then MLFLOW_FLASK_SERVER_SECRET_KEY and
#                        MLFLOW_AUTH_ADMIN_PASSWORD are required (no defaults exist anywhere),
#                        MLFLOW_AUTH_ADMIN_USERNAME is optional (admin). Clients set
#                        MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD. The secret key
#                        must be at least 32 bytes (openssl rand -hex 32).
#   XIQA_AUTH_DEFAULT_PERMISSION  what a user may do where nothing was granted: READ (default)
#                        or NO_PERMISSIONS (users see only what the admin grants them)
#   XIQA_AUTH_CACHE_S    seconds a checked password is cached per worker (60)
# Run as root, PostgreSQL runs as the `postgres` user (initdb refuses root), so that user
# must be able to enter DIR.
set -euo pipefail

die() { echo "tracking-server: error: $*" >&2; exit 2; }

cmd="${1:-}"
dir="${2:-${XIQA_SERVER_DIR:-tracking-server}}"
backup="${3:-}"
case "$cmd" in
    start) mkdir -p "$dir" ;;
    stop|status) [ -d "$dir" ] || die "$dir: no tracking server folder here" ;;
    backup)
        [ -n "$backup" ] || die "usage: $0 backup DIR OUT"
        [ -f "$dir/postgres/PG_VERSION" ] || die "$dir: no tracking server folder here"
        [ ! -e "$backup" ] || die "$backup: already exists; name a new folder for the backup" ;;
    restore)
        [ -n "$backup" ] || die "usage: $0 restore DIR BACKUP"
        [ -f "$backup/mlflow.dump" ] && [ -f "$backup/mlflow_auth.dump" ] && [ -d "$backup/artifacts" ] ||
            die "$backup: not a backup of tracking-server.sh (mlflow.dump, mlflow_auth.dump, artifacts/)"
        [ ! -e "$dir/postgres" ] && [ ! -e "$dir/artifacts" ] ||
            die "$dir: already holds a server; restore into a new folder"
        mkdir -p "$dir" ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "usage: $0 start|stop|status [DIR], backup DIR OUT, restore DIR BACKUP (--help for the settings)" ;;
esac
dir="$(cd "$dir" && pwd)"
host="${XIQA_SERVER_HOST:-127.0.0.1}"
port="${XIQA_SERVER_PORT:-5000}"
pg_port="${XIQA_PG_PORT:-5433}"
pgdata="$dir/postgres"
pidfile="$dir/mlflow.pid"
url="http://$([ "$host" = 0.0.0.0 ] && echo 127.0.0.1 || echo "$host"):$port"

pg_bin() {
    if [ -n "${XIQA_PG_BIN:-}" ]; then echo "$XIQA_PG_BIN"; return; fi
    local found
    found="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)"
    [ -n "$found" ] || found="$(dirname "$(command -v initdb 2>/dev/null || echo /none/initdb)")"
    echo "$found"
}
bin="$(pg_bin)"

as_pg() {  # run a PostgreSQL program as the cluster's owner
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

answers() {  # any HTTP answer from /health (bash's /dev/tcp: no curl needed)
    local h="${url#http://}"
    (exec 3<>"/dev/tcp/${h%:*}/${h##*:}" && printf 'GET /health HTTP/1.0\r\n\r\n' >&3 &&
        head -c 12 <&3 | grep -q '^HTTP/') 2>/dev/null
}

mlflow_bin() {
    if command -v mlflow >/dev/null 2>&1; then command -v mlflow
    elif [ -x "$(dirname "$0")/../.venv/bin/mlflow" ]; then echo "$(dirname "$0")/../.venv/bin/mlflow"
    else die "mlflow not found: activate the project's .venv (make test or make study creates it)"
    fi
}

pg_stop() {
    if [ -f "$pgdata/postmaster.pid" ]; then as_pg "$bin/pg_ctl" -D "$pgdata" -m fast -w stop >/dev/null; fi
}

mlflow_stop() {
    if [ -f "$pidfile" ]; then
        local pid; pid="$(cat "$pidfile")"
        kill -TERM -- "-$pid" 2>/dev/null || true  # its own process group: server and workers
        for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
        kill -KILL -- "-$pid" 2>/dev/null || true
        rm -f "$pidfile"
    fi
}

pg_init_and_start() {  # create the cluster once (password, 127.0.0.1 only), start it, create the databases
    mkdir -p "$dir/artifacts" "$dir/logs"
    if [ ! -f "$dir/pg-password" ]; then
        (umask 077
         if [ -n "${XIQA_PG_PASSWORD:-}" ]; then printf '%s' "$XIQA_PG_PASSWORD" > "$dir/pg-password"
         else head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$dir/pg-password"
         fi)
    fi
    pg_password="$(cat "$dir/pg-password")"
    if [ ! -f "$pgdata/PG_VERSION" ]; then
        mkdir -p "$pgdata"
        if [ "$(id -u)" = 0 ]; then
            chown postgres: "$pgdata" "$dir/logs"
            runuser -u postgres -- test -w "$pgdata" ||
                die "$pgdata: the postgres user cannot enter this folder (a parent is private); choose a DIR it can reach, e.g. under /srv"
        fi
        pwfile="$dir/.pg-pwfile"
        (umask 077; printf '%s\n' "$pg_password" > "$pwfile")
        [ "$(id -u)" = 0 ] && chown postgres: "$pwfile"
        # socket inside the private data folder (local trust reaches only its owner); TCP needs the password
        as_pg "$bin/initdb" -D "$pgdata" -U xiqa --pwfile="$pwfile" -E UTF8 --auth-local=trust \
            --auth-host=scram-sha-256 --no-instructions >"$dir/logs/initdb.log" 2>&1 ||
            die "initdb failed in $pgdata (see $dir/logs/initdb.log)"
        rm -f "$pwfile"
        printf "listen_addresses = '127.0.0.1'\nport = %s\nunix_socket_directories = '%s'\n" \
            "$pg_port" "$pgdata" | as_pg tee -a "$pgdata/postgresql.conf" >/dev/null
    fi
    pg_port="$(sed -n "s/^port = \([0-9]*\)$/\1/p" "$pgdata/postgresql.conf" | tail -n 1)"
    if ! as_pg "$bin/pg_ctl" -D "$pgdata" status >/dev/null 2>&1; then
        as_pg "$bin/pg_ctl" -D "$pgdata" -l "$dir/logs/postgres.log" -w -t 60 start >/dev/null ||
            die "PostgreSQL did not start on 127.0.0.1:$pg_port (see $dir/logs/postgres.log; is the port taken? set XIQA_PG_PORT before the first start)"
    fi
    for db in mlflow mlflow_auth; do
        exists="$(as_pg "$bin/psql" -h "$pgdata" -p "$pg_port" -U xiqa -d postgres -tAc \
            "SELECT 1 FROM pg_database WHERE datname = '$db'")" ||
            die "PostgreSQL on 127.0.0.1:$pg_port does not accept queries (see $dir/logs/postgres.log)"
        [ "$exists" = 1 ] || as_pg "$bin/createdb" -h "$pgdata" -p "$pg_port" -U xiqa "$db"
    done
}

if [ "$cmd" = status ]; then
    [ -f "$dir/server.url" ] && url="$(cat "$dir/server.url")"  # where the last start put it
    answers && { echo "$url"; exit 0; }
    echo "tracking-server: $url does not answer" >&2; exit 1
fi
if [ "$cmd" = stop ]; then
    mlflow_stop
    pg_stop
    exit 0
fi
if [ "$cmd" = backup ]; then
    # The databases first (pg_dump: one consistent snapshot each), then the artifacts: MLflow
    # writes an artifact before any row names it and never rewrites one, so every artifact the
    # dump refers to is already there when the copy starts; files of runs still being logged may
    # come along unreferenced, which is harmless.
    as_pg "$bin/pg_ctl" -D "$pgdata" status >/dev/null 2>&1 ||
        die "PostgreSQL of $dir is not running: \`$0 start $dir\` first (the backup is taken from the live server)"
    pg_port="$(sed -n "s/^port = \([0-9]*\)$/\1/p" "$pgdata/postgresql.conf" | tail -n 1)"
    out="$(mkdir -p "$(dirname "$backup")" && cd "$(dirname "$backup")" && pwd)/$(basename "$backup")"
    tmp="$out.partial"
    rm -rf "$tmp"
    (umask 077; mkdir -p "$tmp")  # the dumps hold password hashes of the users
    for db in mlflow mlflow_auth; do  # written by this shell: the postgres user need not reach OUT
        as_pg "$bin/pg_dump" -h "$pgdata" -p "$pg_port" -U xiqa -Fc "$db" >"$tmp/$db.dump" ||
            { rm -rf "$tmp"; die "pg_dump of database $db failed"; }
    done
    if [ -d "$dir/artifacts" ]; then cp -a "$dir/artifacts" "$tmp/artifacts"; else mkdir "$tmp/artifacts"; fi
    mv "$tmp" "$out"
    echo "$out"
    exit 0
fi
if [ "$cmd" = restore ]; then
    backup="$(cd "$backup" && pwd)"
    pg_init_and_start
    for db in mlflow mlflow_auth; do
        tables="$(as_pg "$bin/psql" -h "$pgdata" -p "$pg_port" -U xiqa -d "$db" -tAc \
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")"
        [ "$tables" = 0 ] || { pg_stop; die "database $db in $dir is not empty; restore into a new folder"; }
        as_pg "$bin/pg_restore" -h "$pgdata" -p "$pg_port" -U xiqa --no-owner --exit-on-error -d "$db" \
            <"$backup/$db.dump" >"$dir/logs/restore-$db.log" 2>&1 ||
            { pg_stop; die "pg_restore of $db failed (see $dir/logs/restore-$db.log)"; }
    done
    cp -a "$backup/artifacts/." "$dir/artifacts/"
    pg_stop
    echo "$dir"
    exit 0
fi


# ---------------------------------------------------------------------------------- start
answers && die "$url already answers: stop that server first, or choose another XIQA_SERVER_PORT"
[ -x "$bin/initdb" ] && [ -x "$bin/pg_ctl" ] ||
    die "PostgreSQL server programs (initdb, pg_ctl) not found in $bin: install them (Debian: apt-get install postgresql) or set XIQA_PG_BIN"
if [ "${XIQA_SERVER_AUTH:-0}" = 1 ]; then
    [ -n "${MLFLOW_FLASK_SERVER_SECRET_KEY:-}" ] ||
        die "XIQA_SERVER_AUTH=1 needs MLFLOW_FLASK_SERVER_SECRET_KEY (a long random string, the same on every server)"
    key_bytes="$(printf '%s' "$MLFLOW_FLASK_SERVER_SECRET_KEY" | wc -c)"
    [ "$key_bytes" -ge 32 ] ||
        die "MLFLOW_FLASK_SERVER_SECRET_KEY is $key_bytes bytes long, shorter than 32: use e.g. \$(openssl rand -hex 32)"
    case "${XIQA_AUTH_DEFAULT_PERMISSION:-READ}" in
        READ|NO_PERMISSIONS) ;;
        *) die "XIQA_AUTH_DEFAULT_PERMISSION=$XIQA_AUTH_DEFAULT_PERMISSION: use READ or NO_PERMISSIONS" ;;
    esac
    [ -n "${MLFLOW_AUTH_ADMIN_PASSWORD:-}" ] ||
        die "XIQA_SERVER_AUTH=1 needs MLFLOW_AUTH_ADMIN_PASSWORD (the admin's password, used when the user store is created)"
fi
mlflow="$(mlflow_bin)"
pg_init_and_start

db_uri="postgresql+psycopg2://xiqa:$pg_password@127.0.0.1:$pg_port"
auth=()
if [ "${XIQA_SERVER_AUTH:-0}" = 1 ]; then
    # auth_cache_ttl_seconds: each request otherwise re-hashes the password (PBKDF2, ~0.4 s of
    # CPU), which made a training run's few dozen requests take minutes; a changed password is
    # honoured by every worker after at most XIQA_AUTH_CACHE_S seconds
    (umask 077
     printf '[mlflow]\ndefault_permission = %s\ndatabase_uri = %s/mlflow_auth\nadmin_username = %s\nauth_cache_ttl_seconds = %s\n' \
         "${XIQA_AUTH_DEFAULT_PERMISSION:-READ}" "$db_uri" "${MLFLOW_AUTH_ADMIN_USERNAME:-admin}" \
         "${XIQA_AUTH_CACHE_S:-60}" > "$dir/basic_auth.ini")
    export MLFLOW_AUTH_CONFIG_PATH="$dir/basic_auth.ini"
    auth=(--app-name basic-auth)
fi
# xiqa starts no server-side jobs (MLflow's GenAI scorers): without this, seven more processes
export MLFLOW_SERVER_ENABLE_JOB_EXECUTION="${MLFLOW_SERVER_ENABLE_JOB_EXECUTION:-false}"
# the backend URI carries the password: through the environment, not the command line (ps)
export MLFLOW_BACKEND_STORE_URI="$db_uri/mlflow"
# shellcheck disable=SC2086  # XIQA_SERVER_OPTS is a list of options
setsid "$mlflow" server --serve-artifacts --artifacts-destination "${XIQA_ARTIFACTS_DESTINATION:-$dir/artifacts}" \
    --host "$host" --port "$port" --workers "${XIQA_SERVER_WORKERS:-2}" "${auth[@]}" \
    ${XIQA_SERVER_OPTS:-} >"$dir/logs/mlflow.log" 2>&1 < /dev/null &
echo $! > "$pidfile"
for _ in $(seq 1 600); do
    answers && { echo "$url" | tee "$dir/server.url"; exit 0; }
    kill -0 "$(cat "$pidfile")" 2>/dev/null || break
    sleep 0.5
done
tail -n 20 "$dir/logs/mlflow.log" >&2
mlflow_stop
pg_stop
die "the MLflow server did not come up on $url (log: $dir/logs/mlflow.log)"
