// The CPU backend's elementwise passes over token rows around its GEMMs: gathering a segment's
// rows (optionally scaled), in fp32 or rounded to bf16, rounding a block to bf16, and the weighted
// scatter-add of an expert's output rows. Vectorized (this file is built at -O3 with an AVX2
// clone): in the fine-grained shape (256 small experts) these scalar loops were a fifth of the
// expert FFN's time.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "common/activations.h"

namespace moe::kernels {

// out[i] = bf16(in[i]) for i < n: round to nearest even, NaN stays NaN (moe::floatToBf16's rule).
void roundToBf16(const float* in, uint16_t* out, size_t n);

// out[j, :] = bf16(scale[j] · x[rows[j], :]) for j < rows.size() (no scaling when scale is null);
// x is [R, H] in fp32 or bf16 (a bf16 row without a scale is copied as it is), out
// [rows.size(), H].
void gatherRowsBf16(Activations x, std::span<const uint32_t> rows, const float* scale, size_t H,
                    uint16_t* out);

// out[j, :] = scale[j] · x[rows[j], :] in fp32, as gatherRowsBf16 but not rounded (bf16 rows
// widen exactly).
void gatherRows(Activations x, std::span<const uint32_t> rows, const float* scale, size_t H,
                float* out);

// y[rows[j], :] += weight[j] · src[j, :] for j < rows.size() (weight 1 when weights is null); y
// and src do not overlap.
void scatterAddRows(const float* src, std::span<const uint32_t> rows, const float* weights,
                    size_t H, float* y);

}  // namespace moe::kernels
