// SharedExpert implementation.
#include "router_service/shared_expert.h"

#include <cmath>
#include <numeric>
#include <vector>

namespace moe::router {

Result<std::unique_ptr<SharedExpert>> SharedExpert::load(kernels::Backend& backend,
                                                         const Checkpoint& ckpt, uint32_t layer,
                                                         bool withFfn, DType dtype) {
  const ModelConfig& m = ckpt.config();
  std::unique_ptr<SharedExpert> s(new SharedExpert());
  s->hidden_ = m.hiddenSize;
  if (withFfn) {
    auto t = ckpt.sharedExpert(layer);
    if (!t) return makeError(t.status());
    auto ffn = kernels::uploadSharedExpert(backend, m, t.value(), dtype);
    if (!ffn) return makeError("layer " + std::to_string(layer) + " shared expert: " + ffn.error());
    s->ffn_ = std::move(ffn).value();
    s->hasFfn_ = true;
  }
  if (m.sharedExpertGated) {
    auto g = ckpt.sharedExpertGate(layer);
    if (!g) return makeError(g.status());
    auto gate = backend.upload(g.value(), 1, m.hiddenSize);
    if (!gate)
      return makeError("layer " + std::to_string(layer) + " shared expert gate: " + gate.error());
    s->gate_ = std::move(gate).value();
  }
  return s;
}

Result<std::vector<float>> SharedExpert::weights(kernels::Backend& backend,
                                                 std::span<const float> x, uint32_t T) const {
  std::vector<float> weights(T, 1.0f);  // [T]
  if (gate_) {
    std::vector<float> logits(T);  // [T, 1]
    if (auto s = backend.linear(*gate_, x, T, logits); !s)
      return makeError("shared gate: " + s.message());
    for (uint32_t t = 0; t < T; ++t) weights[t] = 1.0f / (1.0f + std::exp(-logits[t]));
  }
  return weights;
}

Status SharedExpert::compute(kernels::Backend& backend, std::span<const float> x, uint32_t T,
                             std::span<float> out) const {
  auto gated = this->weights(backend, x, T);
  if (!gated) return gated.status();
  const std::vector<float>& weights = gated.value();
  std::vector<uint32_t> rows(T);
  std::iota(rows.begin(), rows.end(), 0u);
  const kernels::ExpertFfnWeights ffn = ffn_.view();
  const uint32_t offsets[2] = {0, T};
  kernels::ExpertSegments segments{std::span(&ffn, 1), offsets, rows, weights};
  if (auto s = backend.expertFfn(segments, x, T, hidden_, out); !s) {
    return Status::error("shared expert: " + s.message());
  }
  return Status::ok();
}

}  // namespace moe::router
