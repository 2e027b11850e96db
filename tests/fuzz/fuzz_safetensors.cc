// libFuzzer target: a safetensors file (8-byte header length, JSON header, data) opened and every
// tensor it lists read. Any bytes must give a file or an error naming it.
#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "common/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const int fd = memfd_create("fuzz.safetensors", 0);
  static const std::string path = "/proc/self/fd/" + std::to_string(fd);
  if (ftruncate(fd, 0) != 0 || pwrite(fd, data, size, 0) != static_cast<ssize_t>(size)) return 0;
  auto file = moe::SafetensorsFile::open(path);
  if (!file.isOk()) {
    if (file.error().rfind(path, 0) != 0) __builtin_trap();
    return 0;
  }
  for (const moe::TensorInfo& t : file.value()->tensors()) {
    auto bytes = file.value()->bytes(t);
    if (bytes.size() != t.nbytes) __builtin_trap();
  }
  return 0;
}
