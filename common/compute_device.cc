// ComputeDevice naming.
#include "common/compute_device.h"

namespace moe {

std::string ComputeDevice::str() const {
  switch (kind) {
    case Kind::kAuto:
      return index == 0 ? "auto" : "auto:" + std::to_string(index);
    case Kind::kCpu:
      return "cpu";
    case Kind::kReference:
      return "reference";
    case Kind::kCuda:
      return "cuda:" + std::to_string(index);
  }
  return "?";
}

}  // namespace moe
