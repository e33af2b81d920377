#!/usr/bin/env bash
# Installs what a fresh Debian machine lacks for Berth: etcd, iproute2, the
# reference CNI plugins (chaining tests and benchmarks), nftables (the agent's
# egress and isolation tables), python3 (isolation tests), containerd and runc
# (the CRI e2e), then npm packages,
# then builds. Idempotent: each step is skipped when already satisfied.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v etcd >/dev/null 2>&1 || need+=(etcd-server)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
[ -x /usr/lib/cni/portmap ] || need+=(containernetworking-plugins)
command -v iptables >/dev/null 2>&1 || need+=(iptables)
command -v ping >/dev/null 2>&1 || need+=(iputils-ping)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
# The agent's egress masquerade and isolation tables; it runs /usr/sbin/nft by path.
[ -x /usr/sbin/nft ] || need+=(nftables)
# The isolation tests forge packets (raw and AF_PACKET sockets) with python3.
command -v python3 >/dev/null 2>&1 || need+=(python3)
# The manifest tests run containers' processes under setpriv (capabilities)
# and unshare (a read-only /proc/sys), as a runtime would.
command -v setpriv >/dev/null 2>&1 && command -v unshare >/dev/null 2>&1 || need+=(util-linux)
command -v gcc >/dev/null 2>&1 || need+=(gcc libc6-dev)
# The CRI e2e (test/cri-containerd.test.ts) drives containerd 1.6 and runc; nsenter is util-linux.
command -v containerd >/dev/null 2>&1 || need+=(containerd)
command -v runc >/dev/null 2>&1 || need+=(runc)
[ -f /usr/lib/x86_64-linux-gnu/libjansson.a ] || [ -f "/usr/lib/$(gcc -dumpmachine 2>/dev/null)/libjansson.a" ] || need+=(libjansson-dev)
if [ "${BERTH_WITH_BENCH_TOOLS:-0}" = 1 ]; then
  command -v iperf3 >/dev/null 2>&1 || need+=(iperf3)
fi
if [ ${#need[@]} -gt 0 ]; then
  echo "berth: installing ${need[*]} from Debian" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need[@]}" >/dev/null
fi

if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund --loglevel=error
fi
# Tests that run the demo script set this: the suite already built dist/.
if [ "${BERTH_SKIP_BUILD:-0}" != 1 ]; then npm run --silent build; fi
