// Element access in a kernel's compute dtype (f32 or bf16): loads widen to fp32, stores round to
// nearest even.  Device code only (included by the .cu files).
#pragma once

#include <cuda_bf16.h>

#include <cstddef>

namespace moe::kernels::cuda {

__device__ inline float loadElement(const float* p, size_t i) {
  return p[i];
}
__device__ inline float loadElement(const __nv_bfloat16* p, size_t i) {
  return __bfloat162float(p[i]);
}
__device__ inline void storeElement(float* p, size_t i, float v) {
  p[i] = v;
}
__device__ inline void storeElement(__nv_bfloat16* p, size_t i, float v) {
  p[i] = __float2bfloat16_rn(v);
}

}  // namespace moe::kernels::cuda
