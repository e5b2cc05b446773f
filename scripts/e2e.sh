#!/usr/bin/env bash
# Runs the browser end-to-end tests (e2e/) inside a network namespace of their own.
#
# Chromium ignores the loopback interface for WebRTC, so the pages need a real interface to
# gather candidates on; the namespace gives them one (a veth pair, both ends inside) without
# any traffic leaving the machine. The server and the browser both run inside it. Everything
# must be built before (the namespace has no route to package registries).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x target/release/signal-server ] || [ ! -f www/pkg/client_wasm.js ]; then
  echo "e2e: build first (scripts/build.sh)" >&2
  exit 1
fi

ns="swarm-e2e-$$"
cleanup() {
  if ip netns list | grep -qw "$ns"; then
    pids=$(ip netns pids "$ns" 2>/dev/null || true)
    [ -z "$pids" ] || kill $pids 2>/dev/null || true
    ip netns del "$ns"
  fi
}
trap cleanup EXIT

ip netns add "$ns"
ip -n "$ns" link set lo up
ip -n "$ns" link add v0 type veth peer name v1
ip -n "$ns" addr add 10.77.0.1/24 dev v0
ip -n "$ns" addr add 10.77.0.2/24 dev v1
ip -n "$ns" link set v0 up
ip -n "$ns" link set v1 up
# Chromium gathers no candidates at all without a default route.
ip -n "$ns" route add default via 10.77.0.2 dev v0

printf '\033[1m==> %s\033[0m\n' "browser end-to-end tests (network namespace $ns)"
ip netns exec "$ns" bash -c 'cd e2e && exec npx playwright test "$@"' e2e "$@"
