#!/usr/bin/env bash
# Runs tests with the wall clock moved: every time.Now() in the test binary
# (the code under test, the embedded broker, the tests) reads CLOCK_SHIFT
# later (a Go duration, e.g. 175320h for 20 years; negative moves it back).
# A test that passes today and fails here depends on the date it runs on.
#
# How: `go test -overlay` swaps in a copy of the toolchain's time.go whose
# Now adds the shift to the wall reading (the monotonic reading, and so
# every measured duration, is unchanged). Nothing in the module changes.
# The first run rebuilds the standard library into the build cache.
# Processes the tests start (the nats CLI, cc-* binaries) are not moved.
#
#   CLOCK_SHIFT=175320h .ci/clock-shift.sh ./agent/... ./controlsvc/
set -euo pipefail
cd "$(dirname "$0")/.."
shift_dur="${CLOCK_SHIFT:-175320h}"
[ $# -gt 0 ] || set -- ./...
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
goroot=$(go env GOROOT)
src="$goroot/src/time/time.go"
if ! grep -qF 'sec, nsec, mono := runtimeNow()' "$src"; then
  echo "clock-shift: $src has no 'sec, nsec, mono := runtimeNow()' in Now; adapt this script to $(go version)" >&2
  exit 2
fi
# The shift in whole seconds, from a Go duration, computed by Go itself.
mkdir "$tmp/conv"
cat >"$tmp/conv/main.go" <<'GO'
package main

import (
	"fmt"
	"os"
	"time"
)

func main() {
	d, err := time.ParseDuration(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, "clock-shift: CLOCK_SHIFT:", err)
		os.Exit(2)
	}
	fmt.Println(int64(d / time.Second))
}
GO
secs=$(cd "$tmp/conv" && GOFLAGS=-mod=mod GO111MODULE=off go run main.go "$shift_dur")
awk '{print} $0 == "\tsec, nsec, mono := runtimeNow()" && prev == "func Now() Time {" {print "\tsec += clockShiftSeconds"} {prev=$0}' \
  "$src" >"$tmp/time.go"
grep -q 'sec += clockShiftSeconds' "$tmp/time.go"
printf 'package time\n\nconst clockShiftSeconds = %s\n' "$secs" >"$tmp/clockshift.go"
printf '{"Replace":{"%s":"%s","%s":"%s"}}\n' \
  "$src" "$tmp/time.go" "$goroot/src/time/zz_clockshift.go" "$tmp/clockshift.go" >"$tmp/overlay.json"
echo "== go test with the clock moved by $shift_dur ($secs s): $*"
go test -overlay "$tmp/overlay.json" -count=1 "$@"
