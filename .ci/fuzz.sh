#!/usr/bin/env bash
# Runs every fuzz target of the module briefly (FUZZTIME each, default
# 10s): the decoders of untrusted input — function arguments, selectors,
# filter expressions, subjects, the registry file, the auth callout request,
# control API bodies. A crash leaves its input under testdata/fuzz/ for
# `go test` to replay.
set -euo pipefail
cd "$(dirname "$0")/.."
fuzztime="${FUZZTIME:-10s}"
n=0
for pkg in $(go list ./...); do
  for target in $(go test -list '^Fuzz' "$pkg" 2>/dev/null | grep '^Fuzz' || true); do
    echo "== fuzz $pkg $target ($fuzztime)"
    go test -run '^$' -fuzz "^${target}\$" -fuzztime "$fuzztime" "$pkg"
    n=$((n + 1))
  done
done
if [ "$n" -eq 0 ]; then
  echo "no fuzz targets found"; exit 1
fi
echo "== $n fuzz targets ran"
