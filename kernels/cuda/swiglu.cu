// SwiGLU and the grouped expert FFN's fused activation kernels; see swiglu.cuh.
#include <climits>

#include "kernels/cuda/element.cuh"
#include "kernels/cuda/grid.cuh"
#include "kernels/cuda/swiglu.cuh"

namespace moe::kernels::cuda {
namespace {

constexpr unsigned kRowBlock = 256;  // threads striding over one entry's I elements

// No __restrict__: out may alias gate.
__global__ void swigluKernel(const float* gate, const float* up, float* out, size_t n) {
  const size_t stride = size_t{blockDim.x} * gridDim.x;
  for (size_t i = size_t{blockIdx.x} * blockDim.x + threadIdx.x; i < n; i += stride) {
    const float g = gate[i];
    out[i] = g / (1.0f + expf(-g)) * up[i];
  }
}

// One block per entry.  Each element is read and then written by the same thread, so writing
// over h1 in place is race-free.
template <typename T>
__global__ void expertActivationKernel(T* h1, const T* __restrict__ h3,
                                       const uint32_t* __restrict__ entryGroup,
                                       const FfnGroup* __restrict__ groups) {
  const uint32_t e = blockIdx.x;
  const FfnGroup& g = groups[entryGroup[e]];
  const size_t I = g.inter;
  const size_t base = g.hOffset + size_t{e - g.firstEntry} * I;
  for (size_t i = threadIdx.x; i < I; i += blockDim.x) {
    float u = loadElement(h3, base + i);
    if (g.b3 != nullptr) u += g.b3[i];
    float out;
    if (g.kind == FfnKind::kRelu2) {
      const float r = fmaxf(u, 0.0f);
      out = r * r;
    } else {
      float gate = loadElement(h1, base + i);
      if (g.b1 != nullptr) gate += g.b1[i];
      if (g.kind == FfnKind::kClampedSwiglu) {
        gate = fminf(gate, g.limit);
        u = fminf(fmaxf(u, -g.limit), g.limit);
        out = (u + 1.0f) * (gate / (1.0f + expf(-g.alpha * gate)));
      } else {
        out = gate / (1.0f + expf(-gate)) * u;
      }
    }
    storeElement(h1, base + i, out);
  }
}

}  // namespace

cudaError_t launchSwiglu(const float* gate, const float* up, float* out, size_t n,
                         cudaStream_t stream) {
  if (n == 0) return cudaSuccess;  // a zero-sized grid is a launch error
  swigluKernel<<<elementwiseGrid(n), kElementwiseBlock, 0, stream>>>(gate, up, out, n);
  return cudaGetLastError();
}

cudaError_t launchExpertActivation(void* h1, const void* h3, ComputeType type,
                                   const uint32_t* entryGroup, const FfnGroup* groups,
                                   size_t entries, cudaStream_t stream) {
  if (entries == 0) return cudaSuccess;  // a zero-sized grid is a launch error
  if (entries > size_t{INT_MAX}) return cudaErrorInvalidValue;
  const unsigned blocks = static_cast<unsigned>(entries);
  if (type == ComputeType::kBF16) {
    expertActivationKernel<<<blocks, kRowBlock, 0, stream>>>(
        static_cast<__nv_bfloat16*>(h1), static_cast<const __nv_bfloat16*>(h3), entryGroup, groups);
  } else {
    expertActivationKernel<<<blocks, kRowBlock, 0, stream>>>(
        static_cast<float*>(h1), static_cast<const float*>(h3), entryGroup, groups);
  }
  return cudaGetLastError();
}

}  // namespace moe::kernels::cuda
