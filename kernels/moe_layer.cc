// In-process MoE layer; see moe_layer.h.  Keep it boring: it is the yardstick for the cluster.
#include "kernels/moe_layer.h"

#include <algorithm>
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
    if (w.w1 == nullptr || w.w3 == nullptr || w.w2 == nullptr) {
      return Status::error("moeLayerInProcess: expert " + std::to_string(e) + " has a null matrix");
    }
    const size_t I = w.w1->rows();
    if (w.w1->cols() != H || w.w3->rows() != I || w.w3->cols() != H || w.w2->rows() != H ||
        w.w2->cols() != I) {
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

Status moeExpertsInProcess(Backend& b, std::span<const ExpertFfnWeights> experts,
                           std::span<const float> x, size_t T, size_t H, size_t k,
                           std::span<const uint32_t> ids, std::span<const float> weights,
                           std::span<float> y) {
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
    const size_t I = w.w1->rows();
    xs.assign(n * H, 0.0f);  // [n, H]
    for (size_t i = 0; i < n; ++i) {
      std::copy_n(x.begin() + static_cast<std::ptrdiff_t>(tokens[i] * H), H,
                  xs.begin() + static_cast<std::ptrdiff_t>(i * H));
    }
    h1.assign(n * I, 0.0f);   // [n, I]
    h3.assign(n * I, 0.0f);   // [n, I]
    act.assign(n * I, 0.0f);  // [n, I]
    out.assign(n * H, 0.0f);  // [n, H]
    MOE_KERNELS_RETURN_IF_ERROR(b.linear(*w.w1, xs, n, h1));
    MOE_KERNELS_RETURN_IF_ERROR(b.linear(*w.w3, xs, n, h3));
    MOE_KERNELS_RETURN_IF_ERROR(b.swiglu(h1, h3, act));
    MOE_KERNELS_RETURN_IF_ERROR(b.linear(*w.w2, act, n, out));
    for (size_t i = 0; i < n; ++i) {
      for (size_t h = 0; h < H; ++h) y[tokens[i] * H + h] += scale[i] * out[i * H + h];
    }
  }
  return Status::ok();
}

}  // namespace moe::kernels
