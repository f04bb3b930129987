#!/usr/bin/env bash
# Audit log throughput against raw INSERT and bare SHA-256 (see benches/audit.rs).
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo bench --bench audit
