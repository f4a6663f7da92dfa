#!/usr/bin/env bash
# The docker compose demo, for real: installs Debian's docker.io and
# docker-compose when absent, starts dockerd when it is not running, then
#   1. static checks: `compose config` resolves the build targets from
#      CC_IMAGE_TARGET (source unset, prebuilt set); the Makefile names
#      what to install when no compose command runs; the build context
#      (.dockerignore) holds the sources and bin/docker/ but no keys, no
#      other binaries, no .git;
#   2. builds the prebuilt images from locally compiled static binaries (no
#      image is pulled) and brings the stack up with no step for keys: its
#      keys service makes them;
#   3. from the host (the operator key copied out with docker cp) and inside
#      the control container: 3 agents ONLINE, sw-list and
#      installed-sec-patches ok on all three, current-load, machine-info on
#      role=web, the WebSocket listener, /healthz and /metrics;
#   4. stops agent-3 and sees it leave; up again: the keys are kept and
#      agent-3 is back; then down -v.
# Traffic stays on 127.0.0.1 and the project's bridge.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin:$(go env GOPATH)/bin"

project=cc-ci-$$
tmp=$(mktemp -d /tmp/cc-docker-test.XXXXXX)
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
log "compose is: ${compose[*]} ($("${compose[@]}" version 2>/dev/null | head -1)); docker $(docker version --format '{{.Server.Version}}')"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null || echo $((20000 + RANDOM % 20000)); }
export CC_PORT CC_METRICS_PORT CC_WS_PORT
CC_PORT=$(free_port)
CC_WS_PORT=$(free_port)
CC_METRICS_PORT=$(free_port)

ctx_image=cc-ctxcheck-$$
cleanup() {
  local rc=$?
  if [ $rc -ne 0 ]; then "${compose[@]}" logs --tail=40 2>&1 || true; fi
  "${compose[@]}" down -v --remove-orphans >/dev/null 2>&1 || true
  [ -n "${watch_pid:-}" ] && kill "$watch_pid" 2>/dev/null || true
  docker rm -f "$ctx_image" >/dev/null 2>&1 || true
  docker rmi "$ctx_image" >/dev/null 2>&1 || true
  rm -f "ctxcheck-$$.nk" "bin/ctxcheck-$$"
  rm -rf "$tmp"
  if [ -n "$dockerd_pid" ]; then kill "$dockerd_pid" 2>/dev/null || true; wait "$dockerd_pid" 2>/dev/null || true; fi
  exit $rc
}
trap cleanup EXIT

# --- 1. static checks --------------------------------------------------------
# The targets compose asks for: "service target" lines, sorted.
targets() {
  "${compose[@]}" config | awk '/^  [a-z0-9-]+:$/ {svc=$1} /^ +target:/ {print svc, $2}' | sort -u | tr '\n' ' '
}
want_source="agent-1: source-demo-agent agent-2: source-demo-agent agent-3: source-demo-agent control: source keys: source "
want_prebuilt="agent-1: prebuilt-demo-agent agent-2: prebuilt-demo-agent agent-3: prebuilt-demo-agent control: prebuilt keys: prebuilt "
got=$(unset CC_IMAGE_TARGET; targets)
[ "$got" = "$want_source" ] || fail "compose config without CC_IMAGE_TARGET: targets $got, want $want_source"
got=$(CC_IMAGE_TARGET=prebuilt targets)
[ "$got" = "$want_prebuilt" ] || fail "compose config with CC_IMAGE_TARGET=prebuilt: targets $got, want $want_prebuilt"
"${compose[@]}" config | grep -q "127.0.0.1:$CC_PORT:4222" || "${compose[@]}" config | grep -q "published: \"*$CC_PORT\"*" \
  || fail "compose config does not publish CC_PORT=$CC_PORT"
log "compose config: targets source/source-demo-agent by default, prebuilt/prebuilt-demo-agent with CC_IMAGE_TARGET=prebuilt; CC_PORT honoured"

