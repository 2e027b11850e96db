// Where a process computes: the device a service's config names. Kept apart from the cluster
// config (common/config.h) so the kernels can map it to a backend without depending on YAML.
#pragma once

#include <string>

namespace moe {

// Where a process computes. kAuto: the GPU with `index` when usable, else BLAS on the CPU.
struct ComputeDevice {
  enum class Kind { kAuto, kCpu, kReference, kCuda };
  Kind kind = Kind::kAuto;
  int index = 0;
  std::string str() const;  // "auto", "cpu", "reference", "cuda:1"
};

}  // namespace moe
