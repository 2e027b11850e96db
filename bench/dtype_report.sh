#!/usr/bin/env bash
# The bf16 report (issue 12 "Done when"): the default model's local cluster (router + 2 shards)
# per (model.dtype, router.wire_dtype) variant — f32/f32, bf16/f32, bf16/bf16 — with
#   - per variant, once: the shards' resident expert bytes (moe_device_memory_bytes), the payload
#     bytes the router sent to and received from the shards (moe_shard_{sent,received}_bytes_total)
#     for the same moe-client --check traffic, and the check's verdict;
#   - ROUNDS rounds of moe-bench, the variants interleaved within each round (so the machine's
#     drift hits every variant alike): tokens/s per batch, batch-1 p50 vs the DRAM bound (this
#     machine's measured bandwidth), expert kernel vs dense GEMMs of the same total shape;
# and prints the Done-when table: medians over the rounds, bf16 / f32 ratios, each line's verdict.
#   bench/dtype_report.sh [MODEL_DIR] [OUT_DIR]       (defaults: models/default, /tmp/moe-dtype)
#   env: ROUNDS (3), REPEATS (5, per moe-bench measurement), BATCHES (1,8,64,256,1024,4096),
#        PORT_OFFSET (10000: every port of the default cluster moved by it)
# Needs a built tree (build/bin) and the default model (scripts/demo.sh generates it).
set -euo pipefail
cd "$(dirname "$0")/.."
model=$(realpath "${1:-models/default}")
out=${2:-/tmp/moe-dtype}
batches=${BATCHES:-1,8,64,256,1024,4096}
rounds=${ROUNDS:-3}
offset=${PORT_OFFSET:-10000}
mkdir -p "$out"
rm -f "$out"/bench-*.json "$out"/check-*.txt
variants=("f32 f32" "bf16 f32" "bf16 bf16")

config() {  # the default cluster with the model path absolute, the two dtype keys, moved ports
  local dtype=$1 wire=$2 cfg="$out/cluster-$1-wire-$2.yaml"
  sed -e "s|^  path: .*|  path: $model\n  dtype: $dtype|" \
      -e "s|^  listen: 127.0.0.1:7100|  listen: 127.0.0.1:7100\n  wire_dtype: $wire|" \
      deploy/local/default-cluster.yaml |
    perl -pe 's/127\.0\.0\.1:(\d+)/"127.0.0.1:".($1+'"$offset"')/ge' >"$cfg"
  echo "$cfg"
}

for v in "${variants[@]}"; do
  read -r dtype wire <<<"$v"
  cfg=$(config "$dtype" "$wire")
  echo "== check: model.dtype $dtype, router.wire_dtype $wire" >&2
  build/bin/moe-cluster --config "$cfg" -- bash -c "
    build/bin/moe-client --config '$cfg' --tokens 2048 --batch 256 --check --json --quiet
    for port in 9201 9202; do
      curl -s 127.0.0.1:\$((port + $offset))/metrics | grep '^moe_device_memory_bytes'
    done
    curl -s 127.0.0.1:$((9100 + offset))/metrics | grep -E '^moe_shard_(sent|received)_bytes_total'
  " 2>"$out/cluster-$dtype-$wire.log" >"$out/check-$dtype-$wire.txt"
done

for round in $(seq 1 "$rounds"); do
  for v in "${variants[@]}"; do
    read -r dtype wire <<<"$v"
    echo "== round $round: moe-bench, model.dtype $dtype, router.wire_dtype $wire" >&2
    build/bin/moe-bench --config "$out/cluster-$dtype-wire-$wire.yaml" --batches "$batches" \
      --concurrency none --client-overhead 0 --repeats "${REPEATS:-5}" --json \
      >"$out/bench-$dtype-$wire-r$round.json"
  done
done

python3 - "$out" <<'PY'
import glob, json, re, statistics, sys
out = sys.argv[1]
V = [("f32", "f32"), ("bf16", "f32"), ("bf16", "bf16")]
def med(xs): return statistics.median(xs)
bench, check = {}, {}
for d, w in V:
    runs = [json.load(open(f)) for f in sorted(glob.glob(f"{out}/bench-{d}-{w}-r*.json"))]
    bench[(d, w)] = runs
    lines = open(f"{out}/check-{d}-{w}.txt").read().splitlines()
    metric = lambda name: sum(float(l.split()[-1]) for l in lines if l.startswith(name))
    check[(d, w)] = {"client": json.loads(lines[0]),
                     "memory": metric("moe_device_memory_bytes") / 2,
                     "sent": metric("moe_shard_sent_bytes_total")}
