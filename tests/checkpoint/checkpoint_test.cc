// Checkpoint directory tests on tiny synthetic Mixtral models: the generator's determinism and
// value ranges, single-file vs sharded layouts, and each config.json / weight error naming its
// cause.
#include "common/checkpoint.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "tests/checkpoint/test_util.h"

namespace moe {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using test::readFile;
using test::writeFile;

const std::string kGate0 = "model.layers.0.block_sparse_moe.gate.weight";

SyntheticModelSpec tinySpec() {
  SyntheticModelSpec s;
  s.hiddenSize = 16;
  s.intermediateSize = 24;
  s.numExperts = 4;
  s.topK = 2;
  s.numLayers = 2;
  s.seed = 42;
  s.dtype = DType::kBF16;
  return s;
}

std::string expertName(uint32_t layer, uint32_t expert, const char* w) {
  return "model.layers." + std::to_string(layer) + ".block_sparse_moe.experts." +
         std::to_string(expert) + "." + w + ".weight";
}

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

class CheckpointTest : public test::TempDirTest {
 protected:
  // Writes a synthetic checkpoint into a subdirectory and returns its path.
  std::string make(const SyntheticModelSpec& spec, const std::string& sub = "ckpt") {
    const std::string d = path(sub);
    Status s = writeSyntheticCheckpoint(spec, d);
    EXPECT_TRUE(s) << s.message();
    return d;
  }

  std::unique_ptr<Checkpoint> openOk(const std::string& d) {
    auto c = Checkpoint::open(d);
    EXPECT_TRUE(c) << c.error();
    return c ? std::move(c).value() : nullptr;
  }

  std::string openError(const std::string& d) {
    auto c = Checkpoint::open(d);
    EXPECT_FALSE(c) << "opened " << d;
    return c ? "" : c.error();
  }

  // Applies `edit` to DIR/config.json.
  template <typename Edit>
  void editConfig(const std::string& d, Edit edit) {
    json config = json::parse(readFile(d + "/config.json"));
    edit(config);
    writeFile(d + "/config.json", config.dump(2));
  }

