#!/usr/bin/env bash
# The systemd units: `systemd-analyze verify` must pass, and their offline
# security exposure must stay low. verify needs ExecStart's binary to
# exist, so the units are checked as copies whose ExecStart points at
# freshly built binaries; nothing is installed on this machine.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"

if ! command -v systemd-analyze >/dev/null; then
  echo "== systemd: installing systemd (for systemd-analyze)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq systemd >/dev/null
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/bin" "$tmp/units"
go build -o "$tmp/bin/" ./cmd/cc-agent ./cmd/cc-control
for u in cc-agent cc-control; do
  sed "s|/usr/local/bin/|$tmp/bin/|" "deploy/systemd/$u.service" >"$tmp/units/$u.service"
  grep -q "^ExecStart=$tmp/bin/$u" "$tmp/units/$u.service" || { echo "ExecStart of $u.service is not /usr/local/bin/$u"; exit 1; }
done

echo "== systemd: verify"
out=$(systemd-analyze verify "$tmp/units/cc-agent.service" "$tmp/units/cc-control.service" 2>&1) || { echo "$out"; exit 1; }
# verify prints warnings without failing; any line naming our units is one.
if echo "$out" | grep -E 'cc-(agent|control)\.service'; then
  echo "systemd-analyze verify warns about the units"; exit 1
fi

echo "== systemd: security exposure (lower is better; must be <= 2.5)"
for u in cc-agent cc-control; do
  systemd-analyze security --offline=true --threshold=25 "$tmp/units/$u.service" | tail -1
done

echo "== systemd: the agent can read what its functions need"
for p in ReadOnlyPaths=-/var/lib/dpkg ProtectSystem=strict DynamicUser=yes StateDirectory=cc-agent CapabilityBoundingSet=; do
  grep -qx "$p.*" deploy/systemd/cc-agent.service || { echo "cc-agent.service lacks $p"; exit 1; }
done
for p in InaccessiblePaths ProtectProc=invisible ProcSubset=pid; do
  if grep -q "^$p" deploy/systemd/cc-agent.service; then echo "cc-agent.service must not hide what it reads ($p)"; exit 1; fi
done
echo "systemd: 1 passed, 0 failed"
