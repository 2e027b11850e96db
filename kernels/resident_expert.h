// An expert FFN's three weight matrices uploaded to a backend, from checkpoint tensors.
#pragma once

#include <memory>

#include "common/checkpoint.h"
#include "kernels/backend.h"

namespace moe::kernels {

struct ResidentExpert {
  std::unique_ptr<Matrix> w1, w3, w2;  // [I, H], [I, H], [H, I]
  ExpertFfnWeights view() const { return {w1.get(), w3.get(), w2.get()}; }
  // Bytes its matrices hold on the device (measured from their allocations).
  size_t residentBytes() const {
    return w1->residentBytes() + w3->residentBytes() + w2->residentBytes();
  }
};

// Uploads w1/w3 as [I, H] and w2 as [H, I], resident in `dtype`; the error names the matrix
// that failed.
Result<ResidentExpert> uploadExpert(Backend& backend, const ExpertTensors& tensors, size_t I,
                                    size_t H, DType dtype = DType::kF32);

}  // namespace moe::kernels
