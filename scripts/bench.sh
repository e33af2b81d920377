#!/usr/bin/env bash
# Every benchmark, one after the other; each prints its own figures and baseline.
set -euo pipefail
cd "$(dirname "$0")/.."
BERTH_WITH_BENCH_TOOLS=1 bash scripts/ensure-deps.sh
unset NODE_EXTRA_CA_CERTS
node dist/bench/controller.js
bash scripts/bench-agent.sh
bash scripts/bench-cni.sh
