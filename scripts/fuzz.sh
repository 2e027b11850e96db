#!/usr/bin/env bash
# Builds the libFuzzer targets (tests/fuzz, clang, -fsanitize=fuzzer,address,undefined) into
# build-fuzz/ and runs each for SECONDS (default 20) from its seed corpus tests/fuzz/corpus/<target>.
# Fails when a target crashes, leaks or trips a sanitizer; the input that did is saved as
# build-fuzz/artifacts/<target>-crash-… (replay: build-fuzz/<target> that-file).
#   scripts/fuzz.sh                     every target, 20 s each (what `ctest -L fuzz` runs)
#   scripts/fuzz.sh 3600 fuzz_safetensors   one target for an hour (new inputs kept in
#                                       build-fuzz/corpus/<target>, reused by later runs)
#   scripts/fuzz.sh --build-only
set -euo pipefail
cd "$(dirname "$0")/.."
targets_all=(fuzz_cluster_config fuzz_checkpoint_json fuzz_safetensors fuzz_tensor_wire
  fuzz_shard_request)
build_only=0
if [ "${1:-}" = "--build-only" ]; then build_only=1; shift; fi
seconds="${1:-20}"
[ $# -gt 0 ] && shift
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=("${targets_all[@]}")

if [ ! -f build-fuzz/build.ninja ]; then
  CC=clang CXX=clang++ cmake -S tests/fuzz -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    >/dev/null
fi
cmake --build build-fuzz -j"$(nproc)" --target "${targets[@]}"
[ "$build_only" -eq 0 ] || exit 0

mkdir -p build-fuzz/artifacts
for t in "${targets[@]}"; do
  mkdir -p "build-fuzz/corpus/$t"
  echo "fuzz: $t for ${seconds} s"
  # New inputs go to build-fuzz/corpus/<t>; the seeds in git are only read.
  if ! "build-fuzz/$t" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
    -print_final_stats=1 -artifact_prefix="build-fuzz/artifacts/$t-" \
    "build-fuzz/corpus/$t" "tests/fuzz/corpus/$t" >"build-fuzz/$t.log" 2>&1; then
    tail -n 60 "build-fuzz/$t.log"
    echo "fuzz: $t FAILED; the input is in build-fuzz/artifacts/, the log in build-fuzz/$t.log" >&2
    exit 1
  fi
  grep -E "^(stat::number_of_executed_units|stat::peak_rss_mb|#[0-9]+ +DONE)" "build-fuzz/$t.log" || true
done
