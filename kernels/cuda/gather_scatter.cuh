// Around the grouped expert GEMMs: the row gather into the compute buffer, and the deterministic
// combine of the expert outputs into y; plus the f32 → bf16 rounding of a linear's activations.
// Host-callable launchers; kernels in gather_scatter.cu.  All pointers are device memory; each
// launcher returns the launch error.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "kernels/cuda/grouped_ffn.cuh"

namespace moe::kernels::cuda {

// For every entry e < entries, in group g = entryGroup[e] at row j = e - groups[g].firstEntry:
//   xs[groups[g].xOffset + j·H + h] = round(scale[e] · x[rows[e]·H + h])   (no scale when null)
// rounded to `type` (f32: unchanged).  One block per entry.
cudaError_t launchGatherEntries(const float* x,              // [R, H]
                                const uint32_t* rows,        // [entries], each < R
                                const float* scale,          // [entries] or null
                                const uint32_t* entryGroup,  // [entries]
                                const FfnGroup* groups, size_t entries, size_t H, ComputeType type,
                                void* xs,  // the groups' [rows, H] blocks, `type`
                                cudaStream_t stream);

// For every row r < R: y[r, :] = Σ over p in [rowOffsets[r], rowOffsets[r+1]) in that order, of
//   w · (out[e] + b2),  e = rowEntries[p], w = weights[e] (1 when weights is null),
// where out[e] is entry e's row of the W2 output (located as in launchGatherEntries) and b2 its
// group's bias (none when null); 0 for a row no entry names.  The fixed order and one writer
// per element (a block per row, no atomics) make the result deterministic.
cudaError_t launchCombineRows(const void* out,  // the groups' [rows, H] blocks, `type`
                              ComputeType type,
                              const float* weights,        // [entries] or null
                              const uint32_t* rowOffsets,  // [R + 1]
                              const uint32_t* rowEntries,  // [entries]
                              const uint32_t* entryGroup,  // [entries]
                              const FfnGroup* groups, size_t R, size_t H,
                              float* y,  // [R, H]
                              cudaStream_t stream);

// out[i] = bf16(in[i]), round to nearest even (NaN stays NaN), for i < n.
cudaError_t launchToBf16(const float* in, size_t n, uint16_t* out, cudaStream_t stream);

}  // namespace moe::kernels::cuda
