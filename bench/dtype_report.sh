#!/usr/bin/env bash
# The bf16 report (issue 12 "Done when"): runs the default model's local cluster (router + 2
# shards) once per (model.dtype, router.wire_dtype) variant and prints, per variant, the resident
# expert bytes of each shard (moe_device_memory_bytes), the payload bytes the router sent to and
# received from the shards (moe_shard_{sent,received}_bytes_total) for the same traffic, the
# moe-client --check verdict, and moe-bench's tokens/s per batch, batch-1 p50 vs the DRAM bound
# and expert-kernel vs dense-GEMM rate.
#   bench/dtype_report.sh [MODEL_DIR] [OUT_DIR]       (defaults: models/default, /tmp/moe-dtype)
# Needs a built tree (build/bin) and the default model (scripts/demo.sh generates it).
set -euo pipefail
cd "$(dirname "$0")/.."
model=$(realpath "${1:-models/default}")
out=${2:-/tmp/moe-dtype}
batches=${BATCHES:-1,8,64,256,1024,4096}
mkdir -p "$out"
variants=("f32 f32" "bf16 f32" "bf16 bf16")
for v in "${variants[@]}"; do
  read -r dtype wire <<<"$v"
  cfg="$out/cluster-$dtype-wire-$wire.yaml"
  # The default cluster with the model path made absolute, the two dtype keys set, and every port
  # moved by PORT_OFFSET (default 10000) so a demo cluster on the default ports is left alone.
  sed -e "s|^  path: .*|  path: $model\n  dtype: $dtype|" \
      -e "s|^  listen: 127.0.0.1:7100|  listen: 127.0.0.1:7100\n  wire_dtype: $wire|" \
      deploy/local/default-cluster.yaml |
    perl -pe 's/127\.0\.0\.1:(\d+)/"127.0.0.1:".($1+'"${PORT_OFFSET:-10000}"')/ge' >"$cfg"
  echo "== model.dtype $dtype, router.wire_dtype $wire"
  build/bin/moe-cluster --config "$cfg" -- bash -c "
    build/bin/moe-client --config '$cfg' --tokens 2048 --batch 256 --check --json --quiet
    for port in 9201 9202; do
      curl -s 127.0.0.1:\$((port + ${PORT_OFFSET:-10000}))/metrics | grep '^moe_device_memory_bytes'
    done
    curl -s 127.0.0.1:$((9100 + ${PORT_OFFSET:-10000}))/metrics |
      grep -E '^moe_shard_(sent|received)_bytes_total'
  " 2>"$out/cluster-$dtype-$wire.log" | tee "$out/check-$dtype-$wire.txt"
  build/bin/moe-bench --config "$cfg" --batches "$batches" --concurrency none \
    --client-overhead 0 --repeats "${REPEATS:-3}" | tee "$out/bench-$dtype-$wire.md"
done
