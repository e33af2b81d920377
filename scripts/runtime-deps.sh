#!/usr/bin/env bash
# The Debian packages the agent runs at runtime, for the image's runtime stage
# (node:20-bookworm-slim): nftables (/usr/sbin/nft: the egress masquerade and
# isolation tables, agent/kernel/firewall.ts). Nothing else is execed: links,
# addresses, routes, neighbours, sysctls and BPF go through netlink, /proc and
# the addon, so iproute2 is not needed (add it to debug from inside the pod).
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends nftables >/dev/null
rm -rf /var/lib/apt/lists/*
