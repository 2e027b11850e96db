// Model fingerprint: a short, stable name for the exact weights a process loaded, so that a router
// and its shards can prove they serve the same checkpoint before any token crosses between them.
// It detects mistakes (another model, another training run, a half-copied or re-quantized file),
// not attacks: the hash is a fast non-cryptographic one and only a sample of each tensor is read.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/result.h"

namespace moe {

// A fingerprint of a checkpoint directory: config.json's bytes, every safetensors file's header
// (JSON) bytes and, per tensor, a small sample of its data bytes (a few fixed offsets), hashed to
// 32 hex characters. Two checkpoints with the same shapes but other weights differ; computing it
// reads ~1 KiB per tensor, not every weight. Single-file and sharded (index.json) checkpoints.
// The value does not depend on where the directory is; a sharded copy of a model has another
// fingerprint than its single-file form. Errors are Checkpoint::open's (missing or broken files).
Result<std::string> modelFingerprint(const std::string& checkpointDir);

// The byte ranges of a tensor's data (offsets from the tensor's first byte) that the fingerprint
// samples: 4 windows of kFingerprintWindowBytes at the start, 1/3, 2/3 and the end, or the whole
// tensor when it is no larger than the 4 windows together. Exposed so tests can aim at them.
inline constexpr uint64_t kFingerprintWindowBytes = 64;
struct ByteRange {
  uint64_t offset = 0;
  uint64_t size = 0;
};
std::vector<ByteRange> fingerprintSampleRanges(uint64_t tensorBytes);

}  // namespace moe
