// Row gather / weighted scatter-add kernels; see gather_scatter.cuh.
#include "kernels/cuda/gather_scatter.cuh"
#include "kernels/cuda/grid.cuh"

namespace moe::kernels::cuda {
namespace {

__global__ void gatherRowsKernel(const float* __restrict__ x, const uint32_t* __restrict__ rows,
                                 size_t n, size_t H, float* __restrict__ xs,
                                 const float* __restrict__ scale) {
  const size_t total = n * H, stride = size_t{blockDim.x} * gridDim.x;
  for (size_t idx = size_t{blockIdx.x} * blockDim.x + threadIdx.x; idx < total; idx += stride) {
    const size_t i = idx / H, h = idx % H;
    const float v = x[size_t{rows[i]} * H + h];
    xs[idx] = scale != nullptr ? scale[i] * v : v;
  }
}

// One thread per output element of this segment; rows are distinct, so there is exactly one
// writer per y element and a plain read-modify-write is race-free.
__global__ void weightedScatterAddKernel(const float* __restrict__ out,
                                         const uint32_t* __restrict__ rows,
                                         const float* __restrict__ weights, size_t n, size_t H,
                                         float* __restrict__ y, const float* __restrict__ bias) {
  const size_t total = n * H, stride = size_t{blockDim.x} * gridDim.x;
  for (size_t idx = size_t{blockIdx.x} * blockDim.x + threadIdx.x; idx < total; idx += stride) {
    const size_t i = idx / H, h = idx % H;
    const float o = bias != nullptr ? out[idx] + bias[h] : out[idx];
    y[size_t{rows[i]} * H + h] += weights != nullptr ? weights[i] * o : o;
  }
}

}  // namespace

cudaError_t launchGatherRows(const float* x, const uint32_t* rows, size_t n, size_t H, float* xs,
                             cudaStream_t stream, const float* scale) {
  if (n == 0 || H == 0) return cudaSuccess;  // a zero-sized grid is a launch error
  gatherRowsKernel<<<elementwiseGrid(n * H), kElementwiseBlock, 0, stream>>>(x, rows, n, H, xs,
                                                                             scale);
  return cudaGetLastError();
}

cudaError_t launchWeightedScatterAdd(const float* out, const uint32_t* rows, const float* weights,
                                     size_t n, size_t H, float* y, cudaStream_t stream,
                                     const float* bias) {
  if (n == 0 || H == 0) return cudaSuccess;
  weightedScatterAddKernel<<<elementwiseGrid(n * H), kElementwiseBlock, 0, stream>>>(
      out, rows, weights, n, H, y, bias);
  return cudaGetLastError();
}

}  // namespace moe::kernels::cuda
