#!/usr/bin/env bash
# The main job: a local multi-host Berth cluster, end to end (demo/main.ts).
# Installs what is missing (Debian packages, npm packages), builds, then runs.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -ne 0 ]; then echo "berth demo: must run as root (it creates network namespaces)" >&2; exit 1; fi
bash scripts/ensure-deps.sh >&2
exec node dist/demo/main.js "$@"
