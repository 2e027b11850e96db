// uploadExpert implementation.
#include "kernels/resident_expert.h"

namespace moe::kernels {

Result<ResidentExpert> uploadExpert(Backend& backend, const ExpertTensors& t, size_t I, size_t H,
                                    DType dtype) {
  auto w1 = backend.upload(t.w1, I, H, dtype);
  if (!w1) return makeError("w1: " + w1.error());
  auto w3 = backend.upload(t.w3, I, H, dtype);
  if (!w3) return makeError("w3: " + w3.error());
  auto w2 = backend.upload(t.w2, H, I, dtype);
  if (!w2) return makeError("w2: " + w2.error());
  return ResidentExpert{std::move(w1).value(), std::move(w3).value(), std::move(w2).value()};
}

}  // namespace moe::kernels
