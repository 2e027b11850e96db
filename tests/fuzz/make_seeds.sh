#!/usr/bin/env bash
# Writes the Cap'n Proto seed messages of the wire fuzzers (corpus/fuzz_tensor_wire,
# corpus/fuzz_shard_request) with `capnp encode`. Run from anywhere; the outputs are committed.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
enc() { capnp encode -I"$repo" "$@"; }
t="$here/corpus/fuzz_tensor_wire"
r="$here/corpus/fuzz_shard_request"
mkdir -p "$t" "$r"
echo '(dtype = f32, shape = [2, 2], data = 0x"0000803f 00000040 00004040 00008040")' |
  enc "$repo/common/proto/moe.capnp" Tensor >"$t/f32_2x2"
echo '(dtype = bf16, shape = [1, 3], data = 0x"803f 0040 4040")' |
  enc "$repo/common/proto/moe.capnp" Tensor >"$t/bf16_1x3"
echo '(dtype = f16, shape = [2], data = 0x"003c 0040")' |
  enc "$repo/common/proto/moe.capnp" Tensor >"$t/f16_1d"
rows='(dtype = f32, shape = [2, 4], data = 0x"0000803f 00000040 00004040 00008040 0000803f 00000040 00004040 00008040")'
echo "(layer = 0, rows = $rows, segments = [(expert = 1, rowIndex = [0, 1], weight = [0.5, 0.25]), (shared = true, rowIndex = [1], weight = [1])])" |
  enc "$here/seeds.capnp" RunParams >"$r/two_segments"
echo "(layer = 0, rows = $rows, segments = [(expert = 0, rowIndex = [1], weight = [1]), (expert = 2, rowIndex = [0, 1], weight = [0.5, 0.5])])" |
  enc "$here/seeds.capnp" RunParams >"$r/two_experts"