  // Rewrites a safetensors file without tensor `drop`, the way a broken conversion script would.
  void rewriteWithout(const std::string& file, const std::string& drop) {
    SafetensorsWriter w;
    {
      auto f = SafetensorsFile::open(file);
      ASSERT_TRUE(f) << f.error();
      for (const TensorInfo& t : f.value()->tensors()) {
        if (t.name == drop) continue;
        auto b = f.value()->bytes(t);
        w.add(t.name, t.dtype, t.shape, std::vector<std::byte>(b.begin(), b.end()));
      }
    }
    ASSERT_TRUE(w.write(file));
  }
};

TEST_F(CheckpointTest, SingleFileLoadsConfigAndShapes) {
  const std::string d = make(tinySpec());
  EXPECT_TRUE(fs::exists(d + "/model.safetensors"));
  EXPECT_FALSE(fs::exists(d + "/model.safetensors.index.json"));
  auto ckpt = openOk(d);
  ASSERT_NE(ckpt, nullptr);
  const ModelConfig& c = ckpt->config();
  EXPECT_EQ(c.modelType, "mixtral");
  EXPECT_EQ(c.hiddenSize, 16u);
  EXPECT_EQ(c.intermediateSize, 24u);
  EXPECT_EQ(c.numExperts, 4u);
  EXPECT_EQ(c.topK, 2u);
  EXPECT_EQ(c.numLayers, 2u);
  EXPECT_EQ(c.moeLayers, (std::vector<uint32_t>{0, 1}));
  EXPECT_EQ(ckpt->dir(), d);

  json config = json::parse(readFile(d + "/config.json"));
  EXPECT_EQ(config["architectures"], json::array({"MixtralForCausalLM"}));
  EXPECT_EQ(config["torch_dtype"], "bfloat16");

  // Only MoE tensors: per layer one gate and three matrices per expert.
  auto file = SafetensorsFile::open(d + "/model.safetensors");
  ASSERT_TRUE(file) << file.error();
  EXPECT_EQ(file.value()->tensors().size(), 2u * (1 + 3 * 4));

  for (uint32_t l : c.moeLayers) {
    auto gate = ckpt->gateWeight(l);
    ASSERT_TRUE(gate) << gate.error();
    EXPECT_EQ(gate.value().size(), 4u * 16);
    for (uint32_t e = 0; e < c.numExperts; ++e) {
      auto ex = ckpt->expert(l, e);
      ASSERT_TRUE(ex) << ex.error();
      EXPECT_EQ(ex.value().w1.size(), 24u * 16);
      EXPECT_EQ(ex.value().w3.size(), 24u * 16);
      EXPECT_EQ(ex.value().w2.size(), 16u * 24);
    }
  }
}

// Values are uniform in ±scale with the documented fan-in scales, and tensors differ.
TEST_F(CheckpointTest, SyntheticValueRanges) {
  SyntheticModelSpec spec = tinySpec();
  spec.dtype = DType::kF32;
  auto ckpt = openOk(make(spec));
  ASSERT_NE(ckpt, nullptr);
  auto checkRange = [](const std::vector<float>& v, float scale, const char* what) {
    float maxAbs = 0, sum = 0;
    for (float x : v) {
      maxAbs = std::max(maxAbs, std::fabs(x));
      sum += x;
    }
    EXPECT_LE(maxAbs, scale) << what;
    EXPECT_GT(maxAbs, 0.8f * scale) << what;  // spans the range, not collapsed near zero
    EXPECT_LT(std::fabs(sum / static_cast<float>(v.size())), 0.25f * scale) << what;
  };
  auto gate = ckpt->gateWeight(0);
  ASSERT_TRUE(gate);
  checkRange(gate.value(), 2.0f / 4.0f, "gate");
  auto ex = ckpt->expert(1, 3);
  ASSERT_TRUE(ex);
  checkRange(ex.value().w1, 1.0f / 4.0f, "w1");
  checkRange(ex.value().w3, 1.0f / 4.0f, "w3");
  checkRange(ex.value().w2, 1.0f / std::sqrt(24.0f), "w2");
  EXPECT_NE(ex.value().w1, ex.value().w3);
  auto other = ckpt->expert(1, 2);
  ASSERT_TRUE(other);
  EXPECT_NE(ex.value().w1, other.value().w1);
  auto gate1 = ckpt->gateWeight(1);
  ASSERT_TRUE(gate1);
  EXPECT_NE(gate.value(), gate1.value());

  // Routing is non-trivial: for a fixed unit-scale input the router softmax is far from uniform.
  std::vector<float> logits(4, 0.0f);
  for (uint32_t e = 0; e < 4; ++e) {
    for (uint32_t h = 0; h < 16; ++h)
      logits[e] += gate.value()[e * 16 + h] * ((h % 2) ? 1.0f : -1.0f);
  }
  float maxLogit = *std::max_element(logits.begin(), logits.end());
  float minLogit = *std::min_element(logits.begin(), logits.end());
  EXPECT_GT(maxLogit - minLogit, 0.5f);
}

TEST_F(CheckpointTest, GeneratorIsDeterministic) {
  const std::string a = make(tinySpec(), "a");
  const std::string b = make(tinySpec(), "b");
  SyntheticModelSpec other = tinySpec();
  other.seed = 43;
  const std::string c = make(other, "c");
  EXPECT_EQ(readFile(a + "/model.safetensors"), readFile(b + "/model.safetensors"));
  EXPECT_EQ(readFile(a + "/config.json"), readFile(b + "/config.json"));
  EXPECT_NE(readFile(a + "/model.safetensors"), readFile(c + "/model.safetensors"));
  EXPECT_EQ(readFile(a + "/config.json"), readFile(c + "/config.json"));
  EXPECT_EQ(readFile(a + "/model.safetensors").size(), readFile(c + "/model.safetensors").size());

  // Rewriting into the same directory reproduces the same bytes.
  ASSERT_TRUE(writeSyntheticCheckpoint(tinySpec(), a));
  EXPECT_EQ(readFile(a + "/model.safetensors"), readFile(b + "/model.safetensors"));
}

TEST_F(CheckpointTest, ShardedAndSingleFileGiveIdenticalTensors) {
  SyntheticModelSpec sharded = tinySpec();
  sharded.numFiles = 3;
  const std::string one = make(tinySpec(), "one");
  const std::string three = make(sharded, "three");
  EXPECT_FALSE(fs::exists(three + "/model.safetensors"));

  json index = json::parse(readFile(three + "/model.safetensors.index.json"));
  std::set<std::string> shards;
  uint64_t total = 0;
  for (const auto& [tensor, file] : index["weight_map"].items()) {
    shards.insert(file.get<std::string>());
    auto f = SafetensorsFile::open(three + "/" + file.get<std::string>());
    ASSERT_TRUE(f) << f.error();
    ASSERT_NE(f.value()->find(tensor), nullptr) << tensor;
    total += f.value()->find(tensor)->nbytes;
  }
  EXPECT_EQ(shards, (std::set<std::string>{"model-00001-of-00003.safetensors",
                                           "model-00002-of-00003.safetensors",
                                           "model-00003-of-00003.safetensors"}));
  EXPECT_EQ(index["metadata"]["total_size"].get<uint64_t>(), total);
  EXPECT_EQ(index["weight_map"].size(), 2u * (1 + 3 * 4));

  auto a = openOk(one);
  auto b = openOk(three);
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  for (uint32_t l = 0; l < 2; ++l) {
    EXPECT_EQ(a->gateWeight(l).value(), b->gateWeight(l).value());
    for (uint32_t e = 0; e < 4; ++e) {
      auto x = a->expert(l, e);
      auto y = b->expert(l, e);
      ASSERT_TRUE(x && y);
      EXPECT_EQ(x.value().w1, y.value().w1);
      EXPECT_EQ(x.value().w2, y.value().w2);
      EXPECT_EQ(x.value().w3, y.value().w3);
    }
  }
}

// The same generated float lands in each dtype through the project's own rounding.
TEST_F(CheckpointTest, DTypesAgreeThroughConversion) {
  SyntheticModelSpec spec = tinySpec();
  spec.dtype = DType::kF32;
  auto f32 = openOk(make(spec, "f32"));
  spec.dtype = DType::kBF16;
  auto bf16 = openOk(make(spec, "bf16"));
  spec.dtype = DType::kF16;
  auto f16 = openOk(make(spec, "f16"));
  ASSERT_TRUE(f32 && bf16 && f16);
  auto ref = f32->expert(1, 2).value().w2;
  auto b = bf16->expert(1, 2).value().w2;
  auto h = f16->expert(1, 2).value().w2;
  ASSERT_EQ(ref.size(), b.size());
  ASSERT_EQ(ref.size(), h.size());
  for (size_t i = 0; i < ref.size(); ++i) {
    EXPECT_EQ(b[i], bf16ToFloat(floatToBf16(ref[i]))) << i;
    EXPECT_EQ(h[i], f16ToFloat(floatToF16(ref[i]))) << i;
  }
  EXPECT_EQ(json::parse(readFile(path("f16/config.json")))["torch_dtype"], "float16");
}

TEST_F(CheckpointTest, RewritingWithOtherLayoutReplacesIt) {
  SyntheticModelSpec sharded = tinySpec();
  sharded.numFiles = 2;
  const std::string d = make(sharded);
  ASSERT_TRUE(writeSyntheticCheckpoint(tinySpec(), d));
  EXPECT_FALSE(fs::exists(d + "/model.safetensors.index.json"));
  ASSERT_TRUE(writeSyntheticCheckpoint(sharded, d));
  EXPECT_FALSE(fs::exists(d + "/model.safetensors"));
  EXPECT_NE(openOk(d), nullptr);
}

TEST_F(CheckpointTest, GeneratorRejectsBadSpecs) {
  SyntheticModelSpec s = tinySpec();
  s.topK = 5;
  Status st = writeSyntheticCheckpoint(s, path("x"));
  EXPECT_FALSE(st);
  EXPECT_TRUE(contains(st.message(), "top-k 5")) << st.message();
  s = tinySpec();
  s.numFiles = 11;  // only 2 gates + 8 experts to spread
  st = writeSyntheticCheckpoint(s, path("x"));
  EXPECT_FALSE(st);
  EXPECT_TRUE(contains(st.message(), "files 11")) << st.message();
  s = tinySpec();
  s.hiddenSize = 0;
  EXPECT_FALSE(writeSyntheticCheckpoint(s, path("x")));
}

TEST_F(CheckpointTest, MissingConfig) {
  const std::string d = path("empty");
  fs::create_directories(d);
  EXPECT_EQ(openError(d), d + "/config.json: missing");
}

TEST_F(CheckpointTest, ConfigInvalidJson) {
  const std::string d = make(tinySpec());
  writeFile(d + "/config.json", "{\"model_type\": \"mixtral\",");
  std::string e = openError(d);
  EXPECT_TRUE(contains(e, d + "/config.json: invalid JSON at byte")) << e;
}

TEST_F(CheckpointTest, UnsupportedModelType) {
  const std::string d = make(tinySpec());
  editConfig(d, [](json& c) { c["model_type"] = "llama"; });
  std::string e = openError(d);
  EXPECT_TRUE(contains(e, d + "/config.json")) << e;
  EXPECT_TRUE(contains(e, "model_type 'llama' is not supported (supported: mixtral)")) << e;
}

TEST_F(CheckpointTest, MissingKey) {
  const std::string d = make(tinySpec());
  editConfig(d, [](json& c) { c.erase("hidden_size"); });
  EXPECT_EQ(openError(d), d + "/config.json: key 'hidden_size' missing");
}

TEST_F(CheckpointTest, KeyNotPositiveInteger) {
  const std::string d = make(tinySpec());
  for (json bad : {json(0), json(-3), json("16"), json(16.5), json(1ull << 33)}) {
    editConfig(d, [&](json& c) { c["num_local_experts"] = bad; });
    std::string e = openError(d);
    EXPECT_TRUE(contains(e, d + "/config.json: key 'num_local_experts' must be a positive integer"))
        << e;
  }
}

TEST_F(CheckpointTest, TopKLargerThanExperts) {
  const std::string d = make(tinySpec());
  editConfig(d, [](json& c) { c["num_experts_per_tok"] = 5; });
  std::string e = openError(d);
  EXPECT_TRUE(contains(e, d + "/config.json: num_experts_per_tok 5 must be between 1 and "
                              "num_local_experts (4)"))
      << e;
}

TEST_F(CheckpointTest, NoWeightFiles) {
  const std::string d = make(tinySpec());
  fs::remove(d + "/model.safetensors");
  std::string e = openError(d);
  EXPECT_TRUE(contains(e, d)) << e;
  EXPECT_TRUE(contains(e, "neither model.safetensors nor model.safetensors.index.json")) << e;
}

TEST_F(CheckpointTest, CorruptWeightFileNamesIt) {
  const std::string d = make(tinySpec());
  fs::resize_file(d + "/model.safetensors", 5);
  std::string e = openError(d);
  EXPECT_TRUE(contains(e, d + "/model.safetensors: file is 5 bytes")) << e;
}

TEST_F(CheckpointTest, MissingTensorFailsWhenRequested) {
  const std::string d = make(tinySpec());
  const std::string dropped = expertName(0, 1, "w3");
  rewriteWithout(d + "/model.safetensors", dropped);
  auto ckpt = openOk(d);  // lazily checked: processes that never serve expert 1 are unaffected
  ASSERT_NE(ckpt, nullptr);
  EXPECT_TRUE(ckpt->expert(0, 0));
  auto ex = ckpt->expert(0, 1);
  ASSERT_FALSE(ex);
  EXPECT_EQ(ex.error(), "tensor " + dropped + " missing from " + d);
}

TEST_F(CheckpointTest, IndexListsTensorMissingFromShard) {
  SyntheticModelSpec spec = tinySpec();
  spec.numFiles = 2;
  const std::string d = make(spec);
  const std::string dropped = expertName(1, 3, "w2");
  json index = json::parse(readFile(d + "/model.safetensors.index.json"));
  const std::string shard = d + "/" + index["weight_map"][dropped].get<std::string>();
  rewriteWithout(shard, dropped);
  std::string e = openError(d);
  EXPECT_TRUE(contains(e, d + "/model.safetensors.index.json")) << e;
  EXPECT_TRUE(
      contains(e, "tensor " + dropped + " is listed in weight_map but missing from " + shard))
      << e;
}

TEST_F(CheckpointTest, IndexNamesMissingShard) {
  SyntheticModelSpec spec = tinySpec();
  spec.numFiles = 2;
  const std::string d = make(spec);
  fs::remove(d + "/model-00002-of-00002.safetensors");
  std::string e = openError(d);
  EXPECT_TRUE(contains(e, d + "/model-00002-of-00002.safetensors: cannot open")) << e;
}

TEST_F(CheckpointTest, IndexWithoutWeightMap) {
  SyntheticModelSpec spec = tinySpec();
  spec.numFiles = 2;
  const std::string d = make(spec);
  writeFile(d + "/model.safetensors.index.json", R"({"metadata": {}})");
  EXPECT_EQ(openError(d),
            d + "/model.safetensors.index.json: 'weight_map' missing or not a JSON object");
  writeFile(d + "/model.safetensors.index.json", R"({"weight_map": {"x": "../../etc/passwd"}})");
  EXPECT_TRUE(contains(openError(d), "must be a file name inside the checkpoint directory"));
}

TEST_F(CheckpointTest, ShapeMismatchBetweenConfigAndWeights) {
  const std::string d = make(tinySpec());
  editConfig(d, [](json& c) { c["hidden_size"] = 32; });
  auto ckpt = openOk(d);
  ASSERT_NE(ckpt, nullptr);
  auto gate = ckpt->gateWeight(0);
  ASSERT_FALSE(gate);
  EXPECT_EQ(gate.error(), "tensor " + kGate0 + ": shape [4,32] expected from config.json, file " +
                              d + "/model.safetensors has [4,16]");
  auto ex = ckpt->expert(1, 0);
  ASSERT_FALSE(ex);
  EXPECT_TRUE(contains(ex.error(), "shape [24,32] expected from config.json")) << ex.error();
}

TEST_F(CheckpointTest, LayerOutOfRange) {
  auto ckpt = openOk(make(tinySpec()));
  ASSERT_NE(ckpt, nullptr);
  auto gate = ckpt->gateWeight(2);
  ASSERT_FALSE(gate);
  EXPECT_TRUE(contains(gate.error(), "layer 2 is not a MoE layer")) << gate.error();
  auto ex = ckpt->expert(7, 0);
  ASSERT_FALSE(ex);
  EXPECT_TRUE(contains(ex.error(), "layer 7 is not a MoE layer")) << ex.error();
}

TEST_F(CheckpointTest, ExpertOutOfRange) {
  auto ckpt = openOk(make(tinySpec()));
  ASSERT_NE(ckpt, nullptr);
  auto ex = ckpt->expert(0, 4);
  ASSERT_FALSE(ex);
  EXPECT_TRUE(contains(ex.error(), "expert 4 out of range")) << ex.error();
  EXPECT_TRUE(contains(ex.error(), "has 4 experts")) << ex.error();
}

TEST_F(CheckpointTest, LoadF32ByName) {
  auto ckpt = openOk(make(tinySpec()));
  ASSERT_NE(ckpt, nullptr);
  auto ok = ckpt->loadF32(kGate0, {4, 16});
  ASSERT_TRUE(ok) << ok.error();
  EXPECT_EQ(ok.value(), ckpt->gateWeight(0).value());
  auto wrong = ckpt->loadF32(kGate0, {16, 4});
  ASSERT_FALSE(wrong);
  EXPECT_TRUE(contains(wrong.error(), "shape [16,4] expected from config.json")) << wrong.error();
  auto missing = ckpt->loadF32("model.embed_tokens.weight", {32000, 16});
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error(), "tensor model.embed_tokens.weight missing from " + ckpt->dir());
}

}  // namespace
}  // namespace moe
