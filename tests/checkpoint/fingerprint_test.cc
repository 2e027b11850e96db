// Model fingerprint tests on tiny synthetic checkpoints: which edits of a checkpoint directory
// change the fingerprint (config.json, other weights, a byte in a sampled window) and which do not
// (a copy elsewhere, a byte the samples skip), sharded checkpoints, the sample windows, and broken
// directories failing with the checkpoint loader's own errors.
#include "common/model_fingerprint.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "common/checkpoint.h"
#include "common/safetensors.h"
#include "tests/checkpoint/test_util.h"
#include "tools/synthetic_checkpoint.h"

namespace moe {
namespace {

namespace fs = std::filesystem;
using test::readFile;
using test::writeFile;

const std::string kExpertW2 = "model.layers.1.block_sparse_moe.experts.2.w2.weight";

SyntheticModelSpec tinySpec() {
  SyntheticModelSpec s;
  s.hiddenSize = 32;
  s.intermediateSize = 48;
  s.numExperts = 4;
  s.topK = 2;
  s.numLayers = 2;
  s.seed = 42;
  s.dtype = DType::kBF16;
  return s;
}

// Where tensor `name`'s byte `at` lies in its file (model.safetensors).
uint64_t fileOffsetOf(const std::string& file, const std::string& name, uint64_t at) {
  auto f = SafetensorsFile::open(file);
  EXPECT_TRUE(f) << f.error();
  const TensorInfo* t = f.value()->find(name);
  EXPECT_NE(t, nullptr) << name;
  return 8 + f.value()->headerBytes().size() + t->offset + at;
}

void flipByte(const std::string& file, uint64_t offset) {
  std::string bytes = readFile(file);
  ASSERT_LT(offset, bytes.size());
  bytes[offset] = static_cast<char>(bytes[offset] ^ 0x01);
  writeFile(file, bytes);
}

class FingerprintTest : public test::TempDirTest {
 protected:
  std::string make(const SyntheticModelSpec& spec, const std::string& sub) {
    const std::string d = path(sub);
    Status s = writeSyntheticCheckpoint(spec, d);
    EXPECT_TRUE(s) << s.message();
    return d;
  }
  std::string fingerprintOk(const std::string& dir) {
    auto f = modelFingerprint(dir);
    EXPECT_TRUE(f) << f.error();
    return f ? f.value() : "";
  }
};

TEST_F(FingerprintTest, IsStableAnd32HexCharacters) {
  const std::string dir = make(tinySpec(), "a");
  const std::string fp = fingerprintOk(dir);
  EXPECT_EQ(fp.size(), 32u);
  EXPECT_EQ(fp.find_first_not_of("0123456789abcdef"), std::string::npos) << fp;
  EXPECT_EQ(fingerprintOk(dir), fp);
}

// Each case builds a second directory from the first (a copy, then an edit) and says whether the
// fingerprint must stay or change.
TEST_F(FingerprintTest, WhatChangesIt) {
  const std::string weights = "/model.safetensors";
  const uint64_t w2Bytes = uint64_t{32} * 48 * 2;  // [H, I] bf16
  const auto sampled = fingerprintSampleRanges(w2Bytes);
  ASSERT_EQ(sampled.size(), 4u);
  const struct {
    const char* name;
    std::function<void(const std::string& dir)> edit;
    bool same;
  } cases[] = {
      {"a copy in another directory", [](const std::string&) {}, true},
      {"config.json reformatted",
       [](const std::string& d) {
         writeFile(d + "/config.json", readFile(d + "/config.json") + " ");
       },
       false},
      {"one byte flipped deep inside an expert tensor, in the 1/3 window",
       [&](const std::string& d) {
         flipByte(d + weights, fileOffsetOf(d + weights, kExpertW2, sampled[1].offset + 5));
       },
       false},
      {"one byte flipped in an expert tensor's last window",
       [&](const std::string& d) {
         flipByte(d + weights, fileOffsetOf(d + weights, kExpertW2, w2Bytes - 1));
       },
       false},
      // The price of reading ~1 KiB per tensor: a byte between the windows is not seen.
      {"one byte flipped between the sampled windows",
       [&](const std::string& d) {
         flipByte(d + weights, fileOffsetOf(d + weights, kExpertW2, sampled[0].size + 7));
       },
       true},
  };
  const std::string original = make(tinySpec(), "original");
  const std::string want = fingerprintOk(original);
  int n = 0;
  for (const auto& tc : cases) {
    SCOPED_TRACE(tc.name);
    const std::string copy = path("copy" + std::to_string(n++));
    fs::copy(original, copy, fs::copy_options::recursive);
    tc.edit(copy);
    const std::string got = fingerprintOk(copy);
    if (tc.same) {
      EXPECT_EQ(got, want);
    } else {
      EXPECT_NE(got, want);
    }
  }
}

TEST_F(FingerprintTest, SameShapesOtherWeightsDiffer) {
  SyntheticModelSpec other = tinySpec();
  other.seed = 43;
  EXPECT_NE(fingerprintOk(make(tinySpec(), "seed42")), fingerprintOk(make(other, "seed43")));
}

TEST_F(FingerprintTest, ShardedCheckpointsAreStable) {
  SyntheticModelSpec sharded = tinySpec();
  sharded.numFiles = 3;
  const std::string a = make(sharded, "sharded-a");
  const std::string b = make(sharded, "sharded-b");
  const std::string fp = fingerprintOk(a);
  EXPECT_EQ(fp.size(), 32u);
  EXPECT_EQ(fingerprintOk(a), fp);
  EXPECT_EQ(fingerprintOk(b), fp);  // written twice from one spec: same bytes
  // Another seed, sharded the same way, still differs.
  sharded.seed = 7;
  EXPECT_NE(fingerprintOk(make(sharded, "sharded-other")), fp);
  // The single-file form of the same model is another layout: only stability is promised.
  const std::string single = make(tinySpec(), "single");
  EXPECT_EQ(fingerprintOk(single), fingerprintOk(single));
}

TEST_F(FingerprintTest, SampleWindows) {
  const struct {
    uint64_t bytes;
    std::vector<std::pair<uint64_t, uint64_t>> want;  // (offset, size)
  } cases[] = {
      {0, {{0, 0}}},
      {10, {{0, 10}}},
      {256, {{0, 256}}},  // no larger than the 4 windows: hashed whole
      {257, {{0, 64}, {85, 64}, {171, 64}, {193, 64}}},
      {3000, {{0, 64}, {1000, 64}, {2000, 64}, {2936, 64}}},
  };
  for (const auto& tc : cases) {
    SCOPED_TRACE(tc.bytes);
    std::vector<std::pair<uint64_t, uint64_t>> got;
    for (const ByteRange& r : fingerprintSampleRanges(tc.bytes)) {
      EXPECT_LE(r.offset + r.size, tc.bytes);
      got.emplace_back(r.offset, r.size);
    }
    EXPECT_EQ(got, tc.want);
  }
}

// A directory the services cannot load has no fingerprint; the error is Checkpoint::open's.
TEST_F(FingerprintTest, BrokenDirectoriesFailWithTheLoadersErrors) {
  const struct {
    const char* name;
    uint32_t numFiles;
    std::function<void(const std::string& dir)> breakIt;
    std::string mention;
  } cases[] = {
      {"missing directory", 1, [](const std::string& d) { fs::remove_all(d); }, "config.json"},
      {"missing config.json", 1, [](const std::string& d) { fs::remove(d + "/config.json"); },
       "config.json"},
      {"truncated weights", 1,
       [](const std::string& d) {
         fs::resize_file(d + "/model.safetensors", fs::file_size(d + "/model.safetensors") - 100);
       },
       "model.safetensors"},
      {"a shard of the index missing", 3,
       [](const std::string& d) { fs::remove(d + "/model-00002-of-00003.safetensors"); },
       "model-00002-of-00003.safetensors"},
  };
  int n = 0;
  for (const auto& tc : cases) {
    SCOPED_TRACE(tc.name);
    SyntheticModelSpec spec = tinySpec();
    spec.numFiles = tc.numFiles;
    const std::string dir = make(spec, "broken" + std::to_string(n++));
    tc.breakIt(dir);
    auto fp = modelFingerprint(dir);
    ASSERT_FALSE(fp) << "fingerprinted a broken directory: " << fp.value();
    auto opened = Checkpoint::open(dir);
    ASSERT_FALSE(opened);
    EXPECT_EQ(fp.error(), opened.error());
    EXPECT_EQ(fp.code(), opened.code());
    EXPECT_NE(fp.error().find(tc.mention), std::string::npos) << fp.error();
  }
}

}  // namespace
}  // namespace moe