# No compose command at all: the Makefile says what to install (exit 2)
# instead of running a docker-compose that is not there.
mkdir "$tmp/nopath"
set +e
out=$(env PATH="$tmp/nopath" "$(command -v make)" -s compose-up 2>&1); rc=$?
set -e
[ $rc = 2 ] || fail "make compose-up without docker: exit $rc, want 2: $out"
grep -q "no compose command" <<<"$out" && grep -q "docker-compose-plugin" <<<"$out" || fail "make compose-up without docker: $out"
log "make compose-up without a compose command names what to install"

# The build context: plant a key and a stray binary, send the context
# through .dockerignore into a throwaway image, list it.
log "building the static binaries (deploy/docker/build.sh)"
deploy/docker/build.sh
echo "SUAPLANTED" >"ctxcheck-$$.nk"
echo junk >"bin/ctxcheck-$$"
printf 'FROM scratch\nCOPY . /ctx/\n' | docker build -q -f - -t "$ctx_image" . >/dev/null
docker create --name "$ctx_image" "$ctx_image" /none >/dev/null
docker export "$ctx_image" | tar -t >"$tmp/ctx.txt"
for want in ctx/go.mod ctx/cmd/cc-agent/main.go ctx/bin/docker/cc-agent ctx/bin/docker/cc-demokeys \
  ctx/agent/pkgdb/testdata/debian/var/lib/dpkg/status ctx/deploy/docker/build.sh; do
  grep -qx "$want" "$tmp/ctx.txt" || fail "build context lacks $want"
done
if bad=$(grep -E '\.(nk|creds|pem|key)$|^ctx/\.git(/|$)|^ctx/bin/[^/]+$|/node_modules/|^ctx/cc-data/' "$tmp/ctx.txt"); then
  fail "build context holds what .dockerignore must keep out: $(head -5 <<<"$bad")"
fi
rm -f "ctxcheck-$$.nk" "bin/ctxcheck-$$"
log "build context: sources, bin/docker/, the fixture; no key, no stray binary, no .git"

# --- 2. up, with no step for keys --------------------------------------------
export CC_IMAGE_TARGET=prebuilt
log "up --build (prebuilt; broker on 127.0.0.1:$CC_PORT, WebSocket on 127.0.0.1:$CC_WS_PORT, metrics on 127.0.0.1:$CC_METRICS_PORT)"
"${compose[@]}" up -d --build

# The operator key, copied out of the control container as the README says.
docker cp "$("${compose[@]}" ps -q control)":/demo/operator.nk "$tmp/operator.nk"
[ "$(stat -c %a "$tmp/operator.nk")" = 600 ] || fail "copied operator key has mode $(stat -c %a "$tmp/operator.nk")"

bench=(bin/docker/cc-bench --server "nats://127.0.0.1:$CC_PORT" --key "$tmp/operator.nk" --timeout 5s)
online_count() { "${bench[@]}" servers --json 2>/dev/null | grep -c '"machine"' || true; }
three_online() { [ "$(online_count)" = 3 ]; }
wait_until 60 three_online || fail "want 3 agents ONLINE, have $(online_count)"
"${bench[@]}" servers
log "3 agents ONLINE; their keys were made by the keys service: $("${compose[@]}" logs --no-color keys | tail -1)"

# --- 3. calls ------------------------------------------------------------------
all_ok() { # $1: what, $2: output
  for m in demo-1 demo-2 demo-3; do
    grep -q "\"machine\":\"$m\",\"status\":\"ok\"" <<<"$2" || fail "$1: no ok reply from $m in: $(head -c 2000 <<<"$2")"
  done
}
out=$("${bench[@]}" call sw-list --json) || fail "call sw-list: $(head -c 2000 <<<"$out")"
all_ok sw-list "$out"
grep -q '"manager":"dpkg","count":749' <<<"$out" || fail "sw-list: want the fixture's 749 dpkg packages: $(head -c 500 <<<"$out")"
out=$("${bench[@]}" call installed-sec-patches --json) || fail "call installed-sec-patches: $(head -c 2000 <<<"$out")"
all_ok installed-sec-patches "$out"
grep -q '"source":"apt","security_index":\[{"suite"' <<<"$out" || fail "installed-sec-patches: no apt security index: $(head -c 500 <<<"$out")"
out=$("${bench[@]}" call current-load --json) || fail "call current-load: $out"
all_ok current-load "$out"
out=$("${bench[@]}" call machine-info --where role=web --json) || fail "call machine-info --where role=web: $out"
[ "$(echo "$out" | grep -c '"status":"ok"')" = 2 ] || fail "want 2 web machines to answer: $out"
log "sw-list, installed-sec-patches, current-load answered ok on all three; role=web selected two"

