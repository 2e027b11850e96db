// Safetensors files (https://huggingface.co/docs/safetensors): a reader that mmaps the file and
// validates the JSON header against the file size before any tensor is touched, and a writer for
// synthetic checkpoints. Reading a tensor touches only that tensor's pages.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/dtype.h"
#include "common/result.h"

namespace moe {

struct TensorInfo {
  std::string name;
  DType dtype;
  std::vector<uint64_t> shape;
  uint64_t offset;  // from the start of the data section
  uint64_t nbytes;
  uint64_t numel() const;
};

// "[4,1024]": how tensor shapes appear in checkpoint error messages.
std::string formatShape(const std::vector<uint64_t>& shape);

class SafetensorsFile {
 public:
  // Fails with a message naming the file and the problem: missing file, header length beyond the
  // file, invalid JSON, unsupported dtype, offsets out of range / overlapping / not matching
  // shape×dtype, duplicate names.
  static Result<std::unique_ptr<SafetensorsFile>> open(const std::string& path);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return path_; }
  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  const TensorInfo* find(std::string_view name) const;  // nullptr when absent
  std::span<const std::byte> bytes(const TensorInfo& t) const;
  // The JSON header as stored (padding included): what a model fingerprint hashes.
  std::span<const std::byte> headerBytes() const {
    return {map_ + 8, static_cast<size_t>(data_ - map_ - 8)};
  }

 private:
  SafetensorsFile() = default;
  std::string path_;
  std::vector<TensorInfo> tensors_;
  const std::byte* map_ = nullptr;
  size_t mapSize_ = 0;
  const std::byte* data_ = nullptr;  // start of the data section inside the map
};

// Accumulates tensors and writes one safetensors file (header keys sorted, data 8-byte aligned).
class SafetensorsWriter {
 public:
  void add(std::string name, DType dtype, std::vector<uint64_t> shape, std::vector<std::byte> data);
  Status write(const std::string& path) const;

 private:
  struct Entry {
    std::string name;
    DType dtype;
    std::vector<uint64_t> shape;
    std::vector<std::byte> data;
  };
  std::vector<Entry> entries_;
};

}  // namespace moe
