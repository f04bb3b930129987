#!/usr/bin/env bash
# lethe against Fides (ethyca-fides 2.78.2, the open-source privacy engine of Ethyca) on
# the same PostgreSQL database: Fides' own sample shop (postgres_sample.sql of its
# package), scaled to 100,000 customers with the secondary indexes each engine's lookups
# use. Both engines run as in production: Fides' webserver with a Celery worker (Redis as
# the broker), `lethe serve` with its own worker. Requests go in through each engine's API
# for requests that are already verified: Fides' privacy-request API (identity
# verification and approval turned off), lethe's OpenDSR route with a DPO token (no
# e-mailed code; no approval is configured).
#
# Measured, interleaved person by person (each engine with people of its own, so that no
# erasure meets someone the other engine erased):
#   - access and erasure, submit -> completed, N of each per engine (median and range);
#   - a burst of BURST access requests per engine: makespan -> requests/s;
#   - memory: Fides' server + worker processes against lethe's one process.
# Erasures do comparable work: Fides' default erasure policy masks, with HMAC, only the
# fields that declare `fides_meta.data_type` (customer.email and .name, employee.email and
# .name, visit.email, report.email, service_request.alt_email) and deletes nothing; lethe's
# policy here (scripts/fides/lethe-policy.yaml) hashes the same fields and keeps the rest.
# What each engine actually changed is read back from the database and printed.
#
# Run by hand, not in CI (it installs Fides from PyPI and needs a few minutes):
#
#   scripts/bench-vs-fides.sh
#   N=20 BURST=20 WORK=/tmp/lethe-vs-fides scripts/bench-vs-fides.sh
#   LETHE_BIN=/path/to/lethe scripts/bench-vs-fides.sh     # skip `cargo build --release`
#   LETHE_REV=HEAD scripts/bench-vs-fides.sh   # build a commit (git archive), not the work tree
#
# Needs: python3 >= 3.9 with venv (3.11 tested), PostgreSQL on 127.0.0.1:5432 where the
# user `postgres` connects without a password (trust), curl, cargo; Debian's redis-server
# is installed with apt-get when missing. Everything started listens on 127.0.0.1 only
# (Redis 18379, Fides 18380, lethe 18381: REDIS_PORT, FIDES_PORT, LETHE_PORT) and is
# stopped on exit. The work directory (virtualenv, Fides' and lethe's state, logs) is kept
# and reused; the scaled database is built once and reused until its people run out
# (FRESH_DB=1 rebuilds it).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
here=$root/scripts/fides

WORK=${WORK:-/tmp/lethe-vs-fides}
N=${N:-10}
BURST=${BURST:-20}
CUSTOMERS=${CUSTOMERS:-100000}
REDIS_PORT=${REDIS_PORT:-18379}
FIDES_PORT=${FIDES_PORT:-18380}
lethe_port=${LETHE_PORT:-18381}
lethe_bin=${LETHE_BIN:-}
lethe_rev=${LETHE_REV:-}
PYTHON=${PYTHON:-python3}
PG_ADMIN=${PG_ADMIN:-postgres://postgres@127.0.0.1:5432}
FIDES_VERSION=2.78.2
# The role both engines use, Fides' own database, and the benchmark (shop) database.
PG_ROLE=fides_bench
PG_PASS=fides_bench
FIDES_DB=lethe_vs_fides_app
SHOP_DB=lethe_vs_fides_shop
SHOP_URL=postgres://$PG_ROLE:$PG_PASS@127.0.0.1:5432/$SHOP_DB
REDIS_PASS=lethe-vs-fides

say() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf 'bench-vs-fides: %s\n' "$*" >&2; exit 2; }
started=$(date +%s)
export PYTHONDONTWRITEBYTECODE=1   # no __pycache__ in scripts/fides

# Settings from the caller's environment must not change either engine (LETHE_PORT,
# LETHE_BIN and LETHE_REV, this script's own, were read above).
while read -r v; do unset "$v"; done < <(compgen -e | grep -E '^(LETHE_|FIDES__)' || true)

# --- What is needed ---------------------------------------------------------------------
[[ "$N" =~ ^[1-9][0-9]*$ ]] || die "N must be a whole number of requests (got $N)"
if ! [[ "$BURST" =~ ^[1-9][0-9]*$ ]] || [ "$BURST" -gt 100 ]; then
  die "BURST must be 1 to 100 (got $BURST)"
