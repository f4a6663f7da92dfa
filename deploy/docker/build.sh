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
# --version names the commit (and VERSION when set) also where the
# toolchain stamps none (-buildvcs=false, a source tarball).
commit="${COMMIT:-$(git rev-parse HEAD 2>/dev/null || true)}"
pkg=github.com/commandcontrol/commandcontrol/internal/version
ldflags="-s -w${commit:+ -X $pkg.commit=$commit}${VERSION:+ -X $pkg.version=$VERSION}"
for cmd in cc-control cc-agent cc-bench cc-broker; do
  go build -trimpath -ldflags "$ldflags" -o "$out/$cmd" "./cmd/$cmd"
done
go build -trimpath -ldflags "-s -w" -o "$out/cc-demokeys" ./deploy/compose/demokeys
echo "built $(ls "$out" | tr '\n' ' ')for linux/$GOARCH in $out/"
