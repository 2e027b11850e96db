// InProcessModel implementation: DESIGN.md §6 step by step (gate, noise, selection, capacity,
// experts, shared expert), each step in its own reference_*.cc after the published code.
#include "client/reference/in_process_layer.h"

#include "client/reference/reference_missing.h"

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "client/reference/reference_capacity.h"
#include "client/reference/reference_experts.h"
#include "client/reference/reference_routing.h"

namespace moe::client {

Result<std::unique_ptr<InProcessModel>> InProcessModel::load(
    const std::string& checkpointDir, std::unique_ptr<kernels::Backend> backend,
    const std::vector<uint32_t>& layers, const RoutingOptions& routing) {
  auto opened = Checkpoint::open(checkpointDir);
  if (!opened) return makeError(opened.status());
  const Checkpoint& ckpt = *opened.value();
  std::unique_ptr<InProcessModel> m(new InProcessModel());
  m->config_ = ckpt.config();
  m->routing_ = routing;
  m->backend_ = std::move(backend);
  const auto& c = m->config_;
  kernels::Backend& b = *m->backend_;
  for (uint32_t layer : layers) {
    Layer l;
    auto gate = loadReferenceGate(ckpt, b, layer, routing.noisyTopk);
    if (!gate) return makeError(gate.status());
    l.gate = std::move(gate).value();
    for (uint32_t e = 0; e < c.numFfnExperts; ++e) {
      auto t = ckpt.expert(layer, e);
      if (!t) return makeError(t.status());
      auto resident = kernels::uploadRoutedExpert(b, c, t.value());
      if (!resident) {
        return makeError("layer " + std::to_string(layer) + " expert " + std::to_string(e) + ": " +
                         resident.error());
      }
      l.experts.push_back(resident.value().view());
      l.resident.push_back(std::move(resident).value());
    }
    for (uint32_t e = c.numFfnExperts; e < c.numExperts; ++e) {
      if (c.expertKind(e) != ExpertKind::kConstant) continue;
      auto t = ckpt.constantExpert(layer, e);
      if (!t) return makeError(t.status());
      l.constants.push_back(std::move(t).value());
    }
    if (c.routing.choiceBias) {
      auto bias = ckpt.scoreCorrectionBias(layer);
      if (!bias) return makeError(bias.status());
      l.bias = std::move(bias).value();
    }
    if (c.sharedIntermediateSize > 0) {
      auto t = ckpt.sharedExpert(layer);
      if (!t) return makeError(t.status());
      auto shared = kernels::uploadSharedExpert(b, c, t.value());
      if (!shared) return makeError(shared.status());
      l.shared = std::move(shared).value();
      if (c.sharedExpertGated) {
        auto g = uploadTensor(b, ckpt.sharedExpertGate(layer), 1, c.hiddenSize);
        if (!g) return makeError(g.status());
        l.sharedGate = std::move(g).value();
      }
    }
    m->layers_.emplace(layer, std::move(l));
  }
  return m;
}

void InProcessModel::select(const Layer& l, std::span<const float> logits, size_t T,
                            ReferenceRouting& r) const {
  referenceRoute(config_, logits, T, l.bias, r.ids, r.weights);
}

Status InProcessModel::forward(uint32_t layer, std::span<const float> x, size_t T,
                               std::span<float> y, const ReferenceRequest& request,
                               ReferenceRouting* routing) {
  auto it = layers_.find(layer);
  if (it == layers_.end()) return Status::error("layer " + std::to_string(layer) + " not loaded");
  const Layer& l = it->second;
  const ModelConfig& c = config_;
  const size_t H = c.hiddenSize, E = c.numExperts;
  if (x.size() != T * H || y.size() != T * H) {
    return Status::error("forward: x and y must have T * H = " + std::to_string(T * H) +
                         " elements");
  }
  ReferenceRouting r;
  r.k = c.topK;
  // 1. Gate logits (incl. the MoE++ gating residual): what the caller sees as the logits.
  r.logits.assign(T * E, 0.0f);
  if (auto s = referenceGateLogits(*backend_, l.gate, x, T, request.prevLogits, r.logits); !s) {
    return s;
  }
  // 2. Noisy top-k perturbs a copy; the reported logits stay noise-free.
  std::vector<float> scores = r.logits;
  if (routing_.noisyTopk) {
    const uint64_t seed = request.noiseSeed.value_or(routing_.noiseSeed);
    if (auto s = addReferenceNoise(*backend_, l.gate, x, T, seed, layer, scores); !s) return s;
  }
  // 3. The family's selection and weights; 4. capacity.
  select(l, scores, T, r);
  applyReferenceCapacity(routing_, c.numExperts, c.numFfnExperts, T, r.k, r.ids, r.weights,
                         r.dropped);
  // 4b. Experts with no replica left (routing.missing_expert).
  if (!request.available.empty()) {
    auto missing = applyReferenceMissingExperts(c, routing_.missingExpert, layer, scores, l.bias,
                                                request.available, r);
    if (!missing) return missing.status();
  }
  // 5. Experts on x̃ = scale · x (MoE++ multiplies by k), 6. the shared expert on x.
  const float scale = c.expertInputScale();
  std::vector<float> scaled(x.begin(), x.end());
  for (float& v : scaled) v *= scale;
  std::fill(y.begin(), y.end(), 0.0f);
  if (auto s = addFfnExperts(*backend_, l.experts, scaled, T, H, r, y, c.weightOnInput); !s)
    return s;
  addZeroComputeExperts(c, l.constants, scaled, T, r, y);
  if (auto s = addSharedExpert(l, x, T, y); !s) return s;
  // 7. Cohere2-MoE shared_expert_combination_strategy "average": (routed + shared) / 2.
  if (l.shared && c.sharedCombine == SharedCombine::kAverage) {
    for (float& v : y) v = v / 2.0f;
  }
  if (routing != nullptr) *routing = std::move(r);
  return Status::ok();
}

Status InProcessModel::addSharedExpert(const Layer& l, std::span<const float> x, size_t T,
                                       std::span<float> y) {
  if (!l.shared) return Status::ok();
  // The shared expert, written out op by op (not through expertFfn, which the cluster uses).
  const size_t H = config_.hiddenSize, I = config_.sharedIntermediateSize;
  std::vector<float> h1(T * I), h3(T * I), h(T * I), o(T * H), g(T, 0.0f);
  if (l.shared->activation.gated()) {
    for (auto s : {backend_->linear(*l.shared->w1, x, T, h1),
                   backend_->linear(*l.shared->w3, x, T, h3), backend_->swiglu(h1, h3, h)}) {
      if (!s) return s;
    }
  } else {
    // NemotronHMLP: down_proj(relu2(up_proj(x))), relu2 = square(relu(.)).
    if (auto s = backend_->linear(*l.shared->w3, x, T, h3); !s) return s;
    for (size_t i = 0; i < h.size(); ++i) h[i] = std::max(h3[i], 0.0f) * std::max(h3[i], 0.0f);
  }
  if (auto s = backend_->linear(*l.shared->w2, h, T, o); !s) return s;
  if (l.sharedGate) {
    if (auto s = backend_->linear(*l.sharedGate, x, T, g); !s) return s;
  }
  for (size_t t = 0; t < T; ++t) {
    const float w = l.sharedGate ? 1.0f / (1.0f + std::exp(-g[t])) : 1.0f;
    for (size_t i = 0; i < H; ++i) y[t * H + i] += w * o[t * H + i];
  }
  return Status::ok();
}

}  // namespace moe::client
