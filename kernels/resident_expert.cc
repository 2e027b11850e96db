// uploadExpert implementation.
#include "kernels/resident_expert.h"

#include <string>

namespace moe::kernels {
namespace {

// An optional bias [n] as an f32 [n, 1] matrix (backend.h); null when `b` is empty.
Result<std::unique_ptr<Matrix>> uploadBias(Backend& backend, const std::vector<float>& b, size_t n,
                                           const char* what) {
  if (b.empty()) return std::unique_ptr<Matrix>();
  if (b.size() != n) {
    return makeError(std::string(what) + ": " + std::to_string(b.size()) + " elements, expected " +
                     std::to_string(n));
  }
  auto m = backend.upload(b, n, 1, DType::kF32);
  if (!m) return makeError(std::string(what) + ": " + m.error());
  return std::move(m).value();
}

}  // namespace

FfnActivation routedActivation(const ModelConfig& model) {
  FfnActivation a;
  if (model.expertActivation == ExpertActivation::kClampedSwiglu) {
    a.kind = FfnActivation::Kind::kClampedSwiglu;
    a.alpha = model.swigluAlpha;
    a.limit = model.swigluLimit;
  } else if (model.expertActivation == ExpertActivation::kRelu2) {
    a.kind = FfnActivation::Kind::kRelu2;
  }
  return a;
}

FfnActivation sharedActivation(const ModelConfig& model) {
  FfnActivation a;
  if (model.sharedActivation == ExpertActivation::kRelu2) a.kind = FfnActivation::Kind::kRelu2;
  return a;
}

Result<ResidentExpert> uploadExpert(Backend& backend, const ExpertTensors& t, size_t I, size_t H,
                                    DType dtype, FfnActivation activation) {
  // A non-gated FFN has up/down only; a gate given to it (or missing from a gated one) would be
  // ignored (or read as garbage), so either is an error.
  if (!activation.gated() && (!t.w1.empty() || !t.b1.empty())) {
    return makeError("w1: a gate projection given for a non-gated (relu2) FFN");
  }
  std::unique_ptr<Matrix> gate;
  if (activation.gated()) {
    auto w1 = backend.upload(t.w1, I, H, dtype);
    if (!w1) return makeError("w1: " + w1.error());
    gate = std::move(w1).value();
  }
  auto w3 = backend.upload(t.w3, I, H, dtype);
  if (!w3) return makeError("w3: " + w3.error());
  auto w2 = backend.upload(t.w2, H, I, dtype);
  if (!w2) return makeError("w2: " + w2.error());
  auto b1 = uploadBias(backend, t.b1, I, "b1");
  if (!b1) return makeError(b1.status());
  auto b3 = uploadBias(backend, t.b3, I, "b3");
  if (!b3) return makeError(b3.status());
  auto b2 = uploadBias(backend, t.b2, H, "b2");
  if (!b2) return makeError(b2.status());
  return ResidentExpert{std::move(gate),
                        std::move(w3).value(),
                        std::move(w2).value(),
                        std::move(b1).value(),
                        std::move(b3).value(),
                        std::move(b2).value(),
                        activation};
}

Result<ResidentExpert> uploadRoutedExpert(Backend& backend, const ModelConfig& model,
                                          const ExpertTensors& t, DType dtype) {
  const std::pair<const char*, const std::vector<float>*> biases[] = {
      {"b1", &t.b1}, {"b3", &t.b3}, {"b2", &t.b2}};
  for (const auto& [name, b] : biases) {
    if (model.expertBias && b->empty()) {
      return makeError(std::string(name) +
                       ": the model has expert biases but this expert has none");
    }
    if (!model.expertBias && !b->empty()) {
      return makeError(std::string(name) + ": a bias given for a model without expert biases");
    }
  }
  return uploadExpert(backend, t, model.intermediateSize, model.hiddenSize, dtype,
                      routedActivation(model));
}

Result<ResidentExpert> uploadSharedExpert(Backend& backend, const ModelConfig& model,
                                          const ExpertTensors& t, DType dtype) {
  return uploadExpert(backend, t, model.sharedIntermediateSize, model.hiddenSize, dtype,
                      sharedActivation(model));
}

}  // namespace moe::kernels
