// SwiGLU activation kernel; see swiglu.cuh.
#include "kernels/cuda/grid.cuh"
#include "kernels/cuda/swiglu.cuh"

namespace moe::kernels::cuda {
namespace {

// No __restrict__: out may alias gate (the expert FFN activates h1 in place).
__global__ void swigluKernel(const float* gate, const float* up, float* out, size_t n) {
  const size_t stride = size_t{blockDim.x} * gridDim.x;
  for (size_t i = size_t{blockIdx.x} * blockDim.x + threadIdx.x; i < n; i += stride) {
    const float g = gate[i];
    out[i] = g / (1.0f + expf(-g)) * up[i];
  }
}

}  // namespace

cudaError_t launchSwiglu(const float* gate, const float* up, float* out, size_t n,
                         cudaStream_t stream) {
  if (n == 0) return cudaSuccess;  // a zero-sized grid is a launch error
  swigluKernel<<<elementwiseGrid(n), kElementwiseBlock, 0, stream>>>(gate, up, out, n);
  return cudaGetLastError();
}

}  // namespace moe::kernels::cuda
