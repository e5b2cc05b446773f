#!/usr/bin/env bash
# Signalling server benchmark: our signal-server, matchbox_server (crates.io) and the PeerJS
# server (npm) side by side on loopback, driven by the load generator in loadgen/. Prints
# Markdown tables; results are recorded in BENCHMARKS.md.
#   scripts/bench-server.sh [peers] [idle peers]
#     peers       peers of the relay scenarios (default 2000, rooms of 4)
#     idle peers  peers of the idle hold (default 19000; the server may open 20,000 files)
# Each scenario gets freshly started servers, so one scenario's memory does not carry over to
# the next. Everything started here is stopped on exit. Server logs: target/bench-server/.
set -euo pipefail
cd "$(dirname "$0")/.."

peers=${1:-2000}
idle_peers=${2:-19000}
matchbox_version=0.15.0
tools=target/bench-tools
release=${CARGO_TARGET_DIR:-target}/release
logs=target/bench-server
swarm_port=${BENCH_SWARM_PORT:-18701}
matchbox_port=${BENCH_MATCHBOX_PORT:-18702}
peerjs_port=${BENCH_PEERJS_PORT:-18703}
# Source addresses for the idle hold's client sockets, so no address runs out of ports.
idle_sources=127.0.0.2-127.0.0.9

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

# --- what the benchmark needs ---------------------------------------------------------------
if [ ! -x "$tools/bin/matchbox_server" ]; then
  say "installing matchbox_server $matchbox_version into $tools (a few minutes, once)"
  cargo install --locked matchbox_server --version "$matchbox_version" --root "$tools"
fi
if ! command -v npm >/dev/null; then
  echo "bench-server: npm is needed for the PeerJS server" >&2
  exit 1
fi
if [ ! -x bench/peerjs/node_modules/.bin/peerjs ] ||
  [ bench/peerjs/package-lock.json -nt bench/peerjs/node_modules/.package-lock.json ]; then
  say "installing the PeerJS server (bench/peerjs)"
  (cd bench/peerjs && npm ci --no-audit --no-fund)
fi
say "building signal-server and loadgen (release)"
cargo build --release -p signal-server -p swarm-loadgen
mkdir -p "$logs"

# --- the servers ----------------------------------------------------------------------------
pids=()
generator=

start_servers() {
  # A benchmark opens thousands of connections from each loopback address: lift the
  # per-address connection limit (0 = none). Other limits keep their defaults.
  SIGNAL_MAX_CONNECTIONS_PER_IP=0 RUST_LOG=warn \
    "$release/signal-server" --listen "127.0.0.1:$swarm_port" --www www \
    >"$logs/swarm.log" 2>&1 &
  swarm_pid=$!
  RUST_LOG=error "$tools/bin/matchbox_server" "127.0.0.1:$matchbox_port" \
    >"$logs/matchbox.log" 2>&1 &
  matchbox_pid=$!
  # PeerJS refuses clients beyond --concurrent_limit (5,000 by default): lift it.
  node bench/peerjs/node_modules/peer/dist/bin/peerjs.js --host 127.0.0.1 \
    --port "$peerjs_port" --concurrent_limit 1000000 >"$logs/peerjs.log" 2>&1 &
  peerjs_pid=$!
  pids=("$swarm_pid" "$matchbox_pid" "$peerjs_pid")
  for port in "$swarm_port" "$matchbox_port" "$peerjs_port"; do
    for _ in $(seq 100); do
      (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && continue 2
      sleep 0.1
    done
    echo "bench-server: nothing listening on port $port after 10 s (logs in $logs)" >&2
    exit 1
  done
}

stop_servers() {
  if [ -n "$generator" ]; then
    kill "$generator" 2>/dev/null || true
    wait "$generator" 2>/dev/null || true
    generator=
  fi
  [ ${#pids[@]} -gt 0 ] || return 0
  kill "${pids[@]}" 2>/dev/null || true
  for _ in $(seq 50); do
    alive=0
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ $alive = 0 ] && break
    sleep 0.1
  done
  for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
  wait "${pids[@]}" 2>/dev/null || true
  pids=()
}
trap stop_servers EXIT
trap 'exit 130' INT TERM

targets() {
  printf -- '--target kind=swarm,addr=127.0.0.1:%s,pid=%s ' "$swarm_port" "$swarm_pid"
  printf -- '--target kind=matchbox,addr=127.0.0.1:%s,pid=%s ' "$matchbox_port" "$matchbox_pid"
  printf -- '--target kind=peerjs,addr=127.0.0.1:%s,pid=%s' "$peerjs_port" "$peerjs_pid"
}

# Runs one scenario against fresh servers; every run is bounded.
scenario() {
  local title=$1
  shift
  start_servers
  say "$title"
  # In the background, so that an interrupt is handled at once (it stops the generator, whose
  # worker processes exit when their stdin closes, and the servers).
  # shellcheck disable=SC2046 # targets() prints separate words on purpose
  timeout 300 "$release/loadgen" "$@" $(targets) >"$logs/table.md" &
  generator=$!
  wait "$generator"
  generator=
  stop_servers
  printf '\n### %s\n\n`loadgen %s`\n\n' "$title" "$*"
  cat "$logs/table.md"
}

{
  printf '## Signalling servers: swarm signal-server vs matchbox_server %s vs PeerJS server %s\n\n' \
    "$matchbox_version" "$(node -p 'require("./bench/peerjs/node_modules/peer/package.json").version')"
  printf '%s, %s cores, %s GiB, %s, node %s. Ratios are swarm / other.\n' \
    "$(date -u +%Y-%m-%d)" "$(nproc)" "$(awk '/MemTotal/ {printf "%.0f", $2 / 1048576}' /proc/meminfo)" \
    "$(rustc --version | cut -d' ' -f1-2)" "$(node --version)"
  scenario "Relay, as fast as possible ($peers peers, rooms of 4, 10 rounds)" \
    relay --peers "$peers" --room-size 4 --rounds 10
  scenario "Relay, paced at 10,000 signals/s ($peers peers, rooms of 4, 10 rounds)" \
    relay --peers "$peers" --room-size 4 --rounds 10 --rate 10000
  scenario "Idle hold ($idle_peers peers, rooms of 4)" \
    hold --peers "$idle_peers" --room-size 4 --per-process 5000 --hold-secs 10 \
    --connect-concurrency 128 --source-addrs "$idle_sources"
}