fi
for c in curl psql "$PYTHON"; do
  command -v "$c" >/dev/null || die "$c is needed"
done
"$PYTHON" -c 'import sys, venv; assert sys.version_info >= (3, 9)' 2>/dev/null ||
  die "$PYTHON must be Python 3.9 or later with the venv module (set PYTHON=...)"
psql "$PG_ADMIN/postgres" -qAtc 'SELECT 1' >/dev/null 2>&1 ||
  die "PostgreSQL is needed at $PG_ADMIN (user postgres, trust authentication; set PG_ADMIN=...)"
if ! command -v redis-server >/dev/null; then
  say "installing Debian's redis-server"
  apt-get install -y -q redis-server >/dev/null 2>&1 ||
    { apt-get update -q >/dev/null && apt-get install -y -q redis-server >/dev/null; } ||
    die "redis-server is needed: apt-get install -y redis-server"
fi
for port in "$REDIS_PORT" "$FIDES_PORT" "$lethe_port"; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    die "something already listens on 127.0.0.1:$port (an earlier run that was killed? set REDIS_PORT, FIDES_PORT or LETHE_PORT)"
  fi
done
mkdir -p "$WORK"/{fides,lethe/policies/fides,lethe/jobs,redis}

# --- Everything started is stopped on exit -----------------------------------------------
# Each service runs in a session of its own (setsid), so that its whole process group
# (Celery's forked workers included) is stopped, and nothing else.
pids=()
token_id=
bench_pid=
stop_all() {
  local pid
  [ -z "$bench_pid" ] || kill "$bench_pid" 2>/dev/null || true
  for pid in "${pids[@]}"; do kill -TERM -- "-$pid" 2>/dev/null || true; done
  for _ in $(seq 1 50); do
    local alive=0
    for pid in "${pids[@]}"; do kill -0 -- "-$pid" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && break
    sleep 0.2
  done
  for pid in "${pids[@]}"; do kill -KILL -- "-$pid" 2>/dev/null || true; done
  # The run's admin token ends with the run.
  [ -z "$token_id" ] || lethe admin token revoke "$token_id" >/dev/null 2>&1 || true
}
trap stop_all EXIT
trap 'exit 130' INT TERM HUP

# start LOGFILE DIR COMMAND...: runs COMMAND in DIR as the leader of a new session; its
# pid is left in $started_pid.
start() {
  local log=$1 dir=$2
  shift 2
  (cd "$dir" && exec setsid "$@" >"$log" 2>&1 </dev/null) &
  started_pid=$!
  pids+=("$started_pid")
}

# wait_for NAME PID LOG SECONDS COMMAND...: until COMMAND succeeds; fails early when the
# process has gone, showing the end of its log.
wait_for() {
  local name=$1 pid=$2 log=$3 secs=$4
  shift 4
  local t=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    kill -0 "$pid" 2>/dev/null || { tail -n 30 "$log" >&2; die "$name stopped (log: $log)"; }
    [ $SECONDS -lt $t ] || { tail -n 30 "$log" >&2; die "$name not ready after ${secs} s (log: $log)"; }
    sleep 0.5
  done
}

# --- lethe -------------------------------------------------------------------------------
# The work tree, or with LETHE_REV a commit exported to the work directory. The build
# goes to CARGO_TARGET_DIR when set.
if [ -n "$lethe_bin" ]; then
  bin=$lethe_bin
elif [ -n "$lethe_rev" ]; then
  src=$WORK/lethe-src
  say "building lethe $lethe_rev (git archive into $src; cargo build --release)"
  rm -rf "$src" && mkdir -p "$src"
  git -C "$root" archive "$lethe_rev" | tar -x -C "$src"
  (cd "$src" && cargo build --release --quiet) || die "cargo build --release of $lethe_rev failed"
  bin=${CARGO_TARGET_DIR:-$src/target}/release/lethe
else
  say "building lethe (cargo build --release)"
  cargo build --release --quiet || die "cargo build --release failed (LETHE_REV=HEAD builds the last commit)"
  bin=${CARGO_TARGET_DIR:-$root/target}/release/lethe
fi
[ -x "$bin" ] || die "no lethe binary at $bin"

