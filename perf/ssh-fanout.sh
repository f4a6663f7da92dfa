#!/usr/bin/env bash
# SSH fan-out against commandcontrol, same hosts, same run.
#
# 100 "hosts" are loopback addresses 127.0.0.1 … 127.0.0.100. For SSH, a
# private sshd (port 2222, its own host and client keys in a temporary
# directory) listens on each of them and parallel-ssh (Debian's pssh) runs
# `cat /proc/loadavg` on all 100 at once. For commandcontrol, cc-control and
# cc-swarm (100 simulated agents) run on the same machine and cc-bench calls
# current-load on all of them. Both are whole CLI invocations, timed 5
# times each; the medians and their ratio are printed.
#
# It installs openssh-server and pssh with apt-get if they are missing — run
# it by hand (as root), never from CI. Traffic stays on 127.0.0.0/8.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-100}
RUNS=${RUNS:-5}
need=()
command -v sshd >/dev/null || [ -x /usr/sbin/sshd ] || need+=(openssh-server)
command -v parallel-ssh >/dev/null || need+=(pssh)
command -v bc >/dev/null || need+=(bc)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
tmp=$(mktemp -d)
cleanup() {
  for p in "$tmp"/sshd-*.pid; do [ -f "$p" ] && kill "$(cat "$p")" 2>/dev/null; done
  [ -n "${swarm_pid:-}" ] && kill "$swarm_pid" 2>/dev/null || true
  [ -n "${control_pid:-}" ] && kill "$control_pid" 2>/dev/null || true
  sleep 0.5; rm -rf "$tmp"
}
trap cleanup EXIT

# --- SSH side -------------------------------------------------------------
ssh-keygen -q -t ed25519 -N '' -f "$tmp/host_key"
ssh-keygen -q -t ed25519 -N '' -f "$tmp/client_key"
cp "$tmp/client_key.pub" "$tmp/authorized_keys"
chmod 600 "$tmp/authorized_keys"
# sshd listens on at most 16 sockets: one instance per 15 addresses.
mkdir -p /run/sshd
for first in $(seq 1 15 "$N"); do
  last=$(( first + 14 < N ? first + 14 : N ))
  {
    echo "Port 2222"
    for i in $(seq "$first" "$last"); do echo "ListenAddress 127.0.0.$i"; done
    echo "HostKey $tmp/host_key"
    echo "AuthorizedKeysFile $tmp/authorized_keys"
    echo "PidFile $tmp/sshd-$first.pid"
    echo "PermitRootLogin prohibit-password"
    echo "PasswordAuthentication no"
    echo "UsePAM no"
    echo "StrictModes no"  # the keys live in a private temporary directory
    echo "MaxStartups 100:30:200"
  } > "$tmp/sshd-$first.conf"
  /usr/sbin/sshd -f "$tmp/sshd-$first.conf" -E "$tmp/sshd.log"
done
sleep 1
for i in $(seq 1 "$N"); do echo "127.0.0.$i:2222"; done > "$tmp/hosts"
ssh_opts="-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -i $tmp/client_key"

# --- commandcontrol side --------------------------------------------------
go build -o "$tmp/bin/" ./cmd/cc-control ./cmd/cc-swarm ./cmd/cc-bench
"$tmp/bin/cc-control" --data "$tmp/cc-data" --listen 127.0.0.1:14333 --log-level warn >"$tmp/control.out" 2>&1 &
control_pid=$!
for _ in $(seq 1 100); do [ -f "$tmp/cc-data/admin.nk" ] && break; sleep 0.1; done
sleep 0.5
"$tmp/bin/cc-swarm" --server nats://127.0.0.1:14333 --key "$tmp/cc-data/admin.nk" --agents "$N" >"$tmp/swarm.out" 2>&1 &
swarm_pid=$!
for _ in $(seq 1 300); do grep -q '^ready' "$tmp/swarm.out" && break; sleep 0.1; done
bench() { "$tmp/bin/cc-bench" --server nats://127.0.0.1:14333 --key "$tmp/cc-data/admin.nk" --json call current-load "$@"; }
sleep 1

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
time_it() { local s e; s=$(date +%s.%N); "$@" >/dev/null 2>&1 || return 1; e=$(date +%s.%N); echo "$e - $s" | bc -l; }

echo "checking both answer $N hosts…"
got_ssh=$(parallel-ssh -h "$tmp/hosts" -l root -p "$N" -t 60 -x "$ssh_opts" -i 'cat /proc/loadavg' | grep -c SUCCESS || true)
got_cc=$(bench | grep -c '"status":"ok"' || true)
echo "  ssh: $got_ssh of $N succeeded; commandcontrol: $got_cc of $N ok"
[ "$got_ssh" -eq "$N" ] && [ "$got_cc" -eq "$N" ] || { echo "not every host answered; not timing"; tail -5 "$tmp/sshd.log"; exit 1; }

ssh_times=(); cc_times=()
for _ in $(seq 1 "$RUNS"); do
  ssh_times+=("$(time_it parallel-ssh -h "$tmp/hosts" -l root -p "$N" -t 60 -x "$ssh_opts" -i 'cat /proc/loadavg')")
  cc_times+=("$(time_it bench)")
done
ssh_med=$(printf '%s\n' "${ssh_times[@]}" | median)
cc_med=$(printf '%s\n' "${cc_times[@]}" | median)
printf 'SSH fan-out (parallel-ssh, %d hosts):  median %.3f s over %d runs\n' "$N" "$ssh_med" "$RUNS"
printf 'commandcontrol (cc-bench call):        median %.3f s over %d runs\n' "$cc_med" "$RUNS"
printf 'commandcontrol is %.0f× faster (target ≥ 50×)\n' "$(echo "$ssh_med / $cc_med" | bc -l)"
