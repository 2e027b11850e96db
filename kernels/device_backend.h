// Maps a configured ComputeDevice (from the cluster YAML) to a compute backend.
#pragma once

#include "common/compute_device.h"
#include "kernels/backend.h"
#include "kernels/blas_backend.h"

namespace moe::kernels {

// `blasThreads` > 0 caps the CPU threads BLAS may use in this process (configured per service).
inline Result<std::unique_ptr<Backend>> createBackendFor(const ComputeDevice& device,
                                                         uint32_t blasThreads) {
  if (blasThreads > 0) setBlasThreads(static_cast<int>(blasThreads));
  switch (device.kind) {
    case ComputeDevice::Kind::kAuto:
      return createBackend(BackendKind::kAuto, device.index);
    case ComputeDevice::Kind::kCpu:
      return createBackend(BackendKind::kBlas, 0);
    case ComputeDevice::Kind::kReference:
      return createBackend(BackendKind::kReference, 0);
    case ComputeDevice::Kind::kCuda:
      return createBackend(BackendKind::kCuda, device.index);
  }
  return makeError("unknown device kind");
}

}  // namespace moe::kernels
