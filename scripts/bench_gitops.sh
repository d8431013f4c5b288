#!/usr/bin/env bash
# GitOps watcher benchmark (BENCHMARKS.md): 200 stack files in a watched directory; the watcher's (and swarmd's)
# CPU over an idle minute, and the time from a one-file change to its service updated.
# Usage: scripts/bench_gitops.sh [target/debug|target/release] [interval]   (loopback only; cleans up after itself)
set -euo pipefail
BIN=${1:-target/debug}
INTERVAL=${2:-30s}
N=200
WORK=$(mktemp -d)
PORT=$((20000 + RANDOM % 20000))
"$BIN/swarmd" --state-dir "$WORK/state" --listen-addr "127.0.0.1:$PORT" >"$WORK/swarmd.log" 2>&1 &
DPID=$!
WPID=
cleanup() {
  [ -n "$WPID" ] && kill "$WPID" 2>/dev/null || true
  kill "$DPID" 2>/dev/null || true
  wait 2>/dev/null || true
  # tasks outlive swarmd by design: stop this run's shims (and so their tasks), by pid
  for p in $(ps -eo pid,args | awk -v w="$WORK/state/" '$3 == "__shim" && index($4, w) == 1 {print $1}'); do
    kill -TERM "$p" 2>/dev/null || true
  done
  sleep 2
  rm -rf "$WORK"
}
trap cleanup EXIT
export SWARM_HOST="unix://$WORK/state/swarmd.sock"
for _ in $(seq 100); do [ -S "$WORK/state/swarmd.sock" ] && break; sleep 0.1; done
mkdir "$WORK/stacks"
stack() { # name replicas
  printf 'services:\n  web:\n    image: web:1\n    command: ["sleep", "3000"]\n    stop_grace_period: 1s\n    deploy:\n      replicas: %s\n' "$2" >"$WORK/stacks/$1.yml"
}
for i in $(seq -w 1 $N); do stack "s$i" 1; done
"$BIN/swarmctl" stack watch --interval "$INTERVAL" "$WORK/stacks" >"$WORK/watch.log" 2>&1 &
WPID=$!
t0=$(date +%s.%N)
while [ "$("$BIN/swarmctl" stack ls --format json | grep -c '"Sync":"Synced"')" -lt $N ]; do sleep 1; done
t1=$(date +%s.%N)
echo "all $N stacks deployed and Synced in $(echo "$t1 - $t0" | bc) s"
sleep 5
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
HZ=$(getconf CLK_TCK)
w0=$(ticks $WPID); d0=$(ticks $DPID)
sleep 60
w1=$(ticks $WPID); d1=$(ticks $DPID)
echo "idle minute (interval $INTERVAL): watcher $(echo "scale=2; ($w1 - $w0) * 100 / $HZ / 60" | bc)% of one core, swarmd $(echo "scale=2; ($d1 - $d0) * 100 / $HZ / 60" | bc)%"
for round in 1 2 3 4 5; do
  n=$(printf '%03d' $((round * 37)))
  want=$((round + 1))
  t0=$(date +%s%N)
  stack "s$n" $want
  until "$BIN/swarmctl" service inspect "s${n}_web" | grep "\"replicas\": $want" >/dev/null; do :; done
  t1=$(date +%s%N)
  echo "change $round: s$n replicas → $want: service updated after $(( (t1 - t0) / 1000000 )) ms"
done
