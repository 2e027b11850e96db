// In-process MoE layer; see moe_layer.h.  Keep it boring: it is the yardstick for the cluster.
#include "kernels/moe_layer.h"

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "kernels/op_checks.h"

namespace moe::kernels {

Status moeLayerInProcess(Backend& b, const Matrix& gate, std::span<const ExpertFfnWeights> experts,
                         std::span<const float> x, size_t T, size_t H, size_t k, bool renormalize,
                         std::span<float> y) {
  const size_t E = experts.size();
  if (gate.rows() != E || gate.cols() != H) {
    return Status::error("moeLayerInProcess: gate is [" + std::to_string(gate.rows()) + ", " +
                         std::to_string(gate.cols()) + "], expected [E = " + std::to_string(E) +
                         ", H = " + std::to_string(H) + "]");
  }
  if (x.size() != T * H || y.size() != T * H) {
    return Status::error("moeLayerInProcess: x and y must have T * H = " + std::to_string(T * H) +
                         " elements");
  }
  if (k < 1 || k > E) return Status::error("moeLayerInProcess: k must be in [1, E]");
  for (size_t e = 0; e < E; ++e) {
    const ExpertFfnWeights& w = experts[e];
    if ((w.activation.gated() && w.w1 == nullptr) || w.w3 == nullptr || w.w2 == nullptr) {
      return Status::error("moeLayerInProcess: expert " + std::to_string(e) + " has a null matrix");
    }
    const size_t I = w.w3->rows();
    if ((w.w1 != nullptr && (w.w1->rows() != I || w.w1->cols() != H)) || w.w3->cols() != H ||
        w.w2->rows() != H || w.w2->cols() != I) {
      return Status::error("moeLayerInProcess: expert " + std::to_string(e) +
                           " weights are not w1/w3 [I, H], w2 [H, I]");
    }
  }

  // Routing.
  std::vector<float> logits(T * E);  // [T, E]
  MOE_KERNELS_RETURN_IF_ERROR(b.linear(gate, x, T, logits));
  std::vector<uint32_t> ids(T * k);   // [T, k]
  std::vector<float> weights(T * k);  // [T, k]
  MOE_KERNELS_RETURN_IF_ERROR(b.softmaxTopk(logits, T, E, k, renormalize, ids, weights));

  return moeExpertsInProcess(b, experts, x, T, H, k, ids, weights, y);
}

namespace {

// h[n, cols] += bias[cols] on every row, the bias (a [cols, 1] column) broadcast exactly by
// linear(bias, ones[n, 1]). A null bias adds nothing.
Status addBias(Backend& b, const Matrix* bias, size_t n, std::span<float> h) {
  if (bias == nullptr || n == 0) return Status::ok();
  const std::vector<float> ones(n, 1.0f);
  std::vector<float> broadcast(h.size());
  MOE_KERNELS_RETURN_IF_ERROR(b.linear(*bias, ones, n, broadcast));
  for (size_t i = 0; i < h.size(); ++i) h[i] += broadcast[i];
  return Status::ok();
}

// act(h1, h3) elementwise (backend.h FfnActivation), written out: silu through the backend's
// swiglu op, gpt-oss's clamped form and NemotronH's relu²(h3) (h1 unused) here.
Status activate(Backend& b, const FfnActivation& a, std::span<const float> h1,
                std::span<const float> h3, std::span<float> act) {
  if (a.kind == FfnActivation::Kind::kSwiglu) return b.swiglu(h1, h3, act);
  if (a.kind == FfnActivation::Kind::kRelu2) {
    for (size_t i = 0; i < act.size(); ++i) {
      const float r = std::max(h3[i], 0.0f);  // relu(up)
      act[i] = r * r;                         // torch.square
    }
    return Status::ok();
  }
  for (size_t i = 0; i < act.size(); ++i) {
    const float g = std::min(h1[i], a.limit);                        // gate.clamp(max=limit)
    const float u = std::clamp(h3[i], -a.limit, a.limit);            // up.clamp(-limit, limit)
    const float glu = g * (1.0f / (1.0f + std::exp(-g * a.alpha)));  // gate * sigmoid(gate * alpha)
    act[i] = (u + 1.0f) * glu;
  }
  return Status::ok();
}

}  // namespace

Status moeExpertsInProcess(Backend& b, std::span<const ExpertFfnWeights> experts,
                           std::span<const float> x, size_t T, size_t H, size_t k,
                           std::span<const uint32_t> ids, std::span<const float> weights,
                           std::span<float> y, bool weightOnInput) {
  const size_t E = experts.size();
  if (ids.size() != T * k || weights.size() != T * k || x.size() != T * H || y.size() != T * H) {
    return Status::error("moeExpertsInProcess: ids/weights must be [T, k], x/y [T, H]");
  }
  for (uint32_t id : ids) {
    if (id >= E)
      return Status::error("moeExpertsInProcess: expert id " + std::to_string(id) + " >= E");
  }
  // Experts, one at a time, over the tokens that picked them.
  std::fill(y.begin(), y.end(), 0.0f);
  std::vector<size_t> tokens;  // tokens routed to the current expert
  std::vector<float> scale;    // their routing weights
  std::vector<float> xs, h1, h3, act, out;
  for (size_t e = 0; e < E; ++e) {
    tokens.clear();
    scale.clear();
    for (size_t t = 0; t < T; ++t) {
      for (size_t j = 0; j < k; ++j) {
        if (ids[t * k + j] == e) {
          tokens.push_back(t);
          scale.push_back(weights[t * k + j]);
        }
      }
    }
    const size_t n = tokens.size();
    if (n == 0) continue;
    const ExpertFfnWeights& w = experts[e];
    if ((w.activation.gated() && w.w1 == nullptr) || w.w3 == nullptr || w.w2 == nullptr) {
      return Status::error("moeExpertsInProcess: expert " + std::to_string(e) +
                           " has a null matrix");
    }
    const size_t I = w.w3->rows();
    xs.assign(n * H, 0.0f);  // [n, H]
    for (size_t i = 0; i < n; ++i) {
      std::copy_n(x.begin() + static_cast<std::ptrdiff_t>(tokens[i] * H), H,
                  xs.begin() + static_cast<std::ptrdiff_t>(i * H));
      // Llama 4: routed_in = hidden_states * router_scores, before the expert.
      if (weightOnInput) {
        for (size_t h = 0; h < H; ++h) xs[i * H + h] *= scale[i];
      }
    }
    h1.assign(n * I, 0.0f);   // [n, I]
    h3.assign(n * I, 0.0f);   // [n, I]
    act.assign(n * I, 0.0f);  // [n, I]
    out.assign(n * H, 0.0f);  // [n, H]
    if (w.w1 != nullptr) MOE_KERNELS_RETURN_IF_ERROR(b.linear(*w.w1, xs, n, h1));
    MOE_KERNELS_RETURN_IF_ERROR(b.linear(*w.w3, xs, n, h3));
    MOE_KERNELS_RETURN_IF_ERROR(addBias(b, w.b1, n, h1));
    MOE_KERNELS_RETURN_IF_ERROR(addBias(b, w.b3, n, h3));
    MOE_KERNELS_RETURN_IF_ERROR(activate(b, w.activation, h1, h3, act));
    MOE_KERNELS_RETURN_IF_ERROR(b.linear(*w.w2, act, n, out));
    MOE_KERNELS_RETURN_IF_ERROR(addBias(b, w.b2, n, out));
    for (size_t i = 0; i < n; ++i) {
      const float s = weightOnInput ? 1.0f : scale[i];
      for (size_t h = 0; h < H; ++h) y[tokens[i] * H + h] += s * out[i * H + h];
    }
  }
  return Status::ok();
}

}  // namespace moe::kernels
