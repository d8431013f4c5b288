#!/usr/bin/env bash
# One command: build, bring up a single-node cluster on the embedded defaults (process executor, state in ./.swarm)
# and deploy examples/stacks/demo.yml, showing it converge. Leaves the cluster running; prints how to stop it.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --quiet --bins
STATE="${SWARM_STATE_DIR:-$PWD/.swarm}"
ADDR="${SWARM_LISTEN_ADDR:-127.0.0.1:4242}"
export SWARM_HOST="unix://$STATE/swarmd.sock"
SWARMCTL="$PWD/target/debug/swarmctl"

if ! "$SWARMCTL" node ls >/dev/null 2>&1; then
  echo "Starting swarmd (state: $STATE, log: $STATE.log)"
  mkdir -p "$STATE"
  # stdout carries the worker join token at first start: not into a log file (swarm join-token shows it again)
  nohup "$PWD/target/debug/swarmd" --state-dir "$STATE" --listen-addr "$ADDR" >/dev/null 2>>"$STATE.log" &
  echo $! >"$STATE.pid"
  for _ in $(seq 1 150); do
    "$SWARMCTL" node ls >/dev/null 2>&1 && break
    sleep 0.2
  done
  if ! "$SWARMCTL" node ls >/dev/null 2>&1; then
    echo "swarmd did not come up; the end of $STATE.log:" >&2
    tail -n 20 "$STATE.log" >&2
    exit 1
  fi
fi
"$SWARMCTL" node ls
echo
"$SWARMCTL" stack deploy -c examples/stacks/demo.yml demo
echo
"$SWARMCTL" stack services demo
echo
"$SWARMCTL" stack ps demo
echo
"$SWARMCTL" service logs --tail 2 demo_web
cat <<TXT

The cluster keeps running. Try:
  export SWARM_HOST=$SWARM_HOST
  target/debug/swarmctl service scale demo_web=5
  target/debug/swarmctl swarm join-token worker      # the command that adds a worker
  target/debug/swarmctl service logs -f demo_worker
  target/debug/swarmctl stack rm demo            # remove the stack
  kill \$(cat $STATE.pid)                        # stop swarmd (tasks keep running until the stack is removed)
TXT
