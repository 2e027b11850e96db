// libFuzzer target: a checkpoint directory's JSON files. The first input byte picks the file the
// rest becomes: even, config.json (then no weights); odd, model.safetensors.index.json beside a
// valid config.json. Any bytes must give an error naming the file, never a crash or an escaping
// exception (issue 15: 1e400 ended start-up with SIGABRT).
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <string>

#include "common/checkpoint.h"

namespace {

constexpr const char* kConfig =
    R"({"model_type": "mixtral", "hidden_size": 16, "intermediate_size": 24,
        "num_local_experts": 4, "num_experts_per_tok": 2, "num_hidden_layers": 2,
        "torch_dtype": "float32"})";

const std::string& dir() {
  static const std::string d = [] {
    char tmpl[] = "/tmp/moe-fuzz-ckpt-XXXXXX";
    return std::string(mkdtemp(tmpl));
  }();
  return d;
}

void write(const std::string& path, const char* data, size_t size) {
  std::ofstream(path, std::ios::binary | std::ios::trunc).write(data, static_cast<long>(size));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const char* rest = reinterpret_cast<const char*>(data + 1);
  const std::string config = dir() + "/config.json",
                    index = dir() + "/model.safetensors.index.json";
  if (data[0] % 2 == 0) {
    write(config, rest, size - 1);
    unlink(index.c_str());
  } else {
    write(config, kConfig, std::char_traits<char>::length(kConfig));
    write(index, rest, size - 1);
  }
  // Every error names the directory or a file in it (config.json, the index, a shard file).
  auto ckpt = moe::Checkpoint::open(dir());
  if (!ckpt.isOk() && ckpt.error().find(dir()) == std::string::npos) __builtin_trap();
  return 0;
}
