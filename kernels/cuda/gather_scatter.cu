// Row gather, combine and bf16 rounding kernels; see gather_scatter.cuh.
#include <cuda_bf16.h>

#include <climits>

#include "kernels/cuda/element.cuh"
#include "kernels/cuda/gather_scatter.cuh"
#include "kernels/cuda/grid.cuh"

namespace moe::kernels::cuda {
namespace {

constexpr unsigned kRowBlock = 256;  // threads striding over one row's H elements

// One block per entry: its x row, scaled (weightOnInput) in fp32, then rounded to T once.
template <typename T>
__global__ void gatherEntriesKernel(const float* __restrict__ x, const uint32_t* __restrict__ rows,
                                    const float* __restrict__ scale,
                                    const uint32_t* __restrict__ entryGroup,
                                    const FfnGroup* __restrict__ groups, size_t H,
                                    T* __restrict__ xs) {
  const uint32_t e = blockIdx.x;
  const FfnGroup& g = groups[entryGroup[e]];
  const float* src = x + size_t{rows[e]} * H;
  T* dst = xs + g.xOffset + size_t{e - g.firstEntry} * H;
  if (scale != nullptr) {
    const float s = scale[e];
    for (size_t h = threadIdx.x; h < H; h += blockDim.x) storeElement(dst, h, s * src[h]);
  } else {
    for (size_t h = threadIdx.x; h < H; h += blockDim.x) storeElement(dst, h, src[h]);
  }
}

// One block per output row; each thread sums its elements over the row's entries in CSR order.
template <typename T>
__global__ void combineRowsKernel(const T* __restrict__ out, const float* __restrict__ weights,
                                  const uint32_t* __restrict__ rowOffsets,
                                  const uint32_t* __restrict__ rowEntries,
                                  const uint32_t* __restrict__ entryGroup,
                                  const FfnGroup* __restrict__ groups, size_t H,
                                  float* __restrict__ y) {
  const size_t r = blockIdx.x;
  const uint32_t begin = rowOffsets[r], end = rowOffsets[r + 1];
  for (size_t h = threadIdx.x; h < H; h += blockDim.x) {
    float acc = 0.0f;
    for (uint32_t p = begin; p < end; ++p) {
      const uint32_t e = rowEntries[p];
      const FfnGroup& g = groups[entryGroup[e]];
      float o = loadElement(out, g.xOffset + size_t{e - g.firstEntry} * H + h);
      if (g.b2 != nullptr) o += g.b2[h];
      acc += weights != nullptr ? weights[e] * o : o;
    }
    y[r * H + h] = acc;
  }
}

__global__ void toBf16Kernel(const float* __restrict__ in, size_t n,
                             __nv_bfloat16* __restrict__ out) {
  const size_t stride = size_t{blockDim.x} * gridDim.x;
  for (size_t i = size_t{blockIdx.x} * blockDim.x + threadIdx.x; i < n; i += stride) {
    out[i] = __float2bfloat16_rn(in[i]);
  }
}

}  // namespace

cudaError_t launchGatherEntries(const float* x, const uint32_t* rows, const float* scale,
                                const uint32_t* entryGroup, const FfnGroup* groups, size_t entries,
                                size_t H, ComputeType type, void* xs, cudaStream_t stream) {
  if (entries == 0 || H == 0) return cudaSuccess;  // a zero-sized grid is a launch error
  if (entries > size_t{INT_MAX}) return cudaErrorInvalidValue;
  const unsigned blocks = static_cast<unsigned>(entries);
  if (type == ComputeType::kBF16) {
    gatherEntriesKernel<<<blocks, kRowBlock, 0, stream>>>(x, rows, scale, entryGroup, groups, H,
                                                          static_cast<__nv_bfloat16*>(xs));
  } else {
    gatherEntriesKernel<<<blocks, kRowBlock, 0, stream>>>(x, rows, scale, entryGroup, groups, H,
                                                          static_cast<float*>(xs));
  }
  return cudaGetLastError();
}

cudaError_t launchCombineRows(const void* out, ComputeType type, const float* weights,
                              const uint32_t* rowOffsets, const uint32_t* rowEntries,
                              const uint32_t* entryGroup, const FfnGroup* groups, size_t R,
                              size_t H, float* y, cudaStream_t stream) {
  if (R == 0 || H == 0) return cudaSuccess;
  if (R > size_t{INT_MAX}) return cudaErrorInvalidValue;
  const unsigned blocks = static_cast<unsigned>(R);
  if (type == ComputeType::kBF16) {
    combineRowsKernel<<<blocks, kRowBlock, 0, stream>>>(static_cast<const __nv_bfloat16*>(out),
                                                        weights, rowOffsets, rowEntries, entryGroup,
                                                        groups, H, y);
  } else {
    combineRowsKernel<<<blocks, kRowBlock, 0, stream>>>(
        static_cast<const float*>(out), weights, rowOffsets, rowEntries, entryGroup, groups, H, y);
  }
  return cudaGetLastError();
}

cudaError_t launchToBf16(const float* in, size_t n, uint16_t* out, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  toBf16Kernel<<<elementwiseGrid(n), kElementwiseBlock, 0, stream>>>(
      in, n, reinterpret_cast<__nv_bfloat16*>(out));
  return cudaGetLastError();
}

}  // namespace moe::kernels::cuda
