#!/usr/bin/env bash
# gpu-check.sh — the one prepared check for a machine with an NVIDIA GPU (H100/H200, CUDA 13
# driver): unpacks a bundle made by ../shared/tools/gpu-bundle.sh, runs the CUDA backend's tests
# and the expert-FFN benchmark on GPU 0, and writes every log under $OUT. Exits non-zero when a
# test fails, when the CUDA cases were skipped (no usable device), or when the benchmark fails.
#
# On the build machine (CUDA toolkit present; sm_90 is the default architecture):
#   cmake -S . -B build -G Ninja && cmake --build build --target backend_ops_test moe-expert-ffn-bench
#   ../shared/tools/gpu-bundle.sh .gpu build/bin/backend_ops_test build/bin/moe-expert-ffn-bench
# On the GPU machine, from the repository root (.gpu/ is git-ignored: carry it there):
#   OUT=/tmp/gpu-check scripts/gpu-check.sh [.gpu/bundle.tar.xz]
#
# backend_ops_test is the only test that builds a CUDA backend (every op × backend × dtype against
# the reference; the integration suites pin `device: cpu`). Steps are time-boxed so the whole
# check fits a short device lease (about 5 minutes on an H200).
set -uo pipefail

bundle=${1:-.gpu/bundle.tar.xz}
out=${OUT:-gpu-check-out}
[ -f "$bundle" ] || { echo "gpu-check: no bundle at $bundle (see the header of $0)" >&2; exit 2; }
mkdir -p "$out"
unpacked=$(mktemp -d)
trap 'rm -rf "$unpacked"' EXIT
tar -xJf "$bundle" -C "$unpacked"
# shellcheck disable=SC1091
source "$unpacked/env.sh"

failed=0
step() {  # step NAME SECONDS COMMAND...: runs COMMAND with a time limit, logging to $out/NAME.log
  local name=$1 limit=$2
  shift 2
  echo "== $name: $*"
  if timeout "$limit" "$@" >"$out/$name.log" 2>&1; then
    echo "   ok ($out/$name.log)"
  else
    echo "   FAILED, exit $? ($out/$name.log):"
    tail -n 30 "$out/$name.log" | sed 's/^/   | /'
    failed=1
  fi
}

{
  date -u
  if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv 2>&1
  else
    echo "nvidia-smi unavailable"
  fi
} >"$out/gpu.txt"
cat "$out/gpu.txt"

step backend_ops_test 240 backend_ops_test --gtest_output="xml:$out/backend_ops_test.xml"
# A CUDA case skips when no device is usable; only f16 (not held by the CUDA backend) may.
if grep -E '^\[  SKIPPED \].*cuda' "$out/backend_ops_test.log" | grep -v 'cuda_f16' >"$out/cuda_skipped.txt"; then
  echo "   CUDA cases were skipped (no usable device?):"
  sed 's/^/   | /' "$out/cuda_skipped.txt" | head -n 10
  failed=1
fi

step expert_ffn_bench 300 moe-expert-ffn-bench --device cuda:0 --dtypes f32,bf16 \
  --batches 1,64,256,1024,4096 --variants swiglu,clamped_bias,weight_on_input \
  --rows-per-expert 256,1024,4096 --repeats 9
cat "$out/expert_ffn_bench.log"

if [ "$failed" -ne 0 ]; then
  echo "gpu-check: FAILED (logs under $out)"
  exit 1
fi
echo "gpu-check: ok (logs under $out)"
