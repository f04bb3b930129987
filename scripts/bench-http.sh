#!/usr/bin/env bash
# Load on the request API of `lethe serve`, with wrk (Debian package `wrk`), on loopback:
# submit (POST /v1/requests, a new person each time: insert, audit entry, code e-mail to
# the outbox, all in one transaction, then the .eml written) and status (GET
# /v1/requests/{id} with the token), on a SQLite and a PostgreSQL store. The ceiling is
# axum's own /healthz on the same server in the same run. Then, with at least 10,000
# requests in the store, the DPO workspace's overview, queue (first and 100th page) and
# register pages on one connection, against /healthz on one connection.
#
#   scripts/bench-http.sh            # SQLite, and PostgreSQL at postgres://postgres@127.0.0.1:5432
#   BENCH_PG=postgres://... DURATION=20s CONNECTIONS=64 scripts/bench-http.sh
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
command -v wrk >/dev/null || { echo "wrk is needed: apt-get install -y wrk" >&2; exit 2; }
duration=${DURATION:-10s}
connections=${CONNECTIONS:-32}
threads=${THREADS:-2}
pg=${BENCH_PG-postgres://postgres@127.0.0.1:5432}

cargo build --release --quiet
bin=$root/target/release/lethe
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

cat > "$work/submit.lua" <<'EOF'
-- A new person for every request, so each one is a real insert.
local n = 0
local prefix = tostring(math.random(1, 1e9))
request = function()
  n = n + 1
  local body = string.format('{"type":"access","identity":{"email":"bench-%s-%d@example.org"}}', prefix, n)
  return wrk.format("POST", "/v1/requests", { ["Content-Type"] = "application/json" }, body)
end
EOF

# wrk's "Requests/sec" and its 99th percentile, in ms.
measure() {
  local out
  out=$(wrk -t"$threads" -c"$connections" -d"$duration" --latency "$@")
  local rps p99 errors
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  p99=$(awk '$1 == "99%" {v=$2; if (v ~ /us$/) {sub(/us/,"",v); v=v/1000} else if (v ~ /ms$/) {sub(/ms/,"",v)} else if (v ~ /s$/) {sub(/s/,"",v); v=v*1000}; print v}' <<<"$out")
  errors=$(awk '/Non-2xx/ {print $5}' <<<"$out")
  echo "$rps ${p99:-?} ${errors:-0}"
}

run_store() {
  local label=$1 url=$2 port=$3
  local dir="$work/$label"
  mkdir -p "$dir"
  (cd "$dir" && LETHE_RATE_LIMIT=0 LETHE_LOG_FORMAT=json RUST_LOG=warn \
    "$bin" serve --bind "127.0.0.1:$port" --database "$url" \
    --policies "$root/policies" --jobs "$dir/no-jobs" >"$dir/serve.log" 2>&1) &
  local pid=$!
  for _ in $(seq 1 100); do
    curl -fs "http://127.0.0.1:$port/readyz" >/dev/null && break
    sleep 0.2
  done
  local created id token
  created=$(curl -fs -X POST "http://127.0.0.1:$port/v1/requests" -H 'content-type: application/json' \
    -d '{"type":"access","identity":{"email":"status-probe@example.org"}}')
  id=$(sed -E 's/.*"id":"([^"]+)".*/\1/' <<<"$created")
  token=$(sed -E 's/.*"token":"([^"]+)".*/\1/' <<<"$created")
  read -r h_rps h_p99 _ < <(measure "http://127.0.0.1:$port/healthz")
  read -r s_rps s_p99 s_err < <(measure -s "$work/submit.lua" "http://127.0.0.1:$port")
  read -r g_rps g_p99 g_err < <(measure -H "Authorization: Bearer $token" "http://127.0.0.1:$port/v1/requests/$id")
  printf '%-10s %-24s %12s %10s %8s %10s\n' "$label" "/healthz (ceiling)" "$h_rps" "$h_p99" "1.00" "-"
  printf '%-10s %-24s %12s %10s %8s %10s\n' "$label" "POST /v1/requests" "$s_rps" "$s_p99" \
    "$(awk -v a="$s_rps" -v b="$h_rps" 'BEGIN {printf "%.3f", a/b}')" "$s_err"
  printf '%-10s %-24s %12s %10s %8s %10s\n' "$label" "GET /v1/requests/{id}" "$g_rps" "$g_p99" \
    "$(awk -v a="$g_rps" -v b="$h_rps" 'BEGIN {printf "%.3f", a/b}')" "$g_err"
  # The workspace's pages with at least 10,000 requests in the store, one connection (the
  # time to render a page), against /healthz on one connection in the same run.
  local admin cookie count
  admin=$(cd "$dir" && "$bin" admin token create --role dpo --database "$url" 2>/dev/null | sed -nE 's/.*(lt_[0-9a-f_]+).*/\1/p' | head -n 1)
  cookie=$(curl -fs -o /dev/null -D - -X POST "http://127.0.0.1:$port/admin/login" \
    -H "origin: http://127.0.0.1:$port" --data-urlencode "token=$admin" |
    sed -nE 's/^[Ss]et-[Cc]ookie: (lethe_admin=[^;]+).*/\1/p')
  [ -n "$cookie" ] || { echo "$label: could not sign in to the workspace" >&2; return 1; }
  count() { curl -fs -H "cookie: $cookie" "http://127.0.0.1:$port/admin/requests?status=all" | sed -nE 's/.*<p>([0-9]+) requests?, .*/\1/p'; }
  count=$(count)
  while [ "${count:-0}" -lt 10000 ]; do
    wrk -t"$threads" -c"$connections" -d5s -s "$work/submit.lua" "http://127.0.0.1:$port" >/dev/null
    count=$(count)
  done
  read -r h1_rps h1_p99 _ < <(measure -t1 -c1 "http://127.0.0.1:$port/healthz")
  for page in "/admin" "/admin/requests" "/admin/requests?status=all&page=100" "/admin/register"; do
    read -r p_rps p_p99 p_err < <(measure -t1 -c1 -H "cookie: $cookie" "http://127.0.0.1:$port$page")
    printf '%-10s %-24s %12s %10s %8s %10s\n' "$label" "GET $page" "$p_rps" "$p_p99" \
      "$(awk -v a="$p_rps" -v b="$h1_rps" 'BEGIN {printf "%.3f", a/b}')" "$p_err"
  done
  printf '%-10s %-24s %12s %10s %8s %10s\n' "$label" "(one connection: /healthz)" "$h1_rps" "$h1_p99" "1.00" "-"
  echo "$label: $count requests in the store; workspace pages on one connection: mean ms = 1000 / requests/s"
  pkill -TERM -P "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

echo "wrk -t$threads -c$connections -d$duration on 127.0.0.1, $(nproc) cores"
printf '%-10s %-24s %12s %10s %8s %10s\n' store route "requests/s" "p99 ms" "÷ceiling" "non-2xx"
run_store sqlite "sqlite://$work/sqlite/lethe.db?mode=rwc" 18180
if [ -n "$pg" ] && psql "$pg/postgres" -qAt -c 'select 1' >/dev/null 2>&1; then
  psql "$pg/postgres" -q -c 'DROP DATABASE IF EXISTS lethe_bench_http' >/dev/null
  psql "$pg/postgres" -q -c 'CREATE DATABASE lethe_bench_http' >/dev/null
  run_store postgres "$pg/lethe_bench_http" 18181
  psql "$pg/postgres" -q -c 'DROP DATABASE IF EXISTS lethe_bench_http' >/dev/null
else
  echo "postgres: skipped (no server at $pg)"
fi
