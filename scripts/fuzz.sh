#!/usr/bin/env bash
# Coverage-guided fuzzing with AFL++ (cargo-afl, stable Rust). Installs what it needs.
#
#   scripts/fuzz.sh [TARGET|all] [--runs N | --time S] [--resume]
#
# TARGET is one of the targets in fuzz/src/lib.rs (default: all, one after another).
# --runs N stops a target after about N inputs, --time S after S seconds (default: 60 s).
# --resume continues the corpus of an earlier run instead of starting from the seeds.
#
# Each target's corpus and findings are in fuzz/out/TARGET/ (not committed). The summary
# line per target gives inputs run, wall time, inputs per second and crashes; a crash makes
# the script exit 1 and is copied to fuzz/out/TARGET/found/. Keep it as a regression:
# copy it into fuzz/regressions/TARGET/ (replayed by `cargo test` in fuzz/, see
# scripts/test.sh), add a test next to the code it concerns, and fix it.
#
# Long campaigns share the machine: run them under `nice -n 19`, one at a time.
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_AFL_VERSION=0.18.2
TARGETS=(proposal canonical bundle merkle checkpoint query admission)

target=all
limit=(-V 60)
resume=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --runs) limit=(-E "$2"); shift 2 ;;
    --time) limit=(-V "$2"); shift 2 ;;
    --resume) resume=1; shift ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    -*) echo "unknown option $1" >&2; exit 2 ;;
    *) target="$1"; shift ;;
  esac
done
if [[ "$target" == all ]]; then
  selected=("${TARGETS[@]}")
elif [[ " ${TARGETS[*]} " == *" $target "* ]]; then
  selected=("$target")
else
  echo "no target $target; targets: ${TARGETS[*]}" >&2
  exit 2
fi

# cargo-afl from crates.io builds AFL++ from the source it ships (a C compiler and make are
# all it needs) and instruments with rustc's own LLVM passes: no nightly toolchain.
if ! cargo afl --version 2>/dev/null | grep -q "$CARGO_AFL_VERSION"; then
  echo "== installing cargo-afl $CARGO_AFL_VERSION (crates.io; builds AFL++, a few minutes)"
  cargo install --locked --force cargo-afl --version "$CARGO_AFL_VERSION"
fi
# Builds AFL++ for this rustc once (cargo install already did, for the rustc of then).
if ! config=$(cargo afl config --build 2>&1) && ! grep -q "already built" <<<"$config"; then
  echo "$config" >&2
  exit 1
fi

echo "== building the instrumented fuzz targets (fuzz/target)"
(cd fuzz && cargo afl build --release --features afl --bins)
bin=fuzz/target/release

# No UI (logs instead), no CPU pinning on a shared machine, crashes caught without the
# system's core dump settings, and no waiting for a CPU governor.
export AFL_NO_UI=1 AFL_NO_AFFINITY=1 AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1
export AFL_QUIET=1

stat() { grep -E "^$1 +:" "$2" | sed 's/.*: //'; }

failed=0
summary=()
for name in "${selected[@]}"; do
  out="fuzz/out/$name"
  if [[ $resume == 1 && -d "$out/default/queue" ]]; then
    input=-
  else
    rm -rf "$out"
    "$bin/fuzz-seeds" "$name" "$out/seeds"
    input="$out/seeds"
  fi
  echo "== fuzzing $name (${limit[*]})"
  started=$(date +%s)
  # -t: a generous time limit per input on a busy machine (admission runs many views).
  cargo afl fuzz -i "$input" -o "$out" -t 2000 "${limit[@]}" -- "$bin/fuzz-target" "$name" > "$out.log" 2>&1 || {
    echo "afl-fuzz failed for $name; the end of $out.log:" >&2
    tail -30 "$out.log" >&2
    failed=1
    continue
  }
  wall=$(( $(date +%s) - started ))
  stats="$out/default/fuzzer_stats"
  execs=$(stat execs_done "$stats")
  crashes=$(stat saved_crashes "$stats")
  hangs=$(stat saved_hangs "$stats")
  corpus=$(stat corpus_count "$stats")
  rate=$(( execs / (wall > 0 ? wall : 1) ))
  line="$name: $execs inputs in ${wall}s ($rate/s), corpus $corpus, crashes $crashes, hangs $hangs"
  summary+=("$line")
  echo "$line"
  if [[ "$crashes" != 0 || "$hangs" != 0 ]]; then
    mkdir -p "$out/found"
    cp "$out"/default/crashes/id:* "$out"/default/hangs/id:* "$out/found/" 2>/dev/null || true
    echo "   findings copied to $out/found/: replay one with" >&2
    echo "   (cd fuzz && cargo run --bin fuzz-replay -- $name out/$name/found/FILE)" >&2
    failed=1
  fi
done
echo "== summary"
printf '%s\n' "${summary[@]}"
exit $failed
