#!/usr/bin/env bash
# The docker compose demo, for real: installs Debian's docker.io and
# docker-compose when absent, starts dockerd when it is not running, builds
# the FROM-scratch image from locally compiled static binaries (no image is
# pulled), brings the stack up, checks from the host that the three demo
# agents are ONLINE and answer, stops one and sees it leave, then tears
# everything down. Traffic stays on 127.0.0.1 and the project's bridge.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin:$(go env GOPATH)/bin"

project=cc-ci-$$
log() { echo "== docker: $*"; }
fail() { echo "docker-test FAILED: $*" >&2; exit 1; }

# Poll "$@" once a second until it succeeds or $1 seconds pass.
wait_until() {
  local secs=$1; shift
  for _ in $(seq 1 "$secs"); do
    if "$@"; then return 0; fi
    sleep 1
  done
  return 1
}

if ! command -v dockerd >/dev/null || ! { command -v docker-compose >/dev/null || docker compose version >/dev/null 2>&1; }; then
  log "installing docker.io and docker-compose"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io docker-compose >/dev/null
fi

dockerd_pid=""
if ! docker info >/dev/null 2>&1; then
  log "starting dockerd"
  dockerd >/tmp/cc-dockerd.log 2>&1 &
  dockerd_pid=$!
  wait_until 60 docker info >/dev/null 2>&1 || { tail -30 /tmp/cc-dockerd.log; fail "dockerd did not come up within 60s"; }
fi

if docker compose version >/dev/null 2>&1; then
  compose=(docker compose -p "$project")
else
  compose=(docker-compose -p "$project")
fi
log "compose is: ${compose[*]} ($("${compose[@]}" version 2>/dev/null | head -1))"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null || echo $((20000 + RANDOM % 20000)); }
export CC_PORT CC_METRICS_PORT CC_WS_PORT
CC_PORT=$(free_port)
CC_WS_PORT=$(free_port)
CC_METRICS_PORT=$(free_port)

cleanup() {
  local rc=$?
  if [ $rc -ne 0 ]; then "${compose[@]}" logs --tail=40 2>&1 || true; fi
  "${compose[@]}" down -v --remove-orphans >/dev/null 2>&1 || true
  [ -n "${watch_pid:-}" ] && kill "$watch_pid" 2>/dev/null || true
  if [ -n "${chowned:-}" ]; then chown 0:0 deploy/compose/demo/keys/demo-*.nk || true; fi
  if [ -n "$dockerd_pid" ]; then kill "$dockerd_pid" 2>/dev/null || true; wait "$dockerd_pid" 2>/dev/null || true; fi
  exit $rc
}
trap cleanup EXIT

log "building binaries, demo keys and the image"
make -s images COMPOSE="${compose[*]}"
go build -o bin/ ./cmd/cc-bench

# The agents run as the user who owns their keys (cc-agent refuses a key
# another user owns): CC_UID/CC_GID, as make compose-up sets them. Run as
# root (CI), play a developer with uid 1000 who ran make demo-keys.
export CC_UID CC_GID
CC_UID=$(id -u)
CC_GID=$(id -g)
if [ "$CC_UID" = 0 ]; then
  chowned=1
  chown 1000:1000 deploy/compose/demo/keys/demo-*.nk
  CC_UID=1000 CC_GID=1000
fi

log "up (broker on 127.0.0.1:$CC_PORT, WebSocket on 127.0.0.1:$CC_WS_PORT, metrics on 127.0.0.1:$CC_METRICS_PORT)"
"${compose[@]}" up -d

bench=(bin/cc-bench --server "nats://127.0.0.1:$CC_PORT" --key deploy/compose/demo/keys/operator.nk --timeout 5s)
online_count() { "${bench[@]}" servers --json 2>/dev/null | grep -c '"machine"' || true; }
three_online() { [ "$(online_count)" = 3 ]; }
wait_until 60 three_online || fail "want 3 agents ONLINE, have $(online_count)"
"${bench[@]}" servers
log "3 agents ONLINE"

# The same operator over the broker's WebSocket listener (issue #13).
out=$(bin/cc-bench --server "ws://127.0.0.1:$CC_WS_PORT" --key deploy/compose/demo/keys/operator.nk --timeout 5s servers --json) \
  || fail "cc-bench over WebSocket: $out"
[ "$(grep -c '"machine"' <<<"$out")" = 3 ] || fail "over WebSocket want 3 machines: $out"
log "cc-bench over WebSocket (ws://127.0.0.1:$CC_WS_PORT) sees the 3 agents"

out=$("${bench[@]}" call current-load --json) || fail "call current-load: $out"
for m in demo-1 demo-2 demo-3; do
  grep -q "\"machine\":\"$m\",\"status\":\"ok\"" <<<"$out" || fail "no ok reply from $m in: $out"
done
out=$("${bench[@]}" call machine-info --where role=web --json) || fail "call machine-info --where role=web: $out"
[ "$(echo "$out" | grep -c '"status":"ok"')" = 2 ] || fail "want 2 web machines to answer: $out"
log "calls answered (all three; role=web selected two)"

# Output is captured before grep reads it: "producer | grep -q" under
# pipefail fails whenever grep exits before the producer has written its
# last line (SIGPIPE / BrokenPipeError in docker-compose's relay).
out=$("${compose[@]}" exec -T control cc-bench --key /data/admin.nk servers --json) \
  || fail "cc-bench inside the control container: $out"
grep -q '"machine":"demo-2"' <<<"$out" || fail "cc-bench inside the control container does not see demo-2: $out"
log "cc-bench inside the container sees the fleet"

health=$(curl -fsS "http://127.0.0.1:$CC_METRICS_PORT/healthz") || fail "healthz: $health"
grep -q ok <<<"$health" || fail "healthz: $health"
ready=$(curl -fsS "http://127.0.0.1:$CC_METRICS_PORT/readyz") || fail "readyz: $ready"
grep -q ready <<<"$ready" || fail "readyz: $ready"
metrics=$(curl -fsS "http://127.0.0.1:$CC_METRICS_PORT/metrics")
grep -q '^cc_machines_online 3$' <<<"$metrics" || fail "metrics: cc_machines_online is not 3"
grep -q '^cc_calls_total{function="current-load",outcome="ok"} 3$' <<<"$metrics" || fail "metrics: current-load ok calls"
log "metrics, healthz and readyz served"

"${bench[@]}" watch --json >/tmp/cc-watch.$$ 2>&1 &
watch_pid=$!
sleep 1
"${compose[@]}" stop agent-3
left() { grep -q '"event":"left","machine":"demo-3"' /tmp/cc-watch.$$; }
wait_until 30 left || { cat /tmp/cc-watch.$$; fail "no left event for demo-3"; }
two_online() { [ "$(online_count)" = 2 ]; }
wait_until 10 two_online || fail "want 2 ONLINE after stopping agent-3, have $(online_count)"
kill "$watch_pid"; watch_pid=""
rm -f /tmp/cc-watch.$$
log "agent-3 stopped: left seen, 2 ONLINE"

"${compose[@]}" down -v
log "down: ok"
echo "docker: 1 passed, 0 failed"
