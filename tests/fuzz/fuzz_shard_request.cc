// libFuzzer target: the shard request validator (expert_service/run_request.h). The input is a
// Cap'n Proto message whose root is ExpertShard.run's parameters, validated against a shard of
// hidden size 4 holding experts 0-2 and the shared expert of layer 0. A valid run must be
// self-consistent and within the limits; every other input an error.
#include <capnp/serialize.h>
#include <kj/exception.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "common/proto/moe.capnp.h"
#include "expert_service/run_request.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const moe::kernels::ExpertFfnWeights weights{};
  moe::expert::HeldExperts held;
  held.shardName = "fuzz";
  held.hiddenSize = 4;
  held.servesLayer = [](uint32_t layer) { return layer == 0; };
  held.find = [](uint32_t layer, bool shared, uint32_t expert) {
    return layer == 0 && (shared || expert < 3) ? &weights : nullptr;
  };
  const moe::expert::RunLimits limits{64, 8};
  if (size < sizeof(capnp::word)) return 0;
  std::vector<capnp::word> words(size / sizeof(capnp::word));
  std::memcpy(words.data(), data, words.size() * sizeof(capnp::word));
  capnp::ReaderOptions options;
  options.traversalLimitInWords = 1 << 20;
  options.nestingLimit = 16;
  try {
    capnp::FlatArrayMessageReader reader(kj::arrayPtr(words.data(), words.size()), options);
    auto run = moe::expert::validateRun(reader.getRoot<moe::proto::ExpertShard::RunParams>(), held,
                                        limits);
    if (!run.isOk()) return 0;
    const auto& r = run.value();
    const auto& t = r.segments;
    if (r.rows == 0 || r.rows > limits.maxRows) __builtin_trap();
    if (r.x->view().size() != size_t{r.rows} * held.hiddenSize) __builtin_trap();
    if (t.keys.size() > limits.maxSegments || t.offsets.size() != t.keys.size() + 1)
      __builtin_trap();
    if (t.rows.size() != t.weights.size() || t.offsets.back() != t.rows.size()) __builtin_trap();
    // Work bound: rows × (experts held + the shared expert).
    if (t.rows.size() > size_t{r.rows} * 4) __builtin_trap();
    for (uint32_t row : t.rows) {
      if (row >= r.rows) __builtin_trap();
    }
  } catch (const kj::Exception&) {
  }
  return 0;
}
