#!/usr/bin/env bash
# Runs the browser end-to-end tests (e2e/) inside a network namespace of their own (see
# netns.sh). Arguments go to Playwright, e.g. `scripts/e2e.sh -g peer-left`.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/netns.sh

if [ ! -x target/release/signal-server ] || [ ! -x target/release/swarm-peer ] || [ ! -f www/pkg/client_wasm.js ]; then
  echo "e2e: build first (scripts/build.sh)" >&2
  exit 1
fi

printf '\033[1m==> %s\033[0m\n' "browser end-to-end tests (in a network namespace)"
run_in_netns swarm-e2e bash -c 'cd e2e && exec npx playwright test "$@"' e2e "$@"
