// A linear map whose every output is computed by the same fixed-order dot product, whatever the
// number of rows and wherever a row sits in the batch. The router's gate uses it so that a
// token's logits (and so its expert choice) are bit-identical whether it is served alone or
// merged with other requests — BLAS picks its blocking and kernels by the batch's shape, so its
// rounding depends on which rows share the call.
#pragma once

#include <cstddef>
#include <span>

namespace moe::kernels {

// y[t, n] = Σ_k x[t, k] · w[n, k] for t < T, n < N. w: [N, K], x: [T, K], y: [T, N], row-major.
// Each y[t, n] depends only on row t of x and row n of w.
void linearRowInvariant(std::span<const float> w, size_t N, size_t K, std::span<const float> x,
                        size_t T, std::span<float> y);

}  // namespace moe::kernels
