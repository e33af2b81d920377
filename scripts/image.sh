#!/usr/bin/env bash
# Builds the image from the Containerfile with whichever engine is here
# (docker, podman or buildah). Optional: nothing in the tests needs it.
# Usage: scripts/image.sh [TAG]   (default berth:0.1.0, the manifests' image)
set -euo pipefail
cd "$(dirname "$0")/.."
tag="${1:-berth:$(node -p 'require("./package.json").version')}"
for engine in docker podman; do
  if command -v "$engine" >/dev/null 2>&1; then exec "$engine" build -f Containerfile -t "$tag" .; fi
done
command -v buildah >/dev/null 2>&1 && exec buildah bud -f Containerfile -t "$tag" .
echo "image.sh: no docker, podman or buildah here; scripts/package.sh builds the same tree without one" >&2
exit 2
