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
cargo test --workspace --locked

bash scripts/build.sh
bash scripts/e2e.sh
