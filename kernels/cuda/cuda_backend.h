// The CUDA backend: weights live in device memory, GEMMs run in fp32 through cuBLAS (no TF32),
// routing/activation/gather/scatter are small kernels of their own (one .cu/.cuh each).
// Plain C++ header (no CUDA includes) so the backend factory compiles the same with or without
// CUDA; only built when MOE_HAVE_CUDA.
#pragma once

#include <memory>
#include <string>

#include "common/result.h"
#include "kernels/backend.h"

namespace moe::kernels {

// Devices the CUDA runtime reports, or count 0 with `why` saying what failed (no driver, no
// device).  Never aborts: a machine without a GPU is a normal configuration.
struct CudaDeviceQuery {
  int count = 0;
  std::string why;
};
CudaDeviceQuery queryCudaDevices();

// A backend bound to GPU `device`: every entry point makes that device current first, because
// callers may use any thread.  All work runs in order on one stream owned by the backend; calls
// are serialized by an internal mutex and each returns once its results are in host memory.
// Scratch device memory grows to the largest call seen and is reused.
Result<std::unique_ptr<Backend>> createCudaBackend(int device);

}  // namespace moe::kernels
