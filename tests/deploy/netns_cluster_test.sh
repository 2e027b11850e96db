#!/usr/bin/env bash
# The Kubernetes placement, run for real without Kubernetes: one network namespace per "pod"
# (the router and two replica groups of two shard pods each, moe-expert-g<k>-<i>), each with its
# own address on a private bridge, every shard on the same ports, started with exactly the command
# and arguments of deploy/k8s/base (a shard pod serves the shards[] entry of its own name: the
# kubelet expands --shard $(POD_NAME) from the downward API; it binds 0.0.0.0), reading a cluster
# YAML made by tools/k8s_cluster_config.py --replicas 2 whose shard addresses are the pods' stable
# DNS names (moe-expert-g<k>-<i>.moe-expert.<ns>.svc.cluster.local, resolved through
# /etc/netns/<ns>/hosts as cluster DNS would). Then:
#   - every pod is verified by the router, moe-client sends traffic with the parity check;
#   - under continuous parity-checked traffic (4 requests in flight), a rolling update of one
#     group as the StatefulSet controller does it (highest ordinal first: SIGTERM, the pod drains
#     for drain_ms and exits, the new pod starts, becomes ready, and the next pod goes only once
#     the router has it back in rotation, which must take less than the manifest's
#     minReadySeconds), then a pod of the other group SIGKILLed (no drain) and restarted:
#     0 failed requests, every answer equal to the in-process computation;
#   - SIGTERM drains as the pod termination budget assumes (not ready at once, still serving for
#     drain_ms, exit 0).
#
#   tests/deploy/netns_cluster_test.sh BUILD/bin
#
# Needs root (ip netns); exits 77 (CTest: skipped) when network namespaces cannot be created.
# Addresses: 10.231.0.1 router, .2-.5 shard pods — only inside namespaces this test creates
# (plus one holding the bridge, so the host's own network is never touched). Everything it
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
R="$tag-router" SW="$tag-switch"
PODNS=("$tag-pod0" "$tag-pod1" "$tag-pod2" "$tag-pod3")
work=$(mktemp -d)
[ -d /etc/netns ] && had_etc_netns=1 || had_etc_netns=0
created=()
pids=()
traffic_pid=

