#!/usr/bin/env bash
# Side by side with Docker Swarm mode on the same dockerd (BENCHMARKS.md, issue 13): 100 replicas of a busybox
# `sleep` service, with Swarm (`docker swarm init`) and with our swarmd (`--executor docker --no-task-networks`):
#   deploy   → 100/100 in `service ls` (the count sampled every 0.5 s: the curve is printed),
#   update   → `--force` at parallelism 10 (delay 0, monitor 5 s on both) until the update state is completed,
#   rm       → until no container of the service is left in `docker ps -a`.
# Then the heartbeat misses in our log. Leaves swarm mode and removes what it made, also on failure.
# Usage: scripts/bench_vs_swarm.sh [BIN_DIR] [ROUNDS]   (BIN_DIR defaults to target/release; needs root and dockerd)
set -euo pipefail
BIN=${1:-target/release}
ROUNDS=${2:-1}
N=100
IMAGE=swarm-test/busybox:latest
WORK=$(mktemp -d)
PORT=$((20000 + RANDOM % 20000))
DPID=
SWARM_WAS=$(docker info --format '{{.Swarm.LocalNodeState}}')
if [ "$SWARM_WAS" != inactive ]; then
  echo "dockerd is already in swarm mode ($SWARM_WAS): not touching it" >&2
  exit 1
fi
cleanup() {
  set +e
  docker service rm sw_web >/dev/null 2>&1
  docker swarm leave --force >/dev/null 2>&1
  if [ -n "$DPID" ]; then
    SWARM_HOST="unix://$WORK/state/swarmd.sock" "$BIN/swarmctl" stack rm bench >/dev/null 2>&1
    kill "$DPID" 2>/dev/null
    wait "$DPID" 2>/dev/null
  fi
  # every container either side made (ours carry Swarm's service label too, and our executor root)
  ids=$(docker ps -aq --filter label=com.docker.swarm.service.name=sw_web; docker ps -aq --filter label=com.docker.swarm.service.name=bench_web)
  [ -n "$ids" ] && docker rm -f $ids >/dev/null 2>&1
  rm -rf "$WORK"
}
trap cleanup EXIT
now() { date +%s%N; }
ms() { echo $(( ($2 - $1) / 1000000 )); }
containers() { docker ps -aq --filter "label=com.docker.swarm.service.name=$1" | wc -l; }

# $1 label, $2 command printing the running count; samples every 0.5 s until N, up to 300 s; prints the time
wave() {
  local t0=$1 count=0 curve="" deadline=$(( $(date +%s) + 300 ))
  while [ "$(date +%s)" -lt "$deadline" ]; do
    count=$($2 || echo 0)
    curve="$curve $(( ($(now) - t0) / 100000000 ))ds:${count:-0}"
    [ "${count:-0}" -ge "$N" ] && break
    sleep 0.5
  done
  echo "$(ms "$t0" "$(now)") ${count:-0} $curve"
}

swarm_count() { docker service ls --filter name=sw_web --format '{{.Replicas}}' | cut -d/ -f1; }
ours_count() { "$BIN/swarmctl" service ls 2>/dev/null | awk '$2 == "bench_web" {split($4, r, "/"); print r[1]}'; }

docker swarm init --advertise-addr 127.0.0.1 >/dev/null
"$BIN/swarmd" --state-dir "$WORK/state" --listen-addr "127.0.0.1:$PORT" --executor docker --no-task-networks \
  >"$WORK/swarmd.log" 2>&1 &
DPID=$!
export SWARM_HOST="unix://$WORK/state/swarmd.sock"
for _ in $(seq 300); do "$BIN/swarmctl" node ls 2>/dev/null | grep -q Ready && break; sleep 0.1; done
cat >"$WORK/stack.yml" <<EOF
services:
  web:
    image: $IMAGE
    command: ["sleep", "3600"]
    stop_grace_period: 1s
    deploy:
      replicas: $N
      update_config:
        parallelism: 10
        delay: 0s
        monitor: 5s
EOF

for round in $(seq "$ROUNDS"); do
  echo "== round $round"
  # --- Swarm
  t0=$(now)
  docker service create --detach --name sw_web --replicas $N --stop-grace-period 1s \
    --update-parallelism 10 --update-delay 0s --update-monitor 5s $IMAGE sleep 3600 >/dev/null
  read -r sw_deploy sw_got sw_curve <<<"$(wave "$t0" swarm_count)"
  t0=$(now)
  docker service update --detach --force sw_web >/dev/null
  until [ "$(docker service inspect -f '{{if .UpdateStatus}}{{.UpdateStatus.State}}{{end}}' sw_web)" = completed ]; do
    [ $(( ($(now) - t0) / 1000000000 )) -gt 300 ] && break
    sleep 0.2
  done
  sw_update=$(ms "$t0" "$(now)")
  t0=$(now)
  docker service rm sw_web >/dev/null
  until [ "$(containers sw_web)" -eq 0 ]; do sleep 0.2; done
  sw_rm=$(ms "$t0" "$(now)")

  # --- ours
  t0=$(now)
  "$BIN/swarmctl" stack deploy -c "$WORK/stack.yml" bench --detach >/dev/null
  read -r our_deploy our_got our_curve <<<"$(wave "$t0" ours_count)"
  t0=$(now)
  "$BIN/swarmctl" service update --force bench_web >/dev/null
  until "$BIN/swarmctl" service inspect bench_web | grep -q '"state": "completed"'; do
    [ $(( ($(now) - t0) / 1000000000 )) -gt 300 ] && break
    sleep 0.2
  done
  our_update=$(ms "$t0" "$(now)")
  t0=$(now)
  "$BIN/swarmctl" stack rm bench >/dev/null
  until [ "$(containers bench_web)" -eq 0 ]; do
    [ $(( ($(now) - t0) / 1000000000 )) -gt 300 ] && break
    sleep 0.2
  done
  our_rm=$(ms "$t0" "$(now)")

  ratio() { echo "scale=2; $1 / $2" | bc; }
  echo "deploy: swarm ${sw_deploy} ms ($sw_got/$N), ours ${our_deploy} ms ($our_got/$N): $(ratio "$our_deploy" "$sw_deploy")x"
  echo "update: swarm ${sw_update} ms, ours ${our_update} ms: $(ratio "$our_update" "$sw_update")x"
  echo "rm:     swarm ${sw_rm} ms, ours ${our_rm} ms: $(ratio "$our_rm" "$sw_rm")x"
  echo "curve swarm (time in 0.1 s : running):$sw_curve"
  echo "curve ours  (time in 0.1 s : running):$our_curve"
done
echo "heartbeat misses in our log: $(grep -c 'missed its heartbeats' "$WORK/swarmd.log" || true)"
