#!/usr/bin/env bash
# Process executor start wave (BENCHMARKS.md, issue 13): one swarmd (process executor, --no-task-networks) deploys
# N replicas of `sleep 3600` (N = 100, then 1000); the time from `stack deploy` to N/N in `swarmctl service ls`
# (polled every 0.1 s), next to N fork+exec of the same command from this shell in the same run (the floor).
# Then swarmd's RSS and the shims' PSS (sum over the run's shims, /proc/PID/smaps_rollup).
# Usage: scripts/bench_process.sh [BIN_DIR] [N ...]   (BIN_DIR defaults to target/release; loopback only; cleans up)
set -euo pipefail
BIN=${1:-target/release}
shift || true
SIZES=${*:-100 1000}
WORK=$(mktemp -d)
PORT=$((20000 + RANDOM % 20000))
DPID=
BASE_PIDS=()
shims() { ps -eo pid,args | awk -v w="$WORK/state/" '$3 == "__shim" && index($4, w) == 1 {print $1}'; }
cleanup() {
  for p in "${BASE_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -n "$DPID" ] && kill "$DPID" 2>/dev/null || true
  wait 2>/dev/null || true
  # tasks outlive swarmd by design: stop this run's shims (and so their tasks), by pid
  for p in $(shims); do kill -TERM "$p" 2>/dev/null || true; done
  for _ in $(seq 50); do [ -z "$(shims)" ] && break; sleep 0.2; done
  for p in $(shims); do kill -KILL "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT
"$BIN/swarmd" --state-dir "$WORK/state" --listen-addr "127.0.0.1:$PORT" --no-task-networks >"$WORK/swarmd.log" 2>&1 &
DPID=$!
export SWARM_HOST="unix://$WORK/state/swarmd.sock"
for _ in $(seq 200); do "$BIN/swarmctl" node ls 2>/dev/null | grep -q Ready && break; sleep 0.1; done
now() { date +%s%N; }
ms() { echo $(( ($2 - $1) / 1000000 )); }
running() { "$BIN/swarmctl" service ls 2>/dev/null | awk '$2 == "p_sleep" {split($4, r, "/"); print r[1]}'; }
for N in $SIZES; do
  # the floor: N fork+exec of the same command from this shell, until every one is running (its pid exists)
  t0=$(now)
  BASE_PIDS=()
  for _ in $(seq "$N"); do sleep 3600 & BASE_PIDS+=($!); done
  for p in "${BASE_PIDS[@]}"; do while [ ! -e "/proc/$p" ]; do :; done; done
  t1=$(now)
  base=$(ms "$t0" "$t1")
  kill "${BASE_PIDS[@]}" 2>/dev/null || true
  wait "${BASE_PIDS[@]}" 2>/dev/null || true
  BASE_PIDS=()
  printf 'networks:\n  default:\n    ipam:\n      config:\n        - subnet: 10.200.0.0/16\nservices:\n  sleep:\n    image: none\n    command: ["sleep", "3600"]\n    stop_grace_period: 1s\n    deploy:\n      replicas: %s\n' "$N" >"$WORK/p.yml"
  t0=$(now)
  "$BIN/swarmctl" stack deploy -c "$WORK/p.yml" p --detach >/dev/null
  got=0
  deadline=$(( $(date +%s) + 300 ))
  while [ "${got:-0}" -lt "$N" ] && [ "$(date +%s)" -lt "$deadline" ]; do got=$(running); sleep 0.1; done
  t1=$(now)
  ours=$(ms "$t0" "$t1")
  rss=$(awk '/VmRSS/ {print $2}' "/proc/$DPID/status")
  pss=0; count=0
  for p in $(shims); do
    k=$(awk '/^Pss:/ {print $2}' "/proc/$p/smaps_rollup" 2>/dev/null || echo 0)
    pss=$((pss + ${k:-0})); count=$((count + 1))
  done
  misses=$(grep -c 'missed its heartbeats' "$WORK/swarmd.log" || true)
  echo "N=$N: swarmd ${got:-0}/$N Running after ${ours} ms; $N x fork+exec of sleep: ${base} ms; ratio $(echo "scale=2; $ours / ($base + (${base} == 0))" | bc)x; swarmd RSS $((rss / 1024)) MiB; $count shims, PSS total $((pss / 1024)) MiB ($((pss / (count + (count == 0)))) KiB each); heartbeat misses so far $misses"
  "$BIN/swarmctl" stack rm p >/dev/null
  for _ in $(seq 600); do [ -z "$(shims)" ] && break; sleep 0.2; done
done