cleanup() {
  local rc=$?
  trap - EXIT
  touch "$work/stop"
  if [ -n "$traffic_pid" ]; then kill -TERM "$traffic_pid" 2>/dev/null || true; fi
  # Only processes inside our own namespaces: what this test started.
  for ns in "${created[@]}"; do
    for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null || true; done
  done
  for pid in "${pids[@]}" $traffic_pid; do wait "$pid" 2>/dev/null || true; done
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
for ns in "${PODNS[@]}" "$SW"; do
  ip netns add "$ns"
  created+=("$ns")
done

# A bridge inside the switch namespace; each pod namespace gets eth0 on it, like a pod network.
ip -n "$SW" link add br0 type bridge
ip -n "$SW" link set br0 up
ip -n "$SW" link set lo up
host=1
for ns in "$R" "${PODNS[@]}"; do
  ip link add eth0 netns "$ns" type veth peer name "port$host" netns "$SW"
  ip -n "$SW" link set "port$host" master br0
  ip -n "$SW" link set "port$host" up
  ip -n "$ns" addr add "$net.$host/24" dev eth0
  ip -n "$ns" link set eth0 up
  ip -n "$ns" link set lo up
  host=$((host + 1))
done

# The tiny model and a local cluster YAML (two expert sets), converted as the overlays are: each
# set a replica group of 2 pods.
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

# What the group StatefulSets and the router Deployment run, from the manifests themselves; the
# pods' names from the generator (the names the group kustomizations give the StatefulSets).
python3 - "$repo" "$work" "$drain_ms" <<'PY'
import os, subprocess, sys, yaml
repo, work, drain_ms = sys.argv[1:]
k8s = os.path.join(repo, "deploy", "k8s")
def load(*path):
    with open(os.path.join(k8s, *path)) as f:
        return yaml.safe_load(f)
sts = load("base", "expert-group", "expert-statefulset.yaml")
dep = load("base", "router-deployment.yaml")
ns = load("overlays", "cpu", "kustomization.yaml")["namespace"]
for name, obj in (("expert", sts), ("router", dep)):
    c = obj["spec"]["template"]["spec"]["containers"][0]
    argv = c["command"] + c["args"]
    with open(os.path.join(work, f"{name}.argv"), "w") as f:
        f.write("\n".join(argv) + "\n")
    if name == "expert":
        env = {e["name"]: e for e in c.get("env") or []}
        ref = env.get("POD_NAME", {}).get("valueFrom", {}).get("fieldRef", {})
        if "$(POD_NAME)" not in argv or ref.get("fieldPath") != "metadata.name":
            sys.exit("FAIL: the shard pods do not pick their shard as --shard $(POD_NAME) with "
                     "POD_NAME = metadata.name")
base, svc = sts["metadata"]["name"], sts["spec"]["serviceName"]
sys.path.insert(0, os.path.join(repo, "tools"))
import k8s_cluster_config as kcc
opts = dict(namespace=ns, statefulset=base, headless_service=svc, model_path=f"{work}/model",
            drain_ms=int(drain_ms), replicas=2, shard_threads=1, router_threads=1)
local = kcc.load_local(os.path.join(work, "local.yaml"))
subprocess.run([sys.executable, os.path.join(repo, "tools", "k8s_cluster_config.py"),
                os.path.join(work, "local.yaml"), "--namespace", ns, "--statefulset", base,
                "--headless-service", svc, "--model-path", opts["model_path"], "--drain-ms",
                drain_ms, "--replicas", "2", "--shard-threads", "1", "--router-threads", "1",
                "-o", os.path.join(work, "cluster.yaml")], check=True)
with open(os.path.join(work, "pods"), "w") as f:
    for g in kcc.replica_groups(local, **opts):
        for p in g["pods"]:
            f.write(f"{p} {g['name']} {g['source']}\n")
with open(os.path.join(work, "names"), "w") as f:
    f.write(f"{ns} {svc} {sts['spec'].get('minReadySeconds', 0)}\n")
PY
read -r k8s_ns svc min_ready_s <"$work/names"
pod=() group=() source=()
while read -r p g s; do pod+=("$p"); group+=("$g"); source+=("$s"); done <"$work/pods"
[ "${#pod[@]}" -eq 4 ] || { echo "FAIL: expected 2 groups x 2 pods, got ${pod[*]}"; exit 1; }
mapfile -t expert_argv <"$work/expert.argv"
mapfile -t router_argv <"$work/router.argv"
config_in_pod=/etc/moe/cluster.yaml
for i in "${!expert_argv[@]}"; do
  [ "${expert_argv[$i]}" = "$config_in_pod" ] && expert_argv[$i]="$work/cluster.yaml"
done
for i in "${!router_argv[@]}"; do
  [ "${router_argv[$i]}" = "$config_in_pod" ] && router_argv[$i]="$work/cluster.yaml"
done
dns=()
for p in "${pod[@]}"; do
  dns+=("$p.$svc.$k8s_ns.svc.cluster.local")
  grep -q "listen: $p.$svc.$k8s_ns.svc.cluster.local:7201" "$work/cluster.yaml" \
    || { cat "$work/cluster.yaml"; echo "FAIL: no shards[] entry for pod $p at its DNS name"
         exit 1; }
done

# Cluster DNS, as /etc/hosts of each namespace (ip netns exec bind-mounts /etc/netns/<ns>/*).
for ns in "$R" "${PODNS[@]}"; do
  mkdir -p "/etc/netns/$ns"
  {
    echo "127.0.0.1 localhost"
    echo "$net.1 moe-router.$k8s_ns.svc.cluster.local"
    for i in "${!pod[@]}"; do echo "$net.$((i + 2)) ${dns[$i]}"; done
  } >"/etc/netns/$ns/hosts"
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
now_ms() { echo $(($(date +%s%N) / 1000000)); }

# Start pod i as the kubelet would: hostname = pod name, $(POD_NAME) expanded in the arguments.
pod_pid=()
start_pod() {
  local i=$1 args=() a
  for a in "${expert_argv[@]:1}"; do args+=("${a//\$(POD_NAME)/${pod[$i]}}"); done
  ip netns exec "${PODNS[$i]}" env HOSTNAME="${pod[$i]}" POD_NAME="${pod[$i]}" \
    "$bin/${expert_argv[0]}" "${args[@]}" >>"$work/${pod[$i]}.log" 2>&1 &
  pod_pid[i]=$!
  pids+=($!)
}
# How often the router has put pod i's shard (back) in rotation.
verified_count() {
  grep -c "shard ${pod[$1]} (.*) verified" "$work/router.log" || true
}
wait_verified() {  # I BEFORE TIMEOUT_MS: until the router verifies pod i again
  local deadline=$(($(now_ms) + $3))
  while [ "$(verified_count "$1")" -le "$2" ]; do
    [ "$(now_ms)" -lt "$deadline" ] || return 1
    sleep 0.05
  done
}

for i in "${!pod[@]}"; do start_pod "$i"; done
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
for i in "${!pod[@]}"; do
  wait_verified "$i" 0 10000 || { echo "FAIL: the router never verified ${pod[$i]}"; exit 1; }
done
echo "ok: router ready at $net.1, all 4 shard pods verified at their StatefulSet DNS names"

# Each pod serves the shards[] entry of its own name, reachable by DNS name on the shared ports.
for i in "${!pod[@]}"; do
  url="http://${dns[$i]}:9201"
  [ "$(http_code "$R" "$url/readyz")" = 200 ] || { echo "FAIL: $url/readyz"; exit 1; }
  http_body "$R" "$url/v1/info" | grep -q "\"name\": *\"${pod[$i]}\"" \
    || { http_body "$R" "$url/v1/info"; echo "FAIL: pod ${pod[$i]} does not serve its entry"
         exit 1; }
  http_body "$R" "$url/metrics" | grep -q '^moe_expert_requests_total' \
    || { echo "FAIL: $url/metrics has no moe_expert_* metrics"; exit 1; }
done
echo "ok: replica groups: ${group[0]} = ${source[0]} on ${pod[0]}, ${pod[1]}; ${group[2]} =" \
  "${source[2]} on ${pod[2]}, ${pod[3]}; each pod serves the entry of its name"

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

# Continuous parity-checked traffic, one moe-client run after another (4 requests in flight).
mkdir "$work/traffic"
(
  n=0
  while [ ! -e "$work/stop" ]; do
    rc=0
    ip netns exec "$R" "$bin/moe-client" --router "$net.1:7100" --model "$work/model" \
      --tokens 1024 --batch 32 --concurrency 4 --check --json --quiet \
      >"$work/traffic/$n.json" 2>>"$work/traffic.log" || rc=$?
    echo "$rc" >"$work/traffic/$n.rc"
    n=$((n + 1))
  done
) &
traffic_pid=$!
runs_done() { find "$work/traffic" -name '*.rc' | wc -l; }
wait_runs() {  # at least N more completed runs than now
  local want=$(($(runs_done) + $1)) deadline=$(($(now_ms) + 30000))
  while [ "$(runs_done)" -lt "$want" ]; do
    [ "$(now_ms)" -lt "$deadline" ] || { echo "FAIL: traffic stalled"; exit 1; }
    sleep 0.05
  done
}
wait_runs 2

# A rolling update of group 1 (pods 2 and 3), as the StatefulSet controller does it: highest
# ordinal first, one pod at a time; the kubelet runs preStop, then SIGTERM; the pod drains and
# exits; the new pod starts; the controller takes the next pod only minReadySeconds after the new
# one is ready. Here the next pod goes as soon as the router has the new one in rotation, which
# must take less than minReadySeconds.
replace_pod() {  # I SIGNAL
  local i=$1 sig=$2 before rc=0 t0 t_ready
  before=$(verified_count "$i")
  local runs_before
  runs_before=$(runs_done)
  kill "-$sig" "${pod_pid[$i]}"
  if [ "$sig" = TERM ]; then
    # A shard drains: not ready at once, finishes the calls it accepted, and exits as soon as none
    # is left — an idle one at once, so "gone" (000) is as good as "draining" (503) here.
    code=000
    for _ in $(seq 20); do
      code=$(http_code "$R" "http://${dns[$i]}:9201/readyz")
      [ "$code" = 503 ] || [ "$code" = 000 ] && break
      sleep 0.05
    done
    [ "$code" = 503 ] || [ "$code" = 000 ] \
      || { echo "FAIL: ${pod[$i]} /readyz is $code after SIGTERM, expected 503 or gone"; exit 1; }
  fi
  t0=$(now_ms)
  { wait "${pod_pid[$i]}"; } 2>/dev/null || rc=$?
  if [ "$sig" = TERM ]; then
    [ "$rc" -eq 0 ] || { echo "FAIL: ${pod[$i]} exited $rc after SIGTERM"; exit 1; }
    [ $(($(now_ms) - t0)) -lt $((drain_ms + 5000)) ] \
      || { echo "FAIL: ${pod[$i]} drained too long"; exit 1; }
  fi
  # Traffic must complete while the pod is out (served by its group's other replica): hold the
  # replacement back until a client run has finished (a run takes seconds on a loaded machine).
  for _ in $(seq 600); do
    [ "$(runs_done)" -gt "$runs_before" ] && break
    sleep 0.1
  done
  start_pod "$i"
  for _ in $(seq 600); do
    [ "$(http_code "$R" "http://${dns[$i]}:9201/readyz")" = 200 ] && break
    kill -0 "${pod_pid[$i]}" 2>/dev/null || { echo "FAIL: ${pod[$i]} exited on restart"; exit 1; }
    sleep 0.05
  done
  t_ready=$(now_ms)
  wait_verified "$i" "$before" $((min_ready_s * 1000)) \
    || { echo "FAIL: the router did not verify the new ${pod[$i]} within minReadySeconds" \
           "($min_ready_s s) of it being ready"; exit 1; }
  [ "$(runs_done)" -gt "$runs_before" ] \
    || { echo "FAIL: no traffic completed while ${pod[$i]} was out"; exit 1; }
  echo "ok: ${pod[$i]} SIG$sig, replaced, back in rotation $(($(now_ms) - t_ready)) ms after" \
    "ready (minReadySeconds $min_ready_s s)"
}
replace_pod 3 TERM
wait_runs 1
replace_pod 2 TERM
wait_runs 1
echo "ok: rolling update of ${group[2]} done under traffic"
# An unplanned loss: a pod of group 0 killed without draining, mid-traffic.
replace_pod 0 KILL
wait_runs 2
touch "$work/stop"
wait "$traffic_pid"
traffic_pid=
python3 - "$work/traffic" <<'PY' || exit 1
import glob, json, os, sys
d = sys.argv[1]
runs = sorted(int(os.path.basename(p)[:-3]) for p in glob.glob(os.path.join(d, "*.rc")))
bad, requests, tokens = [], 0, 0
for n in runs:
    rc = int(open(os.path.join(d, f"{n}.rc")).read())
    try:
        r = json.load(open(os.path.join(d, f"{n}.json")))
    except (OSError, ValueError):
        r = {}
    requests += r.get("requests", 0)
    tokens += r.get("tokens", 0)
    if rc != 0 or r.get("errors") != 0 or r.get("parity") is not True:
        bad.append((n, rc, r))
if bad or len(runs) < 5:
    sys.exit(f"FAIL: {len(bad)} of {len(runs)} traffic runs failed: {bad[:3]}")
print(f"ok: under traffic ({len(runs)} runs, {requests} requests, {tokens} tokens, parity-checked):"
      f" rolling update + SIGKILL of a replica, 0 failed requests")
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
for pid in "${pod_pid[@]}"; do kill -TERM "$pid"; done
for pid in "${pod_pid[@]}"; do
  rc=0
  wait "$pid" || rc=$?
  [ "$rc" -eq 0 ] || { echo "FAIL: a shard exited $rc after SIGTERM"; exit 1; }
done
echo "ok: shards stop cleanly on SIGTERM"
