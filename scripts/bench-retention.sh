#!/usr/bin/env bash
# Retention against a hand-written DELETE: 1,000,000 then 10,000,000 page views.
set -euo pipefail
cd "$(dirname "$0")/.."
LETHE_BENCH_ROWS=1000000 cargo bench --bench retention
LETHE_BENCH_ROWS=10000000 cargo bench --bench retention
