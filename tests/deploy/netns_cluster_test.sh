#!/usr/bin/env bash
# The Kubernetes placement, run for real without Kubernetes: one network namespace per "pod"
# (router, shard 0, shard 1), each with its own address on a private bridge, every shard on the
# same ports, started with exactly the command and arguments of deploy/k8s/base (the StatefulSet
# pods pick their shard from HOSTNAME=moe-expert-<i> via --shard-index-from-hostname and bind
# 0.0.0.0), reading a cluster YAML made by tools/k8s_cluster_config.py whose shard addresses are
# the StatefulSet DNS names (moe-expert-<i>.moe-expert.<ns>.svc.cluster.local, resolved through
# /etc/netns/<ns>/hosts as cluster DNS would). Then: every /readyz turns 200, moe-client sends
# traffic with the parity check through the router's address, and SIGTERM drains as the pod
# termination budget assumes (not ready at once, still serving for drain_ms, exit 0).
#
#   tests/deploy/netns_cluster_test.sh BUILD/bin
#
# Needs root (ip netns); exits 77 (CTest: skipped) when network namespaces cannot be created.
# Addresses: 10.231.0.1 router, .2 and .3 shards — only inside namespaces this test creates
# (plus a fourth holding the bridge, so the host's own network is never touched). Everything it
# creates is removed on exit, failure included.
set -euo pipefail

