// The checks an ExpertShard.run request passes before a shard queues any work for it: the layer is
// served, rows is [R, H] f32 with 1 ≤ R ≤ limits.max_rows_per_shard_call and finite values, at most
// limits.max_segments_per_shard_call segments, each naming an expert this shard holds at most once,
// with distinct in-range rows and finite weights. So one call's work is bounded by
// R × (experts held + a shared expert), never by a list length the caller picks. A pure function of
// the request and what the shard holds: the shard server and the fuzzer (tests/fuzz) both call it.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "common/proto/moe.capnp.h"
#include "common/result.h"
#include "common/tensor_wire.h"
#include "expert_service/run_coalescer.h"

namespace moe::expert {

struct RunLimits {
  uint32_t maxRows = 8192;      // limits.max_rows_per_shard_call
  uint32_t maxSegments = 1024;  // limits.max_segments_per_shard_call
};

// What the shard holds. `find(layer, shared, expert)`: the weights of that expert (the layer's
// shared expert when `shared`), or nullptr.
struct HeldExperts {
  std::string shardName;
  uint32_t hiddenSize = 0;
  std::function<bool(uint32_t layer)> servesLayer;
  std::function<const kernels::ExpertFfnWeights*(uint32_t layer, bool shared, uint32_t expert)>
      find;
};

struct ValidRun {
  uint32_t layer = 0;
  uint32_t rows = 0;
  // [rows, H]: f32 or bf16 as they came (f16 widened); may view the request's bytes
  std::unique_ptr<ActivationRows> x;
  DType wire = DType::kF32;  // the rows' dtype on the wire: the reply is sent in it
  SegmentTable segments;
};

// InvalidArgument naming the field for a malformed request; ResourceExhausted naming the limit and
// its value for one over a limit. Limits are checked before anything is read in full.
Result<ValidRun> validateRun(proto::ExpertShard::RunParams::Reader params, const HeldExperts& held,
                             const RunLimits& limits);

}  // namespace moe::expert
