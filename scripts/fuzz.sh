#!/usr/bin/env bash
# Runs each fuzz target in fuzz/ for a while (default 10 s each): signalling frames, peer
# data-channel frames, and the server's room registry. Any crash fails the run and leaves the
# input in fuzz/artifacts/. Stable Rust is enough: the coverage instrumentation libFuzzer
# needs is passed as plain codegen flags (what `cargo fuzz` does, minus the sanitizer, which
# needs nightly). With nightly and cargo-fuzz installed, `cd fuzz && cargo fuzz run rooms`
# works too.
#   scripts/fuzz.sh [seconds per target]
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds=${1:-10}
targets="signal_frames peer_frames rooms hostile_peer"
triple=$(rustc -vV | sed -n 's/^host: //p')

cargo fmt --check
# With an explicit --target, RUSTFLAGS reach only the target's code, not build scripts.
RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
  -Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
  -Cllvm-args=-sanitizer-coverage-trace-compares -Cdebug-assertions -Coverflow-checks" \
  cargo build --release --locked --bins --target "$triple"

rm -rf artifacts && mkdir -p artifacts
for target in $targets; do
  printf '\033[1m==> fuzzing %s for %s s\033[0m\n' "$target" "$seconds"
  mkdir -p "corpus/$target"
  "target/$triple/release/$target" -max_total_time="$seconds" -print_final_stats=0 \
    -artifact_prefix="artifacts/$target-" "corpus/$target" 2>&1 | grep -E 'DONE|ERROR|panicked|crash' || true
  # libFuzzer exits non-zero on a crash; pipefail is off for the grep above, so check again.
  if ls "artifacts/$target-"* >/dev/null 2>&1; then
    echo "fuzz: $target crashed; inputs in fuzz/artifacts/" >&2
    exit 1
  fi
done