[ $# -eq 1 ] || { echo "usage: $0 BIN_DIR"; exit 2; }
bin=$(cd "$1" && pwd)
repo=$(cd "$(dirname "$0")/../.." && pwd)
skip() { echo "SKIP: $*"; exit 77; }
for b in moe-router moe-expert moe-client moe-make-checkpoint; do
  [ -x "$bin/$b" ] || { echo "FAIL: $bin/$b is not built"; exit 1; }
done
command -v ip >/dev/null || skip "iproute2 (ip) is not installed"

net=10.231.0          # a private /24, used only inside the namespaces below
tag="moek8s$$"
R="$tag-router" S0="$tag-shard0" S1="$tag-shard1" SW="$tag-switch"
work=$(mktemp -d)
[ -d /etc/netns ] && had_etc_netns=1 || had_etc_netns=0
created=()
pids=()

cleanup() {
  local rc=$?
  trap - EXIT
  # Only processes inside our own namespaces: what this test started.
  for ns in "${created[@]}"; do
    for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null || true; done
  done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  for ns in "${created[@]}"; do
    ip netns del "$ns" 2>/dev/null || true
    rm -rf "/etc/netns/$ns"
  done
  [ "$had_etc_netns" = 1 ] || rmdir /etc/netns 2>/dev/null || true
  if [ "$rc" -ne 0 ]; then
    for log in "$work"/*.log; do
      [ -f "$log" ] && { echo "----- $(basename "$log")"; tail -n 40 "$log"; }
    done
  fi
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if ! ip netns add "$R" 2>"$work/netns.err"; then
  skip "ip netns add is not permitted here (needs root): $(tr '\n' ' ' <"$work/netns.err")"
fi
created+=("$R")
for ns in "$S0" "$S1" "$SW"; do
  ip netns add "$ns"
  created+=("$ns")
done

# A bridge inside the switch namespace; each pod namespace gets eth0 on it, like a pod network.
ip -n "$SW" link add br0 type bridge
ip -n "$SW" link set br0 up
ip -n "$SW" link set lo up
host=1
for ns in "$R" "$S0" "$S1"; do
  ip link add eth0 netns "$ns" type veth peer name "port$host" netns "$SW"
  ip -n "$SW" link set "port$host" master br0
  ip -n "$SW" link set "port$host" up
  ip -n "$ns" addr add "$net.$host/24" dev eth0
  ip -n "$ns" link set eth0 up
  ip -n "$ns" link set lo up
  host=$((host + 1))
done

# What the StatefulSet and Deployment run, from the manifests themselves.
python3 - "$repo" "$work" <<'PY'
import os, sys, yaml
repo, work = sys.argv[1:]
base = os.path.join(repo, "deploy", "k8s", "base")
def load(name):
    with open(os.path.join(base, name)) as f:
        return yaml.safe_load(f)
sts, dep = load("expert-statefulset.yaml"), load("router-deployment.yaml")
with open(os.path.join(repo, "deploy", "k8s", "overlays", "cpu", "kustomization.yaml")) as f:
    ns = yaml.safe_load(f)["namespace"]
for name, obj in (("expert", sts), ("router", dep)):
    c = obj["spec"]["template"]["spec"]["containers"][0]
    argv = c["command"] + c["args"]
    with open(os.path.join(work, f"{name}.argv"), "w") as f:
        f.write("\n".join(argv) + "\n")
with open(os.path.join(work, "names"), "w") as f:
    f.write(f"{ns} {sts['metadata']['name']} {sts['spec']['serviceName']}\n")
PY
read -r k8s_ns sts svc <"$work/names"
mapfile -t expert_argv <"$work/expert.argv"
mapfile -t router_argv <"$work/router.argv"
config_in_pod=/etc/moe/cluster.yaml
for i in "${!expert_argv[@]}"; do
  [ "${expert_argv[$i]}" = "$config_in_pod" ] && expert_argv[$i]="$work/cluster.yaml"
done
for i in "${!router_argv[@]}"; do
  [ "${router_argv[$i]}" = "$config_in_pod" ] && router_argv[$i]="$work/cluster.yaml"
done
[[ " ${expert_argv[*]} " == *" --shard-index-from-hostname "* ]] \
  || { echo "FAIL: the StatefulSet does not use --shard-index-from-hostname"; exit 1; }

# The tiny model and a local cluster YAML, converted as the overlays are (shard names that are
# not "shard-<i>", so picking shards[i] by ordinal is really exercised).
"$bin/moe-make-checkpoint" --out "$work/model" --hidden 64 --intermediate 96 --experts 4 \
  --layers 2 >/dev/null
cat >"$work/local.yaml" <<YAML
model: {path: model}
router: {listen: "127.0.0.1:7100", admin: "127.0.0.1:9100", device: cpu}
shards:
  - {name: left, listen: "127.0.0.1:7201", admin: "127.0.0.1:9201", device: cpu, experts: [0, 1]}
  - {name: right, listen: "127.0.0.1:7202", device: cpu, experts: "2-3"}
timeouts: {drain_ms: 0}
YAML
drain_ms=3000
python3 "$repo/tools/k8s_cluster_config.py" "$work/local.yaml" --namespace "$k8s_ns" \
  --statefulset "$sts" --headless-service "$svc" --model-path "$work/model" \
  --drain-ms "$drain_ms" -o "$work/cluster.yaml"
shard_dns=("$sts-0.$svc.$k8s_ns.svc.cluster.local" "$sts-1.$svc.$k8s_ns.svc.cluster.local")
grep -q "listen: ${shard_dns[1]}:7201" "$work/cluster.yaml" \
  || { cat "$work/cluster.yaml"; echo "FAIL: shard 1 is not at its StatefulSet DNS name"; exit 1; }

# Cluster DNS, as /etc/hosts of each namespace (ip netns exec bind-mounts /etc/netns/<ns>/*).
for ns in "$R" "$S0" "$S1"; do
  mkdir -p "/etc/netns/$ns"
  cat >"/etc/netns/$ns/hosts" <<HOSTS
127.0.0.1 localhost
$net.1 moe-router.$k8s_ns.svc.cluster.local
$net.2 ${shard_dns[0]}
$net.3 ${shard_dns[1]}
HOSTS
done

http_code() {  # NS URL -> HTTP status code ("000" when no answer)
  ip netns exec "$1" curl -s -o /dev/null -m 2 -w '%{http_code}' "$2" 2>/dev/null || true
}
http_body() {
  ip netns exec "$1" curl -s -m 2 "$2" 2>/dev/null || true
}
command -v curl >/dev/null || {
  http_code() {
    ip netns exec "$1" python3 -c 'import sys, urllib.request, urllib.error
try: print(urllib.request.urlopen(sys.argv[1], timeout=2).status)
except urllib.error.HTTPError as e: print(e.code)
except Exception: print("000")' "$2"
  }
  http_body() {
    ip netns exec "$1" python3 -c 'import sys, urllib.request
try: print(urllib.request.urlopen(sys.argv[1], timeout=2).read().decode())
except Exception as e: print(getattr(e, "read", lambda: b"")().decode())' "$2"
  }
}

# Start the "pods".
i=0
for ns in "$S0" "$S1"; do
  ip netns exec "$ns" env HOSTNAME="$sts-$i" "$bin/${expert_argv[0]}" "${expert_argv[@]:1}" \
    >"$work/shard$i.log" 2>&1 &
  pids+=($!)
  i=$((i + 1))
done
shard_pids=("${pids[@]}")
ip netns exec "$R" "$bin/${router_argv[0]}" "${router_argv[@]:1}" >"$work/router.log" 2>&1 &
router_pid=$!
pids+=("$router_pid")

ready=0
for _ in $(seq 600); do
  for pid in "${pids[@]}"; do
    kill -0 "$pid" 2>/dev/null || { echo "FAIL: a process exited during start-up"; exit 1; }
  done
  if [ "$(http_code "$R" "http://$net.1:9100/readyz")" = 200 ]; then ready=1; break; fi
  sleep 0.1
done
[ "$ready" = 1 ] || { echo "FAIL: router /readyz not 200 within 60 s"; exit 1; }
echo "ok: router ready at $net.1 with both shards reached by their StatefulSet DNS names"

# Each pod serves shards[ordinal], reachable by DNS name on the shared ports.
i=0
for name in left right; do
  url="http://${shard_dns[$i]}:9201"
  [ "$(http_code "$R" "$url/readyz")" = 200 ] || { echo "FAIL: $url/readyz"; exit 1; }
  http_body "$R" "$url/v1/info" | grep -q "\"name\": *\"$name\"" \
    || { http_body "$R" "$url/v1/info"; echo "FAIL: pod $sts-$i does not serve shard $name"; exit 1; }
  http_body "$R" "$url/metrics" | grep -q '^moe_expert_requests_total' \
    || { echo "FAIL: $url/metrics has no moe_expert_* metrics"; exit 1; }
  i=$((i + 1))
done
echo "ok: pod $sts-0 serves shards[0] (left), $sts-1 serves shards[1] (right)"

ip netns exec "$R" "$bin/moe-client" --router "$net.1:7100" --model "$work/model" --tokens 512 \
  --batch 128 --check --json >"$work/client.json" 2>"$work/client.log" \
  || { cat "$work/client.json"; echo "FAIL: moe-client exited non-zero"; exit 1; }
python3 - "$work/client.json" <<'PY' || exit 1
import json, sys
r = json.load(open(sys.argv[1]))
if r.get("parity") is not True or r.get("errors") != 0 or r.get("tokens", 512) != 512:
    sys.exit(f"FAIL: moe-client result {r}")
print(f"ok: 512 tokens through {r.get('router', 'the router')}: parity true, errors 0, "
      f"max_abs_err {r.get('max_abs_err')}")
PY

# Termination as in a pod: SIGTERM -> not ready at once, still serving for drain_ms, exit 0.
kill -TERM "$router_pid"
code=000
for _ in $(seq 20); do
  code=$(http_code "$R" "http://$net.1:9100/readyz")
  [ "$code" = 503 ] && break
  sleep 0.05
done
[ "$code" = 503 ] || { echo "FAIL: /readyz is $code after SIGTERM, expected 503 (draining)"; exit 1; }
ip netns exec "$R" "$bin/moe-client" --router "$net.1:7100" --model "$work/model" --tokens 128 \
  --batch 128 --check --json >"$work/drain.json" 2>>"$work/client.log" \
  || { cat "$work/drain.json"; echo "FAIL: the draining router did not serve"; exit 1; }
kill -0 "$router_pid" 2>/dev/null || { echo "FAIL: router exited before drain_ms"; exit 1; }
start=$(date +%s%N)
rc=0
wait "$router_pid" || rc=$?
elapsed_ms=$((($(date +%s%N) - start) / 1000000))
[ "$rc" -eq 0 ] || { echo "FAIL: router exited $rc after SIGTERM"; exit 1; }
[ "$elapsed_ms" -lt $((drain_ms + 5000)) ] || { echo "FAIL: router took $elapsed_ms ms to stop"; exit 1; }
echo "ok: SIGTERM: /readyz 503 at once, requests still served, exit 0 within drain_ms"
for pid in "${shard_pids[@]}"; do kill -TERM "$pid"; done
for pid in "${shard_pids[@]}"; do
  rc=0
  wait "$pid" || rc=$?
  [ "$rc" -eq 0 ] || { echo "FAIL: a shard exited $rc after SIGTERM"; exit 1; }
done
echo "ok: shards stop cleanly on SIGTERM"
