// Model fingerprint: the checkpoint is opened with the same readers the services load it with (so
// a broken directory fails with their errors), then its identifying bytes are fed, each with its
// length and in a fixed order, to two independent 64-bit hash streams.
#include "common/model_fingerprint.h"

#include <algorithm>
#include <array>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <span>
#include <string_view>

#include "common/checkpoint.h"
#include "common/safetensors.h"

namespace moe {
namespace {

// 128 bits from two 64-bit byte-at-a-time streams that differ in seed, multiplier and mixing
// (FNV-1a, and an xor-multiply-rotate), each finished with MurmurHash3's avalanche step. A change
// that collides in one stream is most unlikely to collide in the other. Every field is preceded by
// its length, so moving bytes from one field to the next changes the hash.
class Hash128 {
 public:
  void field(std::span<const std::byte> bytes) {
    u64(bytes.size());
    for (std::byte b : bytes) mix(static_cast<uint8_t>(b));
  }
  void field(std::string_view text) { field(std::as_bytes(std::span(text.data(), text.size()))); }
  void u64(uint64_t v) {
    for (int i = 0; i < 8; ++i) mix(static_cast<uint8_t>(v >> (8 * i)));
  }
  std::string hex() const {
    static constexpr char kDigits[] = "0123456789abcdef";
    std::string out;
    for (uint64_t v : {avalanche(a_), avalanche(b_)}) {
      for (int shift = 60; shift >= 0; shift -= 4) out.push_back(kDigits[(v >> shift) & 0xf]);
    }
    return out;
  }

 private:
  void mix(uint8_t c) {
    a_ = (a_ ^ c) * 0x100000001b3ULL;  // FNV-1a 64
    b_ = (b_ ^ (c + 0x9eULL)) * 0x9e3779b97f4a7c15ULL;
    b_ = (b_ << 29) | (b_ >> 35);
  }
  static uint64_t avalanche(uint64_t h) {
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ULL;
    h ^= h >> 33;
    return h;
  }
  uint64_t a_ = 0xcbf29ce484222325ULL;  // FNV offset basis
  uint64_t b_ = 0x2545f4914f6cdd1dULL;
};

Result<std::string> readWholeFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return makeError(path + ": cannot open");
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// One safetensors file: its name within the directory (not its path, so a copy elsewhere has the
// same fingerprint), its header, and per tensor (sorted by name) the name and the sampled bytes.
void hashFile(const SafetensorsFile& file, Hash128& h) {
  h.field(std::filesystem::path(file.path()).filename().string());
  h.field(file.headerBytes());
  std::vector<const TensorInfo*> tensors;
  for (const TensorInfo& t : file.tensors()) tensors.push_back(&t);
  std::sort(tensors.begin(), tensors.end(),
            [](const TensorInfo* a, const TensorInfo* b) { return a->name < b->name; });
  for (const TensorInfo* t : tensors) {
    h.field(t->name);
    const std::span<const std::byte> data = file.bytes(*t);
    for (const ByteRange& r : fingerprintSampleRanges(data.size())) {
      h.field(data.subspan(r.offset, r.size));
    }
  }
}

}  // namespace

std::vector<ByteRange> fingerprintSampleRanges(uint64_t tensorBytes) {
  constexpr uint64_t w = kFingerprintWindowBytes;
  if (tensorBytes <= 4 * w) return {{0, tensorBytes}};
  return {{0, w}, {tensorBytes / 3, w}, {tensorBytes * 2 / 3, w}, {tensorBytes - w, w}};
}

Result<std::string> modelFingerprint(const std::string& checkpointDir) {
  auto ckpt = Checkpoint::open(checkpointDir);
  if (!ckpt) return makeError(ckpt.status());
  auto config = readWholeFile((std::filesystem::path(checkpointDir) / "config.json").string());
  if (!config) return makeError(config.status());

  Hash128 h;
  h.field(std::string_view("moe-cluster model fingerprint v1"));
  h.field(config.value());
  // Files in name order: an index lists them in whatever order its writer chose.
  std::vector<const SafetensorsFile*> files;
  for (const auto& f : ckpt.value()->files()) files.push_back(f.get());
  std::sort(files.begin(), files.end(), [](const SafetensorsFile* a, const SafetensorsFile* b) {
    return std::filesystem::path(a->path()).filename() <
           std::filesystem::path(b->path()).filename();
  });
  h.u64(files.size());
  for (const SafetensorsFile* f : files) hashFile(*f, h);
  return h.hex();
}

}  // namespace moe
