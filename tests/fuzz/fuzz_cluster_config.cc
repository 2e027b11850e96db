// libFuzzer target: the cluster config parser (YAML → typed, validated ClusterConfig). Any input
// must give a config or an error naming the file, never a crash or an escaping exception.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "common/config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view yaml(reinterpret_cast<const char*>(data), size);
  auto config = moe::parseClusterConfig(yaml, "fuzz.yaml", "/nonexistent");
  if (!config.isOk() && config.error().rfind("fuzz.yaml", 0) != 0) __builtin_trap();
  return 0;
}
