// createBackend / cudaDeviceCount (declared in backend.h): picks the backend a service asked for
// and, for kAuto, falls back from CUDA to BLAS with one log line saying why.
#include <string>

#include "common/log.h"
#include "kernels/backend.h"
#include "kernels/blas_backend.h"
#include "kernels/reference_backend.h"

#ifdef MOE_HAVE_CUDA
#include "kernels/cuda/cuda_backend.h"
#endif

namespace moe::kernels {
namespace {

Result<std::unique_ptr<Backend>> tryCuda(int device) {
#ifdef MOE_HAVE_CUDA
  return createCudaBackend(device);
#else
  (void)device;
  return makeError(
      "CUDA backend unavailable: this build has no CUDA support (no nvcc at configure time, or "
      "-DMOE_ENABLE_CUDA=OFF)");
#endif
}

}  // namespace

int cudaDeviceCount() {
#ifdef MOE_HAVE_CUDA
  return queryCudaDevices().count;
#else
  return 0;
#endif
}

Result<std::unique_ptr<Backend>> createBackend(BackendKind kind, int device) {
  switch (kind) {
    case BackendKind::kReference:
      return makeReferenceBackend();
    case BackendKind::kBlas:
      return makeBlasBackend();
    case BackendKind::kCuda:
      return tryCuda(device);
    case BackendKind::kAuto: {
      auto cuda = tryCuda(device);
      if (cuda.isOk()) return cuda;
      logInfo("kernels: using the BLAS backend; ", cuda.error());
      return makeBlasBackend();
    }
  }
  return makeError("createBackend: unknown BackendKind " + std::to_string(static_cast<int>(kind)));
}

}  // namespace moe::kernels
