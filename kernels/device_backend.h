// Maps a configured ComputeDevice (from the cluster YAML) to a compute backend.
#pragma once

#include "common/config.h"
#include "kernels/backend.h"

namespace moe::kernels {

inline Result<std::unique_ptr<Backend>> createBackendFor(const ComputeDevice& device) {
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
