#!/usr/bin/env bash
# Runs the test suite again with the real clock moved a year forward and a year back
# (libfaketime, preloaded into every test binary and every `lethe` it starts). A test that
# passes today and fails here depends on the day it runs: it seeds data against a fixed
# date and hands it to code that reads the real clock, or the other way round.
# Arguments are passed to `cargo test` (e.g. `--test retention`).
set -euo pipefail
cd "$(dirname "$0")/.."

lib=/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1
if ! command -v faketime >/dev/null 2>&1 || [ ! -e "$lib" ]; then
  apt-get update -qq >/dev/null
  apt-get install -y -qq faketime >/dev/null
fi
# Timers and timeouts keep the real monotonic clock; only the calendar moves.
export FAKETIME_DONT_FAKE_MONOTONIC=1
# The shifted clock must actually reach a test binary, or this check proves nothing.
probe=$(faketime -f '+365d' date -u +%Y)
[ "$probe" -eq "$(($(date -u +%Y) + 1))" ] || {
  echo "faketime does not move the clock (got $probe)" >&2
  exit 1
}
# The browser keeps its own clocks and stalls under a moved one; tests/browser.rs runs in
# the normal suite and says here that it was skipped.
unset LETHE_TEST_CHROMEDRIVER
for shift in +365d -365d; do
  echo "== cargo test with the clock moved $shift"
  CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUNNER="faketime -f $shift" cargo test "$@"
done
