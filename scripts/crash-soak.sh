#!/usr/bin/env bash
# The crash soak: N cycles of concurrent HTTP writers (single events, batches, retries with
# the same Idempotency-Key) against a release `cledger serve`, SIGKILL at a random moment,
# restart, and the checks of tests/src/soak.rs: every acknowledged event stored with its
# hash, no duplicate from any retry, `cledger verify --data` clean, views equal a rebuild.
#
#   scripts/crash-soak.sh [N] [SEED]     (N defaults to 1000; SEED repeats a run's choices)
#
# CI runs a few cycles of the same test in `cargo test` (tests/tests/crash_soak.rs). A long
# run shares the machine: start it with `nice -n 19`.
set -euo pipefail
cd "$(dirname "$0")/.."
export CLEDGER_SOAK_CYCLES="${1:-1000}"
if [[ -n "${2:-}" ]]; then export CLEDGER_SOAK_SEED="$2"; fi
exec cargo test --release -p e2e --test crash_soak -- --nocapture
