#!/usr/bin/env bash
# Every test, in two pytest sessions at once: the cluster tests (they share one dev cluster with the
# host's one real node, and mostly wait on it) in the foreground with their progress shown, and the
# unit, SDL, market and Akash devnet tests beside them, their output kept in .test-logs/other.log and shown at the end.
# Exits non-zero when either session fails. Extra arguments go to both pytest runs.
#   usage: hack/test.sh PYTHON [PYTEST ARGS...]
set -uo pipefail
python=${1:?usage: hack/test.sh PYTHON [PYTEST ARGS...]}
shift
cd "$(dirname "$0")/.."
mkdir -p .test-logs
other_log=.test-logs/other.log
start=$(date +%s)

"$python" -m pytest -m "not cluster" -p no:cacheprovider "$@" >"$other_log" 2>&1 &
other=$!
echo "test: unit, SDL, market and Akash devnet tests running beside the cluster tests (output: $other_log)"

"$python" -m pytest -m cluster --durations=12 "$@"
cluster_rc=$?

wait "$other"
other_rc=$?
echo
echo "=== unit, SDL, market and Akash devnet tests ($other_log) ==="
# the summary: everything from pytest's "short test summary" or failure sections on, else the last lines
if grep -qE "^=+ (FAILURES|ERRORS|short test summary)" "$other_log"; then
  sed -n '/^=* \(FAILURES\|ERRORS\|short test summary\)/,$p' "$other_log"
else
  tail -n 5 "$other_log"
fi
echo "test: cluster tests exit ${cluster_rc}, the others exit ${other_rc}; $(( $(date +%s) - start )) s in all"
[ "$cluster_rc" -eq 0 ] && [ "$other_rc" -eq 0 ]
