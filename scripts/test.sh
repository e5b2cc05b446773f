#!/usr/bin/env bash
# Every test of the project: formatting, lints (native and wasm32), the Rust unit, property
# and integration tests, then the browser end-to-end tests in headless Chromium.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }

bash scripts/setup.sh --test

say "rustfmt"
cargo fmt --all -- --check
say "clippy (native)"
cargo clippy --workspace --exclude client-wasm --all-targets --locked -- -D warnings
say "clippy (wasm32)"
cargo clippy -p client-wasm --target wasm32-unknown-unknown --locked -- -D warnings

say "Rust tests"
mkdir -p target
cargo test --workspace --locked 2>&1 | tee target/cargo-test.log

say "fuzzing (briefly)"
bash scripts/fuzz.sh 10

bash scripts/build.sh
bash scripts/e2e.sh

# One closing line for both runners.
rust=$(awk '/^test result:/ { p += $4; f += $6 } END { printf "%d %d", p, f }' target/cargo-test.log)
browser=$(node -e '
  const s = require("./e2e/artifacts/results.json").stats;
  console.log(`${s.expected + s.flaky} ${s.unexpected}`);')
read -r rust_passed rust_failed <<<"$rust"
read -r e2e_passed e2e_failed <<<"$browser"
echo
echo "Rust: $rust_passed passed, browser: $e2e_passed passed"
echo "summary: $((rust_passed + e2e_passed)) passed, $((rust_failed + e2e_failed)) failed"
