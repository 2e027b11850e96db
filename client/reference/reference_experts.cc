// Reference expert outputs; see reference_experts.h.
#include "client/reference/reference_experts.h"

#include "client/reference/reference_routing.h"
#include "kernels/moe_layer.h"

namespace moe::client {

Status addFfnExperts(kernels::Backend& b, std::span<const kernels::ExpertFfnWeights> ffn,
                     std::span<const float> x, size_t T, size_t H, const ReferenceRouting& routing,
                     std::span<float> y, bool weightOnInput) {
  // One row per kept FFN assignment, routed with k = 1: moeExpertsInProcess then never sees a
  // zero-computation id (it rejects ids beyond its experts) nor computes a dropped assignment.
  const uint32_t k = routing.k;
  std::vector<size_t> token;
  std::vector<uint32_t> ids;
  std::vector<float> weights, rows;
  for (size_t t = 0; t < T; ++t) {
    for (uint32_t j = 0; j < k; ++j) {
      const size_t a = t * k + j;
      if (routing.ids[a] >= ffn.size() || routing.dropped[a]) continue;
      token.push_back(t);
      ids.push_back(routing.ids[a]);
      weights.push_back(routing.weights[a]);
      rows.insert(rows.end(), x.begin() + static_cast<std::ptrdiff_t>(t * H),
                  x.begin() + static_cast<std::ptrdiff_t>((t + 1) * H));
    }
  }
  const size_t n = token.size();
  std::vector<float> out(n * H);
  if (auto s =
          kernels::moeExpertsInProcess(b, ffn, rows, n, H, 1, ids, weights, out, weightOnInput);
      !s)
    return s;
  for (size_t r = 0; r < n; ++r) {
    for (size_t h = 0; h < H; ++h) y[token[r] * H + h] += out[r * H + h];
  }
  return Status::ok();
}

void addZeroComputeExperts(const ModelConfig& model,
                           std::span<const ConstantExpertTensors> constants,
                           std::span<const float> x, size_t T, const ReferenceRouting& routing,
                           std::span<float> y) {
  const size_t H = model.hiddenSize;
  const uint32_t k = routing.k;
  for (size_t t = 0; t < T; ++t) {
    const float* xt = &x[t * H];
    float* yt = &y[t * H];
    for (uint32_t j = 0; j < k; ++j) {
      const uint32_t id = routing.ids[t * k + j];
      const float w = routing.weights[t * k + j];
      switch (model.expertKind(id)) {
        case ExpertKind::kFfn:
        case ExpertKind::kZero:  // zeros_like(inputs): adds nothing
          break;
        case ExpertKind::kCopy:  // CopyExpert: inputs
          for (size_t h = 0; h < H; ++h) yt[h] += w * xt[h];
          break;
        case ExpertKind::kConstant: {
          // weight = softmax(wg(inputs)); weight[:, 0]·inputs + weight[:, 1]·constant
          const ConstantExpertTensors& c = constants[id - model.numFfnExperts];
          float logit[2] = {0.0f, 0.0f};
          for (size_t r = 0; r < 2; ++r) {
            for (size_t h = 0; h < H; ++h) logit[r] += c.wc[r * H + h] * xt[h];
          }
          const auto a = referenceSoftmax(logit);
          for (size_t h = 0; h < H; ++h) yt[h] += w * (a[0] * xt[h] + a[1] * c.v[h]);
          break;
        }
      }
    }
  }
}

}  // namespace moe::client
