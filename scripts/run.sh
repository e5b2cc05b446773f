#!/usr/bin/env bash
# Sets up, builds, and serves the page and the signalling server on 127.0.0.1:8080 (override
# with SIGNAL_LISTEN=ADDR:PORT; SIGNAL_TLS_SELF_SIGNED=true serves https:// for a LAN). Stop it
# with Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
bash scripts/build.sh
listen=${SIGNAL_LISTEN:-127.0.0.1:8080}
echo
if [ "${SIGNAL_TLS_SELF_SIGNED:-false}" = true ]; then
  # The server prints the https:// URLs of its self-signed certificate, and its fingerprint.
  echo "Open one of the https:// URLs below, with #demo, in two or more browsers."
else
  echo "Open http://$listen/#demo in two or more browser tabs."
fi
echo
exec target/release/signal-server --listen "$listen" --www www
