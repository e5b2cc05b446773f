#!/usr/bin/env bash
# Benchmarks (not tests): file throughput between two pages through Swarm against a raw
# RTCDataChannel in the same Chromium and run, and the receiver's peak JS heap.
# Usage: scripts/bench.sh [MiB=512] [rounds=2]. Results are recorded in BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/netns.sh

bash scripts/setup.sh --test
bash scripts/build.sh
run_in_netns swarm-bench bash -c 'cd e2e && exec node bench/throughput.js "$@"' bench "$@"
