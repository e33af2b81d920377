#!/usr/bin/env bash
# The Debian packages the Containerfile's build stage adds to node:20-bookworm
# (which already has gcc, make, python3 for node-gyp): libjansson-dev for
# the static relay (libjansson.a). scripts/ensure-deps.sh installs the same
# on a developer's or CI's machine, with everything the tests need besides.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends gcc libc6-dev make python3 libjansson-dev >/dev/null
rm -rf /var/lib/apt/lists/*
