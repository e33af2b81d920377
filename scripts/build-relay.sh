#!/usr/bin/env bash
# Builds the `berth` CNI relay (cni/relay/*.c) when its sources are newer
# than the binary:
#   build-relay.sh        dist/bin/berth, static (no Node, no shared libs on the node)
#   build-relay.sh asan   dist/bin/berth-asan, with ASan and UBSan, for the fuzz runs
# jansson comes from Debian's libjansson-dev (libjansson.a). Written to a
# temp file and renamed, so concurrent test processes never exec half a binary.
set -euo pipefail
cd "$(dirname "$0")/.."
mode="${1:-static}"
mkdir -p dist/bin
srcs=(cni/relay/berth.c cni/relay/io.c cni/relay/journal.c)
warn=(-std=gnu11 -Wall -Wextra -Werror -Wformat=2 -Wshadow)
case "$mode" in
  static) out=dist/bin/berth; flags=(-O2 -static -s) ;;
  asan) out=dist/bin/berth-asan; flags=(-O1 -g -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer) ;;
  *) echo "usage: build-relay.sh [static|asan]" >&2; exit 2 ;;
esac
if [ -x "$out" ] && [ -z "$(find cni/relay scripts/build-relay.sh -type f -newer "$out")" ]; then exit 0; fi
tmp="$out.$$.tmp"
gcc "${warn[@]}" "${flags[@]}" -o "$tmp" "${srcs[@]}" -ljansson
mv -f "$tmp" "$out"
