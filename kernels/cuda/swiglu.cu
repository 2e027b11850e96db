// SwiGLU (plain, gpt-oss clamped) and NemotronH relu² activation kernels; see swiglu.cuh.
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

// No __restrict__ on h1/h3/out: out may alias either.
__global__ void gatedActivationKernel(const float* h1, const float* h3, const float* b1,
                                      const float* b3, float* out, size_t n, size_t I, bool clamped,
                                      float alpha, float limit) {
  const size_t total = n * I, stride = size_t{blockDim.x} * gridDim.x;
  for (size_t idx = size_t{blockIdx.x} * blockDim.x + threadIdx.x; idx < total; idx += stride) {
    const size_t i = idx % I;
    float g = h1[idx], u = h3[idx];
    if (b1 != nullptr) g += b1[i];
    if (b3 != nullptr) u += b3[i];
    if (clamped) {
      g = fminf(g, limit);
      u = fminf(fmaxf(u, -limit), limit);
      out[idx] = (u + 1.0f) * (g / (1.0f + expf(-alpha * g)));
    } else {
      out[idx] = g / (1.0f + expf(-g)) * u;
    }
  }
}

// No __restrict__: out may alias h3.
__global__ void relu2Kernel(const float* h3, const float* b3, float* out, size_t n, size_t I) {
  const size_t total = n * I, stride = size_t{blockDim.x} * gridDim.x;
  for (size_t idx = size_t{blockIdx.x} * blockDim.x + threadIdx.x; idx < total; idx += stride) {
    float u = h3[idx];
    if (b3 != nullptr) u += b3[idx % I];
    const float r = fmaxf(u, 0.0f);
    out[idx] = r * r;
  }
}

}  // namespace

cudaError_t launchRelu2(const float* h3, const float* b3, float* out, size_t n, size_t I,
                        cudaStream_t stream) {
  if (n == 0 || I == 0) return cudaSuccess;  // a zero-sized grid is a launch error
  relu2Kernel<<<elementwiseGrid(n * I), kElementwiseBlock, 0, stream>>>(h3, b3, out, n, I);
  return cudaGetLastError();
}

cudaError_t launchGatedActivation(const float* h1, const float* h3, const float* b1,
                                  const float* b3, float* out, size_t n, size_t I, bool clamped,
                                  float alpha, float limit, cudaStream_t stream) {
  if (n == 0 || I == 0) return cudaSuccess;  // a zero-sized grid is a launch error
  gatedActivationKernel<<<elementwiseGrid(n * I), kElementwiseBlock, 0, stream>>>(
      h1, h3, b1, b3, out, n, I, clamped, alpha, limit);
  return cudaGetLastError();
}

cudaError_t launchSwiglu(const float* gate, const float* up, float* out, size_t n,
                         cudaStream_t stream) {
  if (n == 0) return cudaSuccess;  // a zero-sized grid is a launch error
  swigluKernel<<<elementwiseGrid(n), kElementwiseBlock, 0, stream>>>(gate, up, out, n);
  return cudaGetLastError();
}

}  // namespace moe::kernels::cuda
