#!/usr/bin/env bash
# Runs every fuzz target of the module briefly (FUZZTIME each, default
# 10000x, i.e. 10,000 inputs): the decoders of untrusted input — function
# arguments, selectors, filter expressions, subjects, the registry file, the
# auth callout request, control API bodies. A crash leaves its input under
# testdata/fuzz/ for `go test` to replay.
#
# The budget is a count of inputs, not a duration: with a duration, Go 1.26's
# fuzz coordinator can report "context deadline exceeded" as a failure when
# the time runs out while a worker is busy (golang/go#75804, fixed in Go
# 1.27) — no input is at fault and none is written. A count has no deadline
# to race. -timeout still stops a target that truly hangs.
set -euo pipefail
cd "$(dirname "$0")/.."
fuzztime="${FUZZTIME:-10000x}"
n=0
for pkg in $(go list ./...); do
  for target in $(go test -list '^Fuzz' "$pkg" 2>/dev/null | grep '^Fuzz' || true); do
    echo "== fuzz $pkg $target ($fuzztime)"
    go test -run '^$' -fuzz "^${target}\$" -fuzztime "$fuzztime" -fuzzminimizetime 500x -timeout 5m "$pkg"
    n=$((n + 1))
  done
done
if [ "$n" -eq 0 ]; then
  echo "no fuzz targets found"; exit 1
fi
echo "== $n fuzz targets ran"
