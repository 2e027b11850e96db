#!/usr/bin/env bash
# moe-cluster as a user runs it: start it in the background, wait for "cluster ready", drive
# traffic with the parity check, then stop it with SIGTERM and with SIGINT (Ctrl-C) and check that
# it exits 0 and leaves no process behind; and when a shard dies, the launcher stops the rest.
set -euo pipefail
bin=$1
work=$(mktemp -d)
trap 'pkill -KILL -f "$work/" 2>/dev/null || true; rm -rf "$work"' EXIT
"$bin/moe-make-checkpoint" --out "$work/model" --hidden 64 --intermediate 96 --experts 4 --layers 2 >/dev/null
read -r p0 p1 p2 < <(python3 -c 'import socket
ss=[socket.socket() for _ in range(3)]
[s.bind(("127.0.0.1",0)) for s in ss]
print(*[s.getsockname()[1] for s in ss])')
cat > "$work/cluster.yaml" <<YAML
model: {path: model}
router: {listen: "127.0.0.1:$p0", device: cpu}
shards:
  - {name: a, listen: "127.0.0.1:$p1", device: cpu, experts: [0, 1]}
  - {name: b, listen: "127.0.0.1:$p2", device: cpu, experts: "2-3"}
YAML

start() {
  # Emptied before the launch: the loop below must not find the previous run's "cluster ready"
  # (and signal a launcher that has not yet blocked the signal it would then miss).
  : >"$work/log"
  "$bin/moe-cluster" --config "$work/cluster.yaml" >>"$work/log" 2>&1 &
  pid=$!
  for _ in $(seq 300); do
    grep -q "cluster ready" "$work/log" && return 0
    kill -0 $pid 2>/dev/null || { cat "$work/log"; echo "FAIL: launcher exited during start-up"; exit 1; }
    sleep 0.1
  done
  cat "$work/log"; echo "FAIL: not ready in 30 s"; exit 1
}
expect_stopped() {  # $1: signal, $2: expected exit status
  local rc=0
  kill "-$1" $pid
  wait $pid || rc=$?
  [ "$rc" -eq "$2" ] || { cat "$work/log"; echo "FAIL: launcher exited $rc after SIG$1, expected $2"; exit 1; }
  sleep 0.2
  if pgrep -f "$work/cluster.yaml" >/dev/null; then
    pgrep -af "$work/cluster.yaml"; echo "FAIL: processes left after SIG$1"; exit 1
  fi
}

start
"$bin/moe-client" --config "$work/cluster.yaml" --tokens 300 --batch 100 --check --json >"$work/out.json"
grep -q '"parity": true' "$work/out.json" || { cat "$work/out.json"; echo "FAIL: no parity"; exit 1; }
grep -q '"errors": 0' "$work/out.json" || { cat "$work/out.json"; echo "FAIL: errors"; exit 1; }
expect_stopped TERM 0
echo "ok: SIGTERM stops every process"

start
expect_stopped INT 0
echo "ok: SIGINT (Ctrl-C) stops every process"

start
pkill -KILL -f -- "--shard b" || true
rc=0
wait $pid || rc=$?
[ "$rc" -eq 1 ] || { cat "$work/log"; echo "FAIL: launcher exited $rc after a shard died, expected 1"; exit 1; }
grep -q "b exited unexpectedly" "$work/log" || { cat "$work/log"; echo "FAIL: no message naming the dead shard"; exit 1; }
sleep 0.2
if pgrep -f "$work/cluster.yaml" >/dev/null; then echo "FAIL: processes left after a shard died"; exit 1; fi
echo "ok: a dead shard stops the cluster with a message naming it"
