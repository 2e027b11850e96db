// An expert FFN's weight matrices (and biases, when it has them) uploaded to a backend, from
// checkpoint tensors, with the activation its family uses.
#pragma once

#include <memory>

#include "common/checkpoint.h"
#include "kernels/backend.h"

namespace moe::kernels {

struct ResidentExpert {
  std::unique_ptr<Matrix> w1, w3, w2;  // [I, H] (null: non-gated FFN), [I, H], [H, I]
  std::unique_ptr<Matrix> b1, b3, b2;  // [I, 1], [I, 1], [H, 1] f32, or null
  FfnActivation activation{};
  ExpertFfnWeights view() const {
    return {w1.get(), w3.get(), w2.get(), b1.get(), b3.get(), b2.get(), activation};
  }
  // Bytes its matrices hold on the device (measured from their allocations).
  size_t residentBytes() const {
    size_t bytes = 0;
    for (const auto* m : {w1.get(), w3.get(), w2.get(), b1.get(), b3.get(), b2.get()}) {
      bytes += m ? m->residentBytes() : 0;
    }
    return bytes;
  }
};

// The routed experts' activation of `model` (ModelConfig::expertActivation, swigluAlpha,
// swigluLimit).
FfnActivation routedActivation(const ModelConfig& model);
// The shared expert's (ModelConfig::sharedActivation): SwiGLU in every family but NemotronH.
FfnActivation sharedActivation(const ModelConfig& model);

// Uploads w1/w3 as [I, H] and w2 as [H, I], resident in `dtype`, and each bias the tensors carry
// (b1/b3 [I], b2 [H]; empty: none) as an f32 column vector; the error names the tensor that failed.
// A non-gated activation (relu2) takes no w1 (empty; w1 stays null), a gated one requires it.
Result<ResidentExpert> uploadExpert(Backend& backend, const ExpertTensors& tensors, size_t I,
                                    size_t H, DType dtype = DType::kF32,
                                    FfnActivation activation = {});

// A routed expert of `model`: its activation, and its biases required exactly when
// model.expertBias (a missing or unexpected bias is an error naming it).
Result<ResidentExpert> uploadRoutedExpert(Backend& backend, const ModelConfig& model,
                                          const ExpertTensors& tensors, DType dtype = DType::kF32);
// The shared expert of `model` (width sharedIntermediateSize, its activation, no biases).
Result<ResidentExpert> uploadSharedExpert(Backend& backend, const ModelConfig& model,
                                          const ExpertTensors& tensors, DType dtype = DType::kF32);

}  // namespace moe::kernels
