#!/usr/bin/env bash
# The whole test suite: unit, property and integration tests (real etcd,
# real network namespaces). Ends with a plain "N passed, N failed" line.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/ensure-deps.sh
out=$(mktemp)
set +e
npx ava --tap "$@" | tee "$out"
status=${PIPESTATUS[0]}
set -e
pass=$(grep -cE '^ok [0-9]+' "$out" || true)
fail=$(grep -E '^not ok [0-9]+' "$out" | grep -vc '# TODO' || true)
skip=$(grep -cE '^ok [0-9]+ .*# SKIP' "$out" || true)
rm -f "$out"
echo "${pass} passed, ${fail} failed, ${skip} skipped"
if [ "$status" -ne 0 ] && [ "$fail" -eq 0 ]; then echo "ava exited with status $status" >&2; fi
exit "$status"
