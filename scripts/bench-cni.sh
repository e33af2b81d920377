#!/usr/bin/env bash
# CNI plugin bench: berth (real agent in a simulated host) against Debian's
# bridge + host-local, plus the `node -e 0` floor. Figures only, one run.
# Needs root (network namespaces). Options via env: see bench/cni.ts.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/ensure-deps.sh
if [ ! -x /usr/lib/cni/bridge ] || [ ! -x /usr/lib/cni/host-local ]; then
  echo "berth: installing containernetworking-plugins from Debian" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq containernetworking-plugins >/dev/null
fi
# The sandbox's NODE_EXTRA_CA_CERTS costs ~80 ms per node start; real nodes don't have it.
unset NODE_EXTRA_CA_CERTS
node dist/bench/cni.js "$@"