# --- Fides, in a virtualenv of the work directory ----------------------------------------
venv=$WORK/venv
if ! "$venv/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('ethyca-fides') != '$FIDES_VERSION')" 2>/dev/null; then
  say "installing ethyca-fides==$FIDES_VERSION into $venv (a few minutes)"
  rm -rf "$venv"
  "$PYTHON" -m venv "$venv" || die "$PYTHON -m venv failed (on Debian's python3: apt-get install python3-venv)"
  "$venv/bin/pip" install -q -U pip
  "$venv/bin/pip" install -q "ethyca-fides==$FIDES_VERSION" ||
    die "pip install ethyca-fides==$FIDES_VERSION failed"
fi
sample=$("$venv/bin/python" -c 'import fides, os; print(os.path.join(os.path.dirname(fides.__file__), "data", "sample_project"))')
[ -f "$sample/postgres_sample.sql" ] || die "the Fides package has no sample project at $sample"
dataset=$root/tests/fixtures/fides-sample/fides/postgres_example_test_dataset.yml
cmp -s "$sample/sample_resources/postgres_example_test_dataset.yml" "$dataset" ||
  say "warning: Fides' packaged sample dataset differs from tests/fixtures/fides-sample's copy"

# --- PostgreSQL: a role, Fides' own database, the scaled sample shop ----------------------
pg() { PGOPTIONS='-c client_min_messages=warning' psql "$PG_ADMIN/${1}" -v ON_ERROR_STOP=1 -qAt "${@:2}"; }
pg postgres -c "DO \$\$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$PG_ROLE') THEN
    CREATE ROLE $PG_ROLE LOGIN PASSWORD '$PG_PASS';
  END IF; END \$\$;"
if [ -z "$(pg postgres -c "SELECT 1 FROM pg_database WHERE datname = '$FIDES_DB'")" ]; then
  pg postgres -c "CREATE DATABASE $FIDES_DB OWNER $PG_ROLE"
fi
# Extensions Fides' migrations create, made here so that its role needs no superuser.
pg "$FIDES_DB" -c 'CREATE EXTENSION IF NOT EXISTS pgcrypto; CREATE EXTENSION IF NOT EXISTS pg_trgm; CREATE EXTENSION IF NOT EXISTS citext;'

# The shop is built once, marked with a comment naming its build; the people used so far
# are counted in the work directory under the same build id.
need=$((2 + 4 * N + 2 * BURST))
[ "$need" -le "$CUSTOMERS" ] || die "N=$N and BURST=$BURST need $need customers; CUSTOMERS is $CUSTOMERS"
marker=$(pg postgres -c "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = '$SHOP_DB'")
build=$(cat "$WORK/shop-build" 2>/dev/null || true)
next=$(cat "$WORK/next-person" 2>/dev/null || echo 1)
if [ "${FRESH_DB:-0}" = 1 ] || [ -z "$build" ] || [ "$marker" != "lethe-vs-fides $CUSTOMERS $build" ] ||
  [ $((next + need - 1)) -gt "$CUSTOMERS" ]; then
  say "building $SHOP_DB: Fides' sample + $CUSTOMERS customers, with indexes (a minute or two)"
  pg postgres -c "DROP DATABASE IF EXISTS $SHOP_DB" -c "CREATE DATABASE $SHOP_DB OWNER $PG_ROLE"
  # Loaded as the role both engines use, so that the tables are its own. (ANALYZE, in the
  # files, skips the system catalogues with a warning for each: warnings are not shown.)
  shop() { PGOPTIONS='-c client_min_messages=error' psql "$SHOP_URL" -v ON_ERROR_STOP=1 -q "$@"; }
  shop -f "$sample/postgres_sample.sql" >/dev/null
  shop -v n="$CUSTOMERS" -f "$here/scale_data.sql"
  shop -f "$here/scale_indexes.sql"
  pg "$SHOP_DB" -c 'VACUUM ANALYZE'
  build=$(date +%s)
  pg postgres -c "COMMENT ON DATABASE $SHOP_DB IS 'lethe-vs-fides $CUSTOMERS $build'"
  echo "$build" >"$WORK/shop-build"
  next=1
fi
echo "$((next + need))" >"$WORK/next-person"

# --- Redis, for Fides (it always sends a password) ----------------------------------------
start "$WORK/redis/redis.log" "$WORK/redis" redis-server --bind 127.0.0.1 --port "$REDIS_PORT" \
  --save "" --appendonly no --requirepass "$REDIS_PASS" --daemonize no
