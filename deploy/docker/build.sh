#!/usr/bin/env bash
# Compiles the static (CGO_ENABLED=0) linux binaries the image is made of
# into bin/docker/, for this machine's architecture unless GOARCH is set:
# the four commands and cc-demokeys (deploy/compose/demokeys), which makes
# the compose demo's keys on its first start. The Dockerfile's prebuilt
# targets copy them from there; its source targets run this script.
set -euo pipefail
cd "$(dirname "$0")/../.."
out=bin/docker
mkdir -p "$out"
export CGO_ENABLED=0 GOOS=linux
export GOARCH="${GOARCH:-$(go env GOARCH)}"
for cmd in cc-control cc-agent cc-bench cc-broker; do
  go build -trimpath -ldflags "-s -w" -o "$out/$cmd" "./cmd/$cmd"
done
go build -trimpath -ldflags "-s -w" -o "$out/cc-demokeys" ./deploy/compose/demokeys
echo "built $(ls "$out" | tr '\n' ' ')for linux/$GOARCH in $out/"
