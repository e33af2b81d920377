#!/usr/bin/env bash
# Agent benchmarks: one 10k-endpoint reconcile pass, lease-move convergence,
# and overlay TCP throughput (iperf3, installed from Debian when missing).
# Figures only, compared within one run. Needs root (network namespaces).
set -euo pipefail
cd "$(dirname "$0")/.."
BERTH_WITH_BENCH_TOOLS=1 bash scripts/ensure-deps.sh
# The sandbox's NODE_EXTRA_CA_CERTS costs ~80 ms per node start; real nodes don't have it.
unset NODE_EXTRA_CA_CERTS
node dist/bench/agent-reconcile.js
node dist/bench/agent-converge.js
node dist/bench/overlay-throughput.js
