#!/usr/bin/env bash
# Retention against a hand-written DELETE: 1,000,000 then 10,000,000 page views, half of
# them due; then a nightly run, 10,000,000 page views of which the oldest 1% are due;
# then 1,000,000 with half due, half of those pinned by a row that stays (masked).
set -euo pipefail
cd "$(dirname "$0")/.."
LETHE_BENCH_ROWS=1000000 cargo bench --bench retention
LETHE_BENCH_ROWS=10000000 cargo bench --bench retention
LETHE_BENCH_ROWS=10000000 LETHE_BENCH_DUE_PERCENT=1 cargo bench --bench retention
LETHE_BENCH_ROWS=1000000 LETHE_BENCH_PINNED=1 cargo bench --bench retention
