// PLACEHOLDER until the identity branch lands: the real implementation hashes config.json, the
// safetensors headers and samples of each tensor. Same API.
#pragma once

#include <string>

#include "common/result.h"

namespace moe {

Result<std::string> modelFingerprint(const std::string& checkpointDir);

}  // namespace moe
