#!/usr/bin/env bash
# Access and erasure against hand-written SQL on 100,000 people (see benches/dsr.rs).
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo bench --bench dsr
