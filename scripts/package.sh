#!/usr/bin/env bash
# Assembles Berth's runtime tree into DEST: what the image holds at
# /opt/berth, and nothing else. Run after scripts/build.sh. Offline: the
# production node_modules are copied from this checkout's (the packages
# `npm ls --omit=dev` names), not downloaded again.
#
#   DEST/package.json, package-lock.json
#   DEST/dist/{agent,common,controller,cni}/**.js   compiled, without tests and source maps
#   DEST/dist/bin/berth                             the static CNI relay
#   DEST/agent/native/build/Release/berth_netns.node  the addon, where dist/agent/kernel/netns.js loads it
#   DEST/node_modules/                              production dependencies only
#
# The Containerfile's build stage runs this; so do CI and test/package.test.ts.
# Usage: scripts/package.sh DEST   (DEST must not exist, or be empty)
set -euo pipefail
cd "$(dirname "$0")/.."
dest="${1:?usage: scripts/package.sh DEST}"
if [ -e "$dest" ] && [ -n "$(ls -A "$dest")" ]; then
  echo "package.sh: $dest is not empty" >&2
  exit 2
fi
addon=agent/native/build/Release/berth_netns.node
for f in dist/agent/main.js dist/controller/main.js dist/bin/berth "$addon"; do
  [ -f "$f" ] || { echo "package.sh: $f missing: run scripts/build.sh first" >&2; exit 2; }
done
mkdir -p "$dest/dist"
dest="$(cd "$dest" && pwd)"

cp package.json package-lock.json "$dest/"
# Runtime code only: the agent, the controller (and berthctl), their shared
# vocabulary and the CNI contract the agent runs in-process (cni/plugin.js).
for d in agent common controller cni; do
  (cd dist && find "$d" -type f -name '*.js' ! -name '*.test.js' -print0 | xargs -0 cp --parents -t "$dest/dist")
done
mkdir -p "$dest/dist/bin" "$dest/$(dirname "$addon")"
cp -p dist/bin/berth "$dest/dist/bin/berth"
cp -p "$addon" "$dest/$addon"

# Production dependencies: each package npm ls names, unless already copied
# inside its parent (nested node_modules come with it).
npm ls --omit=dev --all --parseable | while read -r p; do
  rel="${p#"$PWD"/}"
  case "$rel" in node_modules/*) ;; *) continue ;; esac
  [ -e "$dest/$rel" ] || cp -a --parents "$rel" "$dest/"
done
echo "package.sh: $(du -sh "$dest" | cut -f1) in $dest" >&2
