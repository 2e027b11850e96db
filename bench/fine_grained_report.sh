#!/usr/bin/env bash
# The fine-grained shape beside the default model (DESIGN §8): a DeepSeek-V3-like MoE layer of 256
# small experts (hidden 256, intermediate 128, top-8) served by SHARDS shards of 256/SHARDS experts
# each on loopback, measured by moe-bench once per model.dtype (f32, then bf16 with a bf16 wire).
#   bench/fine_grained_report.sh [OUT_DIR]          (default /tmp/moe-fine-grained)
#   env: SHARDS (16; a divisor of 256), REPEATS (5), BATCHES (1,64,256,1024),
#        PORT_BASE (27100: the router's port; shards from PORT_BASE+101, admin ports +2000)
# Needs a built tree (build/bin). Per-call and per-expert overheads dominate this shape.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-/tmp/moe-fine-grained}
shards=${SHARDS:-16}
base=${PORT_BASE:-27100}
if (( 256 % shards != 0 )); then
  echo "fine_grained_report: SHARDS=$shards does not divide 256 experts" >&2
  exit 2
fi
mkdir -p "$out"
if [ ! -f "$out/model/config.json" ]; then
  build/bin/moe-make-checkpoint --out "$out/model" --model-type mixtral --hidden 256 \
    --intermediate 128 --experts 256 --top-k 8 --layers 1 --dtype bf16 --seed 3 >/dev/null
fi
per=$((256 / shards))
for dtype in f32 bf16; do
  cfg="$out/cluster-$dtype.yaml"
  {
    printf 'model:\n  path: %s\n  dtype: %s\n' "$(realpath "$out/model")" "$dtype"
    printf 'router:\n  listen: 127.0.0.1:%d\n  admin: 127.0.0.1:%d\n  device: cpu\n' \
      "$base" $((base + 2000))
    printf '  max_tokens: 8192\n  threads: 1\n  wire_dtype: %s\n' "$dtype"
    printf 'shards:\n'
    for ((i = 0; i < shards; i++)); do
      printf '  - name: shard-%d\n    listen: 127.0.0.1:%d\n    admin: 127.0.0.1:%d\n' \
        "$i" $((base + 101 + i)) $((base + 2101 + i))
      printf '    device: cpu\n    experts: "%d-%d"\n    threads: 1\n' $((i * per)) $((i * per + per - 1))
    done
    printf 'timeouts:\n  request_ms: 60000\n  shard_call_ms: 30000\n  connect_ms: 2000\n'
  } >"$cfg"
  echo "== model.dtype $dtype, router.wire_dtype $dtype, $shards shards"
  build/bin/moe-bench --config "$cfg" --batches "${BATCHES:-1,64,256,1024}" --concurrency none \
    --client-overhead 0 --repeats "${REPEATS:-5}" | tee "$out/bench-$dtype.md"
done