# The same operator over the broker's WebSocket listener (issue #13).
out=$(bin/docker/cc-bench --server "ws://127.0.0.1:$CC_WS_PORT" --key "$tmp/operator.nk" --timeout 5s servers --json) \
  || fail "cc-bench over WebSocket: $out"
[ "$(grep -c '"machine"' <<<"$out")" = 3 ] || fail "over WebSocket want 3 machines: $out"
log "cc-bench over WebSocket (ws://127.0.0.1:$CC_WS_PORT) sees the 3 agents"

# Output is captured before grep reads it: "producer | grep -q" under
# pipefail fails whenever grep exits before the producer has written its
# last line (SIGPIPE / BrokenPipeError in docker-compose's relay).
out=$("${compose[@]}" exec -T control cc-bench --key /demo/operator.nk servers --json) \
  || fail "cc-bench inside the control container: $out"
grep -q '"machine":"demo-2"' <<<"$out" || fail "cc-bench inside the control container does not see demo-2: $out"
log "cc-bench inside the container (--key /demo/operator.nk) sees the fleet"

health=$(curl -fsS "http://127.0.0.1:$CC_METRICS_PORT/healthz") || fail "healthz: $health"
grep -q ok <<<"$health" || fail "healthz: $health"
ready=$(curl -fsS "http://127.0.0.1:$CC_METRICS_PORT/readyz") || fail "readyz: $ready"
grep -q ready <<<"$ready" || fail "readyz: $ready"
metrics=$(curl -fsS "http://127.0.0.1:$CC_METRICS_PORT/metrics")
grep -q '^cc_machines_online 3$' <<<"$metrics" || fail "metrics: cc_machines_online is not 3"
grep -q '^cc_calls_total{function="current-load",outcome="ok"} 3$' <<<"$metrics" || fail "metrics: current-load ok calls"
log "metrics, healthz and readyz served"

# --- 4. one leaves; up again keeps the keys ---------------------------------------
"${bench[@]}" watch --json >"$tmp/watch" 2>&1 &
watch_pid=$!
synced() { grep -q '"event":"synced"' "$tmp/watch"; }
wait_until 30 synced || { cat "$tmp/watch"; fail "cc-bench watch did not sync"; }
"${compose[@]}" stop agent-3
left() { grep -q '"event":"left","machine":"demo-3"' "$tmp/watch"; }
wait_until 30 left || { cat "$tmp/watch"; fail "no left event for demo-3"; }
two_online() { [ "$(online_count)" = 2 ]; }
wait_until 10 two_online || fail "want 2 ONLINE after stopping agent-3, have $(online_count)"
kill "$watch_pid"; watch_pid=""
log "agent-3 stopped: left seen, 2 ONLINE"

# (the image has no cat: docker cp reads the files)
docker cp "$("${compose[@]}" ps -q control)":/demo/preregister.json "$tmp/pre1.json"
"${compose[@]}" up -d
docker cp "$("${compose[@]}" ps -q control)":/demo/preregister.json "$tmp/pre2.json"
cmp -s "$tmp/pre1.json" "$tmp/pre2.json" || fail "up again changed the demo keys: $(cat "$tmp/pre1.json") / $(cat "$tmp/pre2.json")"
docker cp "$("${compose[@]}" ps -q control)":/demo/operator.nk "$tmp/operator2.nk"
cmp -s "$tmp/operator.nk" "$tmp/operator2.nk" || fail "up again changed the operator key"
wait_until 60 three_online || fail "after up again want 3 ONLINE, have $(online_count)"
log "up again: keys kept, agent-3 back, 3 ONLINE"

"${compose[@]}" down -v
log "down: ok"
echo "docker: 1 passed, 0 failed"