def rows(v, key, batch):
    return [r[key] for run in bench[v] for r in run["rows"] if r["batch"] == batch]
def tps(v, b): return med(rows(v, "cluster_tokens_per_s", b))
def p50(v, b): return med(rows(v, "p50_ms", b))
def top(v, key): return med([run[key] for run in bench[v]])
# The DRAM bound with the best bandwidth measured in any run (a run that shared the machine
# measures less, which would loosen the bound).
best_gbps = max(run["dram_gbps"] for v in V for run in bench[v])
def bound(v): return med([run["dram_bound_batch1_ms"] * run["dram_gbps"] / best_gbps for run in bench[v]])
F, B, BW = V
first = bench[F][0]
print(f"\n### bf16 vs f32 — {first['machine']}; medians of {len(bench[F])} interleaved rounds "
      f"(moe-bench --repeats per round, batch 1 over fresh tokens)\n")
print("| | f32 | bf16, f32 wire | bf16, bf16 wire |\n|---|---:|---:|---:|")
def line(name, f, fmt="{:.2f}"):
    print(f"| {name} | " + " | ".join(fmt.format(f(v)) for v in V) + " |")
line("resident expert bytes per shard", lambda v: check[v]["memory"], "{:,.0f}")
line("bytes sent to shards, same traffic", lambda v: check[v]["sent"], "{:,.0f}")
line("--check max abs err", lambda v: check[v]["client"]["max_abs_err"], "{:.1e}")
line("--check tokens routed to other experts", lambda v: check[v]["client"]["routing_mismatches"], "{}")
batches = sorted({r["batch"] for r in first["rows"]})
for b in batches:
    line(f"tokens/s at batch {b}", lambda v: tps(v, b), "{:.0f}")
line("p50 at batch 1, ms", lambda v: p50(v, 1))
line("DRAM bound at batch 1, ms", bound)
line("expert kernel / dense GEMMs, same total shape", lambda v: top(v, "ffn_over_gemm"))
line("expert kernel GFLOP/s", lambda v: top(v, "expert_ffn_gflops"), "{:.0f}")
print(f"\nkernel: {first['kernel_rows_per_expert']} rows per expert; dense side of the bf16 rows: "
      f"{bench[B][0]['dense_gemm']}; DRAM: {best_gbps:.1f} GB/s "
      f"({'the best all-core measurement of the runs' if first['dram_gbps_measured'] else '--dram-gbps'})\n")
def verdict(ok): return "✓" if ok else "✗"
mem = check[B]["memory"] / check[F]["memory"]
wire = check[BW]["sent"] / check[B]["sent"]
t256 = [tps(v, 256) / tps(F, 256) for v in (B, BW)] if 256 in batches else []
p1 = [p50(v, 1) / p50(F, 1) for v in (B, BW)] if 1 in batches else []
dram = [p50(v, 1) / bound(v) for v in (B, BW)] if 1 in batches else []
kern = [top(v, "ffn_over_gemm") for v in (B, BW)]
ok = all(check[v]["client"]["parity"] and check[v]["client"]["routing_mismatches"] == 0 for v in (B, BW))
fmt = lambda xs: " / ".join(f"{x:.2f}" for x in xs)
print("Done when (bf16 / f32; bf16 wire f32 / bf16):\n")
print(f"- resident expert memory {mem:.2f}× f32 (≤ 0.55) {verdict(mem <= 0.55)}")
if t256: print(f"- tokens/s at batch 256 {fmt(t256)}× f32 (≥ 1.5) {verdict(min(t256) >= 1.5)}")
if p1: print(f"- p50 at batch 1 {fmt(p1)}× f32 (≤ 0.7) {verdict(max(p1) <= 0.7)}; "
             f"{fmt(dram)}× the bf16 DRAM bound (≤ 2) {verdict(max(dram) <= 2)}")
print(f"- wire_dtype bf16 sends {wire:.2f}× the bytes of f32 (≤ 0.55) {verdict(wire <= 0.55)}")
print(f"- moe-client --check on the bf16 clusters: {'pass, identical experts' if ok else 'FAIL'} {verdict(ok)}")
print(f"- expert kernel {fmt(kern)} of dense oneDNN bf16 (≥ 0.70) {verdict(min(kern) >= 0.7)}")
PY