redis_pid=$started_pid
wait_for Redis "$redis_pid" "$WORK/redis/redis.log" 20 \
  redis-cli -h 127.0.0.1 -p "$REDIS_PORT" -a "$REDIS_PASS" --no-auth-warning ping

# --- Fides: webserver + Celery worker -----------------------------------------------------
cat >"$WORK/fides/fides.toml" <<EOF
[database]
server = "127.0.0.1"
port = "5432"
user = "$PG_ROLE"
password = "$PG_PASS"
db = "$FIDES_DB"
load_samples = false

[redis]
host = "127.0.0.1"
port = $REDIS_PORT
password = "$REDIS_PASS"
db_index = 0

[security]
env = "dev"
app_encryption_key = "examplevalidprojectencryptionkey"
oauth_root_client_id = "fidesadmin"
oauth_root_client_secret = "fidesadminsecret"
root_username = "root_user"
root_password = "Testpassword1!"
cors_origins = ["http://127.0.0.1:$FIDES_PORT"]

[execution]
# Requests run as soon as they are submitted, as lethe's OpenDSR requests do.
require_manual_request_approval = false
subject_identity_verification_required = false
# Keeps Fides' "requeue interrupted tasks" poller (every 300 s) out of the run.
interrupted_task_requeue_interval = 86400

[celery]
task_always_eager = false

[cli]
server_host = "127.0.0.1"
server_port = $FIDES_PORT
analytics_id = "lethe-vs-fides"

[user]
analytics_opt_out = true
username = "root_user"
password = "Testpassword1!"

[logging]
level = "INFO"
EOF
fides_env=(env FIDES__CONFIG_PATH="$WORK/fides/fides.toml" FIDES__USER__ANALYTICS_OPT_OUT=true
  FIDES__SECURITY__ENV=dev FIDES__CELERY__TASK_ALWAYS_EAGER=false FIDES_BENCH_PORT="$FIDES_PORT"
  PATH="$venv/bin:$PATH")
say "starting Fides on 127.0.0.1:$FIDES_PORT (its first start also migrates its database)"
start "$WORK/fides/server.log" "$WORK/fides" "${fides_env[@]}" "$venv/bin/python" "$here/run_server.py"
fides_server_pid=$started_pid
start "$WORK/fides/worker.log" "$WORK/fides" "${fides_env[@]}" "$venv/bin/fides" worker
fides_worker_pid=$started_pid
wait_for "Fides' webserver" "$fides_server_pid" "$WORK/fides/server.log" 300 \
  curl -fsS "http://127.0.0.1:$FIDES_PORT/health"
wait_for "Fides' worker" "$fides_worker_pid" "$WORK/fides/worker.log" 120 \
  sh -c "curl -fsS http://127.0.0.1:$FIDES_PORT/health/workers | grep -q '\"workers\":\\[\"celery@'"
"$venv/bin/python" "$here/setup_fides.py" "http://127.0.0.1:$FIDES_PORT" "$SHOP_DB" "$PG_ROLE" "$PG_PASS" "$dataset" >&2

# --- lethe serve --------------------------------------------------------------------------
ldir=$WORK/lethe
sed "s|@URL@|$SHOP_URL|" "$here/lethe-policy.yaml" >"$ldir/policies/policy.yaml"
cp "$dataset" "$ldir/policies/fides/"
cat >"$ldir/lethe.toml" <<EOF
policies = "$ldir/policies"
database = "sqlite://$ldir/lethe.db?mode=rwc"
jobs = "$ldir/jobs"            # empty: no scheduled job runs during the benchmark
key_dir = "$ldir/.lethe"
demo_data = false
public_url = "http://127.0.0.1:$lethe_port"
rate_limit = 0                 # the OpenDSR routes share the public per-client limit
# No smtp_url: e-mails are written to $ldir/outbox. No approval: requests run at once.
EOF
lethe() { (cd "$ldir" && "$bin" --config "$ldir/lethe.toml" "$@"); }
lethe check --live >"$ldir/check.log" 2>&1 || { cat "$ldir/check.log" >&2; die "lethe check --live failed"; }
token=$(lethe admin token create --role dpo --label bench-vs-fides --expires 1d 2>"$ldir/token.log" | tail -n 1)
[ -n "$token" ] || { cat "$ldir/token.log" >&2; die "lethe admin token create printed no token"; }
token_id=$(sed -nE 's/^created dpo token ([0-9a-f]+).*/\1/p' "$ldir/token.log")
say "starting lethe on 127.0.0.1:$lethe_port"
start "$ldir/serve.log" "$ldir" "$bin" --config "$ldir/lethe.toml" serve --bind "127.0.0.1:$lethe_port"
lethe_pid=$started_pid
wait_for lethe "$lethe_pid" "$ldir/serve.log" 60 curl -fsS "http://127.0.0.1:$lethe_port/readyz"

