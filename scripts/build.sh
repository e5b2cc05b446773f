#!/usr/bin/env bash
# Builds the WASM client into www/pkg/, the signalling server and the native peer (release).
set -euo pipefail
cd "$(dirname "$0")/.."

printf '\033[1m==> %s\033[0m\n' "building the WASM client into www/pkg/"
wasm-pack build client-wasm --release --target web --out-dir ../www/pkg --no-pack
printf '\033[1m==> %s\033[0m\n' "building signal-server and the native peer (swarm-peer)"
cargo build --release -p signal-server -p swarm-peer
