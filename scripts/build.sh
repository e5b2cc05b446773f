#!/usr/bin/env bash
# Builds the WASM client into www/pkg/ and the signalling server (release).
set -euo pipefail
cd "$(dirname "$0")/.."

printf '\033[1m==> %s\033[0m\n' "building the WASM client into www/pkg/"
wasm-pack build client-wasm --release --target web --out-dir ../www/pkg --no-pack
printf '\033[1m==> %s\033[0m\n' "building signal-server"
cargo build --release -p signal-server