# --- The measurement -----------------------------------------------------------------------
say "timing: $N access and $N erasure requests per engine, interleaved; bursts of $BURST"
if [ -n "$lethe_bin" ]; then
  what="lethe binary $lethe_bin"
elif [ -n "$lethe_rev" ]; then
  what="lethe $(git -C "$root" rev-parse --short "$lethe_rev")"
else
  what="lethe work tree at $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo '?')"
  [ -z "$(git -C "$root" status --porcelain -- src Cargo.toml Cargo.lock migrations templates 2>/dev/null)" ] ||
    what="$what + uncommitted changes"
fi
echo "$what vs Fides $FIDES_VERSION; $CUSTOMERS customers; $(nproc) cores; $(date -u +%Y-%m-%dT%H:%MZ)"
echo "Fides: webserver + Celery worker (concurrency 2); lethe serve: its default workers (one per core, at least 2)"
echo "Polled every 10 ms per request (bursts: every 100 ms; Fides in one list call, lethe per request)"
"$venv/bin/python" "$here/bench.py" --fides "http://127.0.0.1:$FIDES_PORT" \
  --lethe "http://127.0.0.1:$lethe_port" --lethe-token "$token" --db "$SHOP_URL" \
  --first "$next" --n "$N" --burst "$BURST" \
  --fides-pids "$fides_server_pid,$fides_worker_pid" --lethe-pid "$lethe_pid" \
  --out "$WORK/results-$(date +%Y%m%d-%H%M%S).json" &
bench_pid=$!
wait "$bench_pid"   # (in the background, so that a TERM stops the run at once)
bench_pid=

# The same access as one `lethe dsr access` process (start, policy, store, the search, the
# package), against the access over HTTP above: what the service adds to the work itself.
# Access changes nothing, so the last customers of the shop serve, whoever else read them.
cli=()
for i in $(seq 1 "$N"); do
  t0=$(date +%s%N)
  lethe dsr access --identity "email=gen-$((CUSTOMERS - i))@example.com" --out "$ldir/cli-access.zip" \
    >/dev/null 2>"$ldir/cli-access.log" || { cat "$ldir/cli-access.log" >&2; die "lethe dsr access failed"; }
  cli+=($(( ($(date +%s%N) - t0) / 1000 )))
done
rm -f "$ldir/cli-access.zip"
results=$(ls -t "$WORK"/results-*.json | head -n 1)
"$venv/bin/python" - "$results" "${cli[@]}" <<'PY'
import json, statistics, sys
http = statistics.median(json.load(open(sys.argv[1]))["access"]["lethe"])
cli = statistics.median(int(us) for us in sys.argv[2:]) / 1e6
print(f"lethe access over HTTP, submit -> completed: {http:.3f} s; one `lethe dsr access` process: "
      f"{cli:.3f} s (median of {len(sys.argv) - 2}); HTTP / process = {http / cli:.2f}x (aim <= 1.5x)")
PY
cat <<EOF

Erasure, what each engine is set to change: Fides' default_erasure_policy masks with HMAC
the fields that declare fides_meta.data_type (customer.email/name, employee.email/name,
visit.email, report.email, service_request.alt_email) and deletes no row; lethe hashes the
same fields (masking: hash, erasure: keep_row) and keeps address, login and payment_card
under a hold (scripts/fides/lethe-policy.yaml). What they did change is counted above, read
back from the database. Both read every collection the dataset links to the person; before
erasing, lethe also counts the rows that refer to the person's rows, to keep rows shared
with other people (on the index, each count stopping one past the person's own: here the
order_items of the products the person ordered), writes its audit entry and shreds the
person's audit key. Both engines store an access package (Fides
on local disk, lethe sealed in its store); lethe also queues a completion e-mail (a file in
its outbox directory). Identity lookups use an index on each side: Fides' on the column,
lethe's on lower(column).
Whole run: $(($(date +%s) - started)) s. Logs and results: $WORK
EOF
