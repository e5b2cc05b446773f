#!/usr/bin/env bash
# Benchmarks (not tests), each side by side in one run; results are recorded in BENCHMARKS.md.
#   scripts/bench.sh                      all benchmarks with their defaults
#   scripts/bench.sh throughput [MiB] [rounds] [shared|pinned|incognito]
#                                                Swarm vs a raw RTCDataChannel, receiver JS heap;
#                                                pinned: each page in its own Chromium on a core of its own
#   scripts/bench.sh scaling [MiB] [cap MiB/s]   1 downloader, N = 1, 2, 4 capped seeders
#   scripts/bench.sh media [rounds]              publish->frame, play->frame, seek->frame
#   scripts/bench.sh native [MiB] [seed GiB]     native peer: native/browser throughput, seeder RSS
#   scripts/bench.sh connect [rounds]            join -> first channel: plain, requireSigned, secret room
#   scripts/bench.sh server [peers] [idle peers] signal-server vs matchbox_server vs PeerJS
#   scripts/bench.sh profile [MiB]               CPU profile of both pages' main threads (a tool; not in all)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/netns.sh

which=${1:-all}
[ $# -gt 0 ] && shift

# The server benchmark needs no browser and runs on loopback, outside the network namespace.
if [ "$which" = server ]; then
  printf '\033[1m==> benchmark: %s\033[0m\n' server
  exec bash scripts/bench-server.sh "$@"
fi

bash scripts/setup.sh --test
bash scripts/build.sh
case "$which" in
  throughput|scaling|media|native|profile|connect) benches="$which" ;;
  all) benches="throughput scaling media native connect" ;;
  *) echo "bench: unknown benchmark '$which' (throughput, scaling, media, native, connect, server, profile, all)" >&2; exit 2 ;;
esac
for bench in $benches; do
  printf '\033[1m==> benchmark: %s\033[0m\n' "$bench"
  (run_in_netns "swarm-bench-$bench" bash -c 'cd e2e && exec node "bench/$0.js" "$@"' "$bench" "$@")
done
if [ "$which" = all ]; then
  printf '\033[1m==> benchmark: %s\033[0m\n' server
  bash scripts/bench-server.sh
fi
