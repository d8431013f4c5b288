#!/usr/bin/env bash
# How fast DNS and the routing mesh follow a scale change (BENCHMARKS.md): one real swarmd (process executor) in a
# network namespace this script creates, a stack of an HTTP server (busybox httpd answering `web SLOT`) behind a
# published port plus a client task; ROUNDS times `service scale demo_web=1` then `=3`. Measured from the moment
# `swarmctl service scale` returns:
#   dns  — until `tasks.web`, asked from inside the client task (nsenter + busybox nslookup through the task's
#          resolver), answers the new number of addresses;
#   port — until the published port (busybox wget on 127.0.0.1:PORT inside the namespace, a new connection each)
#          answers from one replica only, six times in a row (3→1: the time of the first of those six),
#          or has answered from all three (1→3).
# Each probe is a process start (nsenter/wget, a few ms), which bounds the resolution; the two are probed at the
# same time. Prints every sample, then median and p90 per direction.
# Usage (root; needs ip, nsenter, nft, busybox): scripts/bench_scale_follow.sh [BIN_DIR] [ROUNDS]
# Only addresses inside the namespace carry traffic; everything made is removed on exit (by pid, by name).
set -euo pipefail
BIN=$(cd "${1:-target/debug}" && pwd)
ROUNDS=${2:-10}
BUSYBOX=$(command -v busybox || true)
[ -n "$BUSYBOX" ] || { echo "needs busybox"; exit 2; }
[ "$(id -u)" = 0 ] || { echo "needs root"; exit 2; }
NS="swbench$$"
PORT=18090
WORK=$(mktemp -d)
DPID=
cleanup() {
  [ -n "$DPID" ] && kill "$DPID" 2>/dev/null || true
  wait 2>/dev/null || true
  # tasks outlive swarmd by design: stop this run's shims (and so their tasks), by pid
  for p in $(ps -eo pid,args | awk -v w="$WORK/state/" '$3 == "__shim" && index($4, w) == 1 {print $1}'); do
    kill -TERM "$p" 2>/dev/null || true
  done
  sleep 2
  ip netns del "$NS" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
ip netns add "$NS"
ip -n "$NS" link set lo up
ip netns exec "$NS" "$BIN/swarmd" --state-dir "$WORK/state" --listen-addr 127.0.0.1:4242 \
  --heartbeat-period 1s >"$WORK/swarmd.log" 2>&1 &
DPID=$!
export SWARM_HOST="unix://$WORK/state/swarmd.sock"
for _ in $(seq 100); do [ -S "$WORK/state/swarmd.sock" ] && break; sleep 0.1; done
MARKER="sleep $((8000000 + $$))"
cat >"$WORK/web.yml" <<EOF
services:
  web:
    image: x
    command: [sh, -c, "d=\$\$(mktemp -d) && echo web \$\$SLOT > \$\$d/index.html && exec $BUSYBOX httpd -f -p 8080 -h \$\$d"]
    environment:
      SLOT: "{{.Task.Slot}}"
    deploy:
      replicas: 3
    ports:
      - "$PORT:8080"
    stop_grace_period: 1s
  client:
    image: x
    command: [sh, -c, "exec $MARKER"]
    stop_grace_period: 1s
EOF
"$BIN/swarmctl" stack deploy -c "$WORK/web.yml" demo >/dev/null
CLIENT=
for _ in $(seq 300); do
  CLIENT=$(pgrep -f "^$MARKER\$" || true)
  [ -n "$CLIENT" ] && break
  sleep 0.1
done
[ -n "$CLIENT" ] || { echo "the client task never started"; exit 1; }

now_ms() { echo $(($(date +%s%N) / 1000000)); }
dns_count() {
  nsenter -t "$CLIENT" -n -m -- "$BUSYBOX" nslookup tasks.web 2>/dev/null |
    awk '/^Address:/ && $2 !~ /:/ {n++} END {print n + 0}'
}
answer() {
  ip netns exec "$NS" timeout 5 "$BUSYBOX" wget -q -O - "http://127.0.0.1:$PORT/" 2>/dev/null || echo failed
}
# dns_follow T0 WANT: ms from T0 until tasks.web answers WANT addresses (at most 30 s)
dns_follow() {
  local t0=$1 want=$2 end=$(($1 + 30000))
  while [ "$(now_ms)" -lt $end ]; do
    [ "$(dns_count)" = "$want" ] && { echo $(($(now_ms) - t0)); return; }
  done
  echo timeout
}
# port_follow T0 WANT: ms from T0 until the published port follows (see the header; at most 30 s)
port_follow() {
  local t0=$1 want=$2 end=$(($1 + 30000)) run=0 first=0 seen="" prev=""
  while [ "$(now_ms)" -lt $end ]; do
    local t a
    t=$(now_ms)
    a=$(answer)
    if [ "$want" = 1 ]; then
      if [ "$a" != failed ] && [ "$a" = "$prev" ]; then
        run=$((run + 1))
      else
        run=1 first=$t prev=$a
      fi
      [ "$a" != failed ] && [ $run -ge 6 ] && { echo $((first - t0)); return; }
    else
      case " $seen " in *" ${a// /_} "*) ;; *) seen="$seen ${a// /_}" ;; esac
      if [ "$(echo "$seen" | tr ' ' '\n' | grep -c '^web_')" -ge 3 ]; then
        echo $((t - t0 + 0)); return
      fi
    fi
  done
  echo timeout
}
# settle WANT: wait (at most 30 s) until DNS and the port show WANT replicas, then 4 s (drains, stops)
settle() {
  for _ in $(seq 150); do
    [ "$(dns_count)" = "$1" ] && break
    sleep 0.2
  done
  sleep 4
}
settle 3
# what one probe costs (the resolution of the figures below)
t=$(now_ms); for _ in 1 2 3 4 5; do dns_count >/dev/null; done; dprobe=$((($(now_ms) - t) / 5))
t=$(now_ms); for _ in 1 2 3 4 5; do answer >/dev/null; done; pprobe=$((($(now_ms) - t) / 5))
echo "one probe: dns ${dprobe} ms, port ${pprobe} ms"
: >"$WORK/down"; : >"$WORK/up"
for r in $(seq "$ROUNDS"); do
  for want in 1 3; do
    "$BIN/swarmctl" service scale "demo_web=$want" >/dev/null
    t0=$(now_ms)
    dns_follow "$t0" "$want" >"$WORK/dns.$r" &
    probe=$!
    port_follow "$t0" "$want" >"$WORK/port.$r"
    wait "$probe"
    d=$(cat "$WORK/dns.$r"); p=$(cat "$WORK/port.$r")
    if [ "$want" = 1 ]; then f=down; else f=up; fi
    echo "$d $p" >>"$WORK/$f"
    echo "round $r: scale to $want: dns ${d} ms, port ${p} ms"
    settle "$want"
  done
done
stats() { # FILE COLUMN
  sort -n <(awk -v c="$2" '{print $c}' "$1" | grep -v timeout) | awk '{v[NR]=$1} END {
    if (NR == 0) {print "no samples"; exit}
    m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
    i = int(NR * 0.9 + 0.999); printf "median %s ms, p90 %s ms (n=%d)", m, v[i], NR}'
}
echo "3→1: dns $(stats "$WORK/down" 1); port $(stats "$WORK/down" 2)"
echo "1→3: dns $(stats "$WORK/up" 1); port $(stats "$WORK/up" 2)"
timeouts=$(cat "$WORK/down" "$WORK/up" | grep -c timeout || true)
echo "timeouts: $timeouts"
