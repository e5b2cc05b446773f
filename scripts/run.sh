#!/usr/bin/env bash
# Sets up, builds, and serves the page and the signalling server on 127.0.0.1:8080 (override
# with SIGNAL_LISTEN=ADDR:PORT). Stop it with Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
bash scripts/build.sh
listen=${SIGNAL_LISTEN:-127.0.0.1:8080}
echo
echo "Open http://$listen/#demo in two or more browser tabs."
echo
exec target/release/signal-server --listen "$listen" --www www
