// PLACEHOLDER (see model_fingerprint.h): FNV-1a of config.json only.
#include "common/model_fingerprint.h"

#include <cstdio>
#include <fstream>
#include <sstream>

namespace moe {

Result<std::string> modelFingerprint(const std::string& dir) {
  std::ifstream in(dir + "/config.json", std::ios::binary);
  if (!in) return makeError(StatusCode::kFailedPrecondition, dir + "/config.json: cannot read");
  std::stringstream ss;
  ss << in.rdbuf();
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : ss.str()) h = (h ^ c) * 1099511628211ull;
  char buf[17];
  std::snprintf(buf, sizeof(buf), "%016llx", static_cast<unsigned long long>(h));
  return std::string(buf);
}

}  // namespace moe
