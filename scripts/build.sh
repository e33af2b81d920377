#!/usr/bin/env bash
# Builds Berth: TypeScript to dist/, the setns addon (agent/native), then the
# `berth` CNI relay, a static C binary (dist/bin/berth, scripts/build-relay.sh).
# The addon and the relay are rebuilt only when their sources are newer.
set -euo pipefail
cd "$(dirname "$0")/.."

npx tsc -p tsconfig.json

addon=agent/native/build/Release/berth_netns.node
if [ ! -f "$addon" ] || [ -n "$(find agent/native -maxdepth 1 -type f \( -name '*.c' -o -name '*.h' -o -name binding.gyp \) -newer "$addon")" ]; then
  # npm's nodedir config points node-gyp at the installed headers: no download.
  npx --no-install node-gyp rebuild -C agent/native --loglevel=error >/dev/null
fi

bash scripts/build-relay.sh
