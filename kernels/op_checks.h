// Argument validation shared by every backend: the shapes documented in backend.h are checked in
// one place so that the reference, BLAS and CUDA backends reject exactly the same calls with the
// same messages (a caller bug then never depends on which backend a service happened to pick).
//
// Sizes are exact: an output span must have exactly the documented number of elements, so a
// caller that passes a too-large buffer learns about its own shape bug instead of getting a
// silently half-written buffer.
#pragma once

#include <cstddef>
#include <span>
#include <string>
#include <string_view>

#include "common/result.h"
#include "kernels/backend.h"

// Returns from the enclosing Status-returning function when `expr` (a Status) failed.
#define MOE_KERNELS_RETURN_IF_ERROR(expr)       \
  do {                                          \
    ::moe::Status moe_kernels_status_ = (expr); \
    if (!moe_kernels_status_.isOk()) {          \
      return moe_kernels_status_;               \
    }                                           \
  } while (0)

namespace moe::kernels {

// data.size() == rows * cols.
Status checkUpload(std::span<const float> data, size_t rows, size_t cols);
// `dtype` is one a Matrix can be held in (f32, bf16, f16; not a checkpoint-only dtype).
Status checkUploadDType(std::string_view backend, DType dtype);

// x [T, w.cols], y [T, w.rows].
Status checkLinear(const Matrix& w, size_t xSize, size_t T, size_t ySize);

// gate, up, out all [n].
Status checkSwiglu(size_t gateSize, size_t upSize, size_t outSize);

// logits [T, E], ids [T, k], weights [T, k], 1 <= k <= E.
Status checkSoftmaxTopk(size_t logitsSize, size_t T, size_t E, size_t k, size_t idsSize,
                        size_t weightsSize);

// x [R, H], y [R, H]; offsets [S + 1] (or empty when S == 0) starting at 0 and non-decreasing;
// rows/weights [offsets[S]]; every row < R and distinct within its segment; every expert has
// non-null w3 [I, H], w2 [H, I], w1 [I, H] (null, as b1, exactly for a non-gated activation),
// biases null or f32 [I, 1], [I, 1], [H, 1], and a known activation (clamped: finite alpha,
// finite limit >= 0).  Distinct rows per segment is what lets a
// GPU scatter-add one segment in parallel without atomics, so every backend enforces it.
Status checkExpertSegments(const ExpertSegments& segments, size_t xSize, size_t R, size_t H,
                           size_t ySize);

// BLAS and cuBLAS take int dimensions; `value` must fit.
Status checkFitsInt(std::string_view what, size_t value);

// Resolves a Matrix to the concrete type of the backend that computes with it.
template <typename ConcreteMatrix>
Result<const ConcreteMatrix*> asBackendMatrix(const Matrix* m, std::string_view backend,
                                              std::string_view what) {
  if (m == nullptr) {
    return makeError(std::string(backend) + ": " + std::string(what) + " is null");
  }
  const auto* concrete = dynamic_cast<const ConcreteMatrix*>(m);
  if (concrete == nullptr) {
    return makeError(std::string(backend) + ": " + std::string(what) +
                     " was not uploaded by this backend");
  }
  return concrete;
}

}  // namespace moe::kernels
