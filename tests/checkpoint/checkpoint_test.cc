// Checkpoint directory tests on tiny synthetic models: the generator's determinism and value
// ranges, single-file vs sharded layouts, each config.json / weight error naming its cause, and
// for every other family (Qwen2/3-MoE, OLMoE, DeepSeek-V2/V3, MoE++, Yuan 2.0-M32, Nemotron-H,
// LongCat-Flash) its config keys, MoE-layer rule and tensor names.
#include "common/checkpoint.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <functional>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "tests/checkpoint/test_util.h"
#include "tools/synthetic_checkpoint.h"

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

  // Applies `edit` to DIR/config.json, expects open() to fail naming config.json and `want`, then
  // restores the file.
  template <typename Edit>
  void expectConfigError(const std::string& d, Edit edit, const std::string& want) {
    const std::string cfg = d + "/config.json";
    const std::string saved = readFile(cfg);
    editConfig(d, edit);
    std::string e = openError(d);
    EXPECT_TRUE(contains(e, cfg + ": ")) << e;
    EXPECT_TRUE(contains(e, want)) << e;
    writeFile(cfg, saved);
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

// The FP8 byte nearest to v (brute force over the 256 codes; NaN codes skipped).
uint8_t nearestFp8(float v, DType t) {
  uint8_t best = 0;
  float bestErr = std::numeric_limits<float>::infinity();
  for (int c = 0; c < 256; ++c) {
    const float f = t == DType::kF8E4M3 ? f8e4m3ToFloat(uint8_t(c)) : f8e5m2ToFloat(uint8_t(c));
    if (!std::isfinite(f)) continue;
    if (std::abs(f - v) < bestErr) {
      bestErr = std::abs(f - v);
      best = uint8_t(c);
    }
  }
  return best;
}

TEST(Fp8, DecodesTheOcpFormats) {
  const struct {
    uint8_t byte;
    float e4m3, e5m2;
  } cases[] = {
      {0x00, 0.0f, 0.0f},
      {0x38, 1.0f, 0.5f},
      {0xb8, -1.0f, -0.5f},
      {0x7b, 352.0f, 57344.0f},
      {0x40, 2.0f, 2.0f},
      {0x3c, 1.5f, 1.0f},
      {0x01, 0.001953125f, 1.52587890625e-05f},  // subnormals: 2^-9, 2^-16
  };
  for (const auto& tc : cases) {
    EXPECT_EQ(f8e4m3ToFloat(tc.byte), tc.e4m3) << int(tc.byte);
    EXPECT_EQ(f8e5m2ToFloat(tc.byte), tc.e5m2) << int(tc.byte);
  }
  EXPECT_EQ(f8e4m3ToFloat(0x7e), 448.0f);  // E4M3's largest; the same byte is NaN in E5M2
  EXPECT_TRUE(std::isnan(f8e5m2ToFloat(0x7e)));
  EXPECT_TRUE(std::isnan(f8e4m3ToFloat(0x7f)));
  EXPECT_TRUE(std::isinf(f8e5m2ToFloat(0x7c)));
}

// A DeepSeek-V3-style FP8 checkpoint, written with real FP8 bytes and 128×128 block scales
// (`weight_scale_inv`, amax/448 per block), loads to exactly its dequantized reference
// (fp8 value × block scale), and to within FP8 precision of the weights it was quantized from.
TEST_F(CheckpointTest, Fp8BlockScaledCheckpointMatchesItsDequantizedReference) {
  SyntheticModelSpec spec = tinySpec();
  spec.hiddenSize = 200;        // 2 column blocks, the second partial
  spec.intermediateSize = 136;  // 2 row blocks, the second partial
  spec.dtype = DType::kF32;
  for (DType fp8 : {DType::kF8E4M3, DType::kF8E5M2}) {
    SCOPED_TRACE(std::string(dtypeName(fp8)));
    const std::string sub = std::string("fp8-") + std::string(dtypeName(fp8));
    const std::string d = make(spec, sub);
    const float maxCode = fp8 == DType::kF8E4M3 ? 448.0f : 57344.0f;
    std::map<std::string, std::vector<float>> reference;  // name -> dequantized values
    SafetensorsWriter w;
    {  // read (and unmap) the fp32 file before rewriting it
      auto f = SafetensorsFile::open(d + "/model.safetensors");
      ASSERT_TRUE(f) << f.error();
      for (const TensorInfo& t : f.value()->tensors()) {
        auto b = f.value()->bytes(t);
        if (!contains(t.name, ".experts.") || t.shape.size() != 2) {
          w.add(t.name, t.dtype, t.shape, std::vector<std::byte>(b.begin(), b.end()));
          continue;
        }
        const uint64_t R = t.shape[0], C = t.shape[1], br = (R + 127) / 128, bc = (C + 127) / 128;
        std::vector<float> v(R * C);
        convertToF32(t.dtype, b, v);
        std::vector<float> scale(br * bc, 0.0f);
        for (uint64_t r = 0; r < R; ++r) {
          for (uint64_t c = 0; c < C; ++c) {
            float& s = scale[(r / 128) * bc + c / 128];
            s = std::max(s, std::abs(v[r * C + c]) / maxCode);
          }
        }
        std::vector<std::byte> q(R * C);
        std::vector<float>& ref = reference[t.name];
        ref.resize(R * C);
        for (uint64_t r = 0; r < R; ++r) {
          for (uint64_t c = 0; c < C; ++c) {
            const float s = scale[(r / 128) * bc + c / 128];
            const uint8_t code = nearestFp8(v[r * C + c] / s, fp8);
            q[r * C + c] = std::byte{code};
            const float decoded = fp8 == DType::kF8E4M3 ? f8e4m3ToFloat(code) : f8e5m2ToFloat(code);
            ref[r * C + c] = decoded * s;
            // FP8 keeps 3 (E4M3) or 2 (E5M2) mantissa bits: within 1/8 of the block's scale·|v|.
            EXPECT_LE(std::abs(ref[r * C + c] - v[r * C + c]),
                      0.126f * std::abs(v[r * C + c]) + s * 0.02f)
                << t.name;
          }
        }
        std::vector<std::byte> scaleBytes(scale.size() * 4);
        std::memcpy(scaleBytes.data(), scale.data(), scaleBytes.size());
        w.add(t.name, fp8, t.shape, std::move(q));
        w.add(t.name + "_scale_inv", DType::kF32, {br, bc}, std::move(scaleBytes));
      }
    }
    ASSERT_TRUE(w.write(d + "/model.safetensors"));
    auto ckpt = openOk(d);
    ASSERT_TRUE(ckpt);
    EXPECT_EQ(ckpt->expertsDType(), fp8);
    ASSERT_FALSE(reference.empty());
    for (uint32_t layer : {0u, 1u}) {
      for (uint32_t e = 0; e < spec.numExperts; ++e) {
        auto t = ckpt->expert(layer, e);
        ASSERT_TRUE(t) << t.error();
        const std::pair<const char*, const std::vector<float>*> mats[] = {
            {"w1", &t.value().w1}, {"w3", &t.value().w3}, {"w2", &t.value().w2}};
        for (auto [w, got] : mats) {
          const std::vector<float>& want = reference.at(expertName(layer, e, w));
          ASSERT_EQ(got->size(), want.size());
          for (size_t i = 0; i < want.size(); ++i) {
            ASSERT_EQ((*got)[i], want[i]) << expertName(layer, e, w) << " element " << i;
          }
        }
      }
    }
  }
}

// A dtype no loader handles is an error naming the tensor and the dtype, never a crash.
TEST_F(CheckpointTest, UnknownDtypeNamesTensorAndDtype) {
  const std::string d = make(tinySpec(), "unknown-dtype");
  const std::string file = d + "/model.safetensors";
  std::string bytes = readFile(file);
  const std::string from = "\"dtype\":\"BF16\"", to = "\"dtype\":\"BOOL\"";
  const size_t at = bytes.find(from);
  ASSERT_NE(at, std::string::npos);
  bytes.replace(at, from.size(), to);  // same length: offsets stay valid
  writeFile(file, bytes);
  const std::string e = openError(d);
  EXPECT_TRUE(contains(e, "unsupported dtype BOOL")) << e;
  EXPECT_TRUE(contains(e, "tensor model.layers.")) << e;
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
  // Every row of the family table, old and new families alike.
  for (const char* type :
       {"(supported: mixtral, qwen2_moe, qwen3_moe", "olmoe", "deepseek_v2", "deepseek_v3",
        "glm4_moe", "dots1", "qwen3_next", "minimax_m2", "hunyuan_v1_moe", "ernie4_5_moe", "jamba",
        "granitemoeshared", "dbrx", "llama4_text", "gpt_oss", "MoE++, moe_plus_plus, yuan;",
        "vision-language wrappers: qwen3_5_moe, qwen3_vl_moe, glm4v_moe, qwen3_omni_moe)"}) {
    EXPECT_TRUE(contains(e, std::string("model_type 'llama' is not supported ") + "")) << e;
    EXPECT_TRUE(contains(e, type)) << type << ": " << e;
  }
}

// ---- The family table: aliases, transformers 5 configs, fused layouts ----

// Bytes of an f32 tensor whose element i is `base` + i.
std::vector<std::byte> iota32(size_t n, float base) {
  std::vector<std::byte> out(n * 4);
  for (size_t i = 0; i < n; ++i) {
    const float v = base + static_cast<float>(i);
    std::memcpy(out.data() + i * 4, &v, 4);
  }
  return out;
}

// A one-layer qwen3_moe checkpoint (H 4, I 2, E 2, top-1) as transformers 5 saves it: config with
// num_local_experts, experts fused as gate_up_proj [E, 2I, H] + down_proj [E, H, I] (or the
// given gate_up shape).
std::string writeFusedQwen3(const std::string& d, std::vector<uint64_t> gateUpShape) {
  fs::create_directories(d);
  writeFile(d + "/config.json", R"({"model_type": "qwen3_moe", "hidden_size": 4,
      "moe_intermediate_size": 2, "num_local_experts": 2, "num_experts_per_tok": 1,
      "num_hidden_layers": 1, "norm_topk_prob": true})");
  SafetensorsWriter w;
  const std::string p = "model.layers.0.mlp.";
  w.add(p + "gate.weight", DType::kF32, {2, 4}, iota32(8, 0));
  size_t n = 1;
  for (uint64_t v : gateUpShape) n *= v;
  w.add(p + "experts.gate_up_proj", DType::kF32, gateUpShape, iota32(n, 100));
  w.add(p + "experts.down_proj", DType::kF32, {2, 4, 2}, iota32(16, 500));
  EXPECT_TRUE(w.write(d + "/model.safetensors"));
  return d;
}

TEST_F(CheckpointTest, Transformers5FusedQwen3LoadsEachExpertFromItsSlice) {
  auto ckpt = openOk(writeFusedQwen3(path("fused"), {2, 4, 4}));
  ASSERT_NE(ckpt, nullptr);
  EXPECT_EQ(ckpt->config().numExperts, 2u);  // from num_local_experts
  EXPECT_EQ(ckpt->config().familyName, "Qwen3-MoE");
  auto e1 = ckpt->expert(0, 1);
  ASSERT_TRUE(e1) << e1.error();
  // Expert 1's [2I, H] = [4, 4] block starts at element 16: rows 0-1 gate, rows 2-3 up (chunk).
  EXPECT_EQ(e1.value().w1, (std::vector<float>{116, 117, 118, 119, 120, 121, 122, 123}));
  EXPECT_EQ(e1.value().w3, (std::vector<float>{124, 125, 126, 127, 128, 129, 130, 131}));
  EXPECT_EQ(e1.value().w2, (std::vector<float>{508, 509, 510, 511, 512, 513, 514, 515}));
}

TEST_F(CheckpointTest, FusedTensorOfTheWrongShapeNamesItAndTheExpectedShape) {
  auto ckpt = openOk(writeFusedQwen3(path("fused-bad"), {2, 4, 3}));
  ASSERT_NE(ckpt, nullptr);
  auto e = ckpt->expert(0, 0);
  ASSERT_FALSE(e);
  EXPECT_TRUE(contains(e.error(),
                       "tensor model.layers.0.mlp.experts.gate_up_proj: shape "
                       "[2,4,4] expected from config.json"))
      << e.error();
  EXPECT_TRUE(contains(e.error(), "has [2,4,3]")) << e.error();
}

TEST_F(CheckpointTest, ContradictoryAliasesNameBothKeysAndTheFamily) {
  const std::string d = writeFusedQwen3(path("contradict"), {2, 4, 4});
  editConfig(d, [](json& c) { c["num_experts"] = 4; });
  const std::string e = openError(d);
  EXPECT_TRUE(contains(e,
                       "keys 'num_experts' (4) and 'num_local_experts' (2) contradict each "
                       "other (Qwen3-MoE"))
      << e;
  editConfig(d, [](json& c) { c["num_experts"] = 2; });  // agreeing aliases are fine
  EXPECT_NE(openOk(d), nullptr);
}

// A nemotron_h checkpoint (H 4, I 2, E 2, top-1, shared width 3) with layers
// [mamba, moe, attention] (legacy names): per-expert up/down only under backbone.layers. as
// saved, or (fused) the in-memory experts.up_proj [E, I, H] + down_proj [E, H, I] under
// model.layers.
std::string writeNemotronH(const std::string& d, bool fused) {
  fs::create_directories(d);
  writeFile(d + "/config.json", R"({"model_type": "nemotron_h", "hidden_size": 4,
      "moe_intermediate_size": 2, "n_routed_experts": 2, "num_experts_per_tok": 1,
      "moe_shared_expert_intermediate_size": 3, "n_group": 1, "topk_group": 1,
      "norm_topk_prob": true, "routed_scaling_factor": 2.5, "mlp_hidden_act": "relu2",
      "mlp_bias": false, "moe_latent_size": null, "num_hidden_layers": 52,
      "layers_block_type": ["mamba", "moe", "attention"]})");
  SafetensorsWriter w;
  const std::string p = std::string(fused ? "model" : "backbone") + ".layers.1.mixer.";
  w.add(p + "gate.weight", DType::kF32, {2, 4}, iota32(8, 0));
  w.add(p + "gate.e_score_correction_bias", DType::kF32, {2}, iota32(2, 0));
  if (fused) {
    w.add(p + "experts.up_proj", DType::kF32, {2, 2, 4}, iota32(16, 100));
    w.add(p + "experts.down_proj", DType::kF32, {2, 4, 2}, iota32(16, 500));
  } else {
    for (int e = 0; e < 2; ++e) {
      const std::string x = p + "experts." + std::to_string(e) + ".";
      w.add(x + "up_proj.weight", DType::kF32, {2, 4}, iota32(8, 100 + 8 * e));
      w.add(x + "down_proj.weight", DType::kF32, {4, 2}, iota32(8, 500 + 8 * e));
    }
  }
  w.add(p + "shared_experts.up_proj.weight", DType::kF32, {3, 4}, iota32(12, 900));
  w.add(p + "shared_experts.down_proj.weight", DType::kF32, {4, 3}, iota32(12, 950));
  EXPECT_TRUE(w.write(d + "/model.safetensors"));
  return d;
}

TEST_F(CheckpointTest, NemotronHNonGatedExpertsInBothLayouts) {
  for (bool fused : {false, true}) {
    SCOPED_TRACE(fused ? "fused, model.layers." : "per expert, backbone.layers.");
    auto ckpt = openOk(writeNemotronH(path(fused ? "nemo-fused" : "nemo"), fused));
    ASSERT_NE(ckpt, nullptr);
    const ModelConfig& c = ckpt->config();
    EXPECT_EQ(c.familyName, "Nemotron-H");
    EXPECT_EQ(c.numLayers, 3u);  // the block types' length, not num_hidden_layers
    EXPECT_EQ(c.moeLayers, std::vector<uint32_t>{1});
    EXPECT_EQ(c.expertActivation, ExpertActivation::kRelu2);
    EXPECT_EQ(c.sharedActivation, ExpertActivation::kRelu2);
    EXPECT_EQ(c.sharedIntermediateSize, 3u);
    EXPECT_FALSE(c.sharedExpertGated);
    EXPECT_EQ(c.routing.describe(),
              "sigmoid, + correction bias for choice, groups (top-2 sum, keep 1 of 1, others "
              "-inf), top-k, renormalize (+1e-20), x 2.5");
    auto e1 = ckpt->expert(1, 1);
    ASSERT_TRUE(e1) << e1.error();
    EXPECT_TRUE(e1.value().w1.empty());  // no gate, not a zero one
    EXPECT_EQ(e1.value().w3, (std::vector<float>{108, 109, 110, 111, 112, 113, 114, 115}));
    EXPECT_EQ(e1.value().w2, (std::vector<float>{508, 509, 510, 511, 512, 513, 514, 515}));
    auto sh = ckpt->sharedExpert(1);
    ASSERT_TRUE(sh) << sh.error();
    EXPECT_TRUE(sh.value().w1.empty());
    EXPECT_EQ(sh.value().w3.size(), 12u);
    EXPECT_EQ(sh.value().w2.front(), 950.0f);
    ASSERT_TRUE(ckpt->gateWeight(1));
    ASSERT_TRUE(ckpt->scoreCorrectionBias(1));
    EXPECT_FALSE(ckpt->expert(0, 0));  // a Mamba layer
  }
}

TEST_F(CheckpointTest, NemotronHLayerTypesUnderEveryName) {
  const std::string d = writeNemotronH(path("nemo-types"), false);
  const std::string saved = readFile(d + "/config.json");
  auto moeLayers = [&](auto edit) {
    writeFile(d + "/config.json", saved);
    editConfig(d, [&](json& c) {
      c.erase("layers_block_type");
      edit(c);
    });
    auto ckpt = Checkpoint::open(d);
    EXPECT_TRUE(ckpt) << ckpt.error();
    return ckpt ? std::make_pair(ckpt.value()->config().numLayers, ckpt.value()->config().moeLayers)
                : std::make_pair(0u, std::vector<uint32_t>{});
  };
  using P = std::pair<uint32_t, std::vector<uint32_t>>;
  // attribute_map alias; the legacy pattern (M mamba, E moe, * attention, - mlp); the default
  // [linear_attention, moe, full_attention, mlp].
  EXPECT_EQ(moeLayers([](json& c) {
              c["layer_types"] = {"full_attention", "moe", "mlp", "moe"};
            }),
            (P{4, {1, 3}}));
  EXPECT_EQ(moeLayers([](json& c) { c["hybrid_override_pattern"] = "ME*E-"; }), (P{5, {1, 3}}));
  EXPECT_EQ(moeLayers([](json&) {}), (P{4, {1}}));
  // layers_block_type wins over the legacy pattern, as in NemotronHConfig.
  EXPECT_EQ(moeLayers([](json& c) {
              c["layers_block_type"] = {"moe", "mlp"};
              c["hybrid_override_pattern"] = "-E";
            }),
            (P{2, {0}}));
}

TEST_F(CheckpointTest, NemotronHConfigErrorsNameTheKeys) {
  const std::string d = writeNemotronH(path("nemo-errors"), false);
  auto expectError = [&](auto edit, const std::string& want) { expectConfigError(d, edit, want); };
  expectError([](json& c) { c["moe_latent_size"] = 2; }, "key 'moe_latent_size' is 2");
  expectError([](json& c) { c["mlp_hidden_act"] = "silu"; },
              "key 'mlp_hidden_act' must be one of relu2 (got \"silu\")");
  expectError([](json& c) { c["mlp_bias"] = true; }, "key 'mlp_bias' is true");
  expectError([](json& c) { c.erase("moe_shared_expert_intermediate_size"); },
              "key 'moe_shared_expert_intermediate_size' missing (Nemotron-H)");
  expectError(
      [](json& c) {
        c["layers_block_type"] = {"moe", "conv"};
      },
      "key 'layers_block_type' entry 1 is \"conv\"");
  expectError([](json& c) { c["layers_block_type"] = "ME"; },
              "key 'layers_block_type' must be a list of layer types");
  expectError([](json& c) { c["layer_types"] = {"moe"}; },
              "keys 'layers_block_type' ([\"mamba\",\"moe\",\"attention\"]) and 'layer_types'");
  expectError(
      [](json& c) {
        c.erase("layers_block_type");
        c["hybrid_override_pattern"] = "MEX";
      },
      "key 'hybrid_override_pattern' has 'X'");
  expectError([](json& c) { c["layers_block_type"] = {"mamba", "mlp"}; }, "no MoE layers");
  EXPECT_NE(openOk(d), nullptr);  // every edit was undone
}

// A longcat_flash checkpoint (H 4, I 2, E 2 FFN experts + Z 1 identity expert, top-2, one
// decoder layer): per expert as saved (the identity expert's gate/up rows written, no down) or
// the in-memory gate_up_proj [E + Z, 2I, H] + down_proj [E, H, I] (or the given shapes).
std::string writeLongcat(const std::string& d, bool fused,
                         std::vector<uint64_t> gateUpShape = {3, 4, 4},
                         std::vector<uint64_t> downShape = {2, 4, 2}) {
  fs::create_directories(d);
  writeFile(d + "/config.json", R"({"model_type": "longcat_flash", "hidden_size": 4,
      "expert_ffn_hidden_size": 2, "ffn_hidden_size": 6, "n_routed_experts": 2,
      "zero_expert_num": 1, "moe_topk": 2, "num_layers": 1, "routed_scaling_factor": 1.5})");
  SafetensorsWriter w;
  const std::string p = "model.layers.0.mlp.";
  w.add(p + "router.classifier.weight", DType::kF32, {3, 4}, iota32(12, 0));
  w.add(p + "router.classifier.bias", DType::kF32, {3}, iota32(3, 40));
  w.add(p + "router.e_score_correction_bias", DType::kF32, {3}, iota32(3, 50));
  auto numel = [](const std::vector<uint64_t>& s) {
    size_t n = 1;
    for (uint64_t v : s) n *= v;
    return n;
  };
  if (fused) {
    w.add(p + "experts.gate_up_proj", DType::kF32, gateUpShape, iota32(numel(gateUpShape), 100));
    w.add(p + "experts.down_proj", DType::kF32, downShape, iota32(numel(downShape), 500));
  } else {
    for (int e = 0; e < 3; ++e) {
      const std::string x = p + "experts." + std::to_string(e) + ".";
      w.add(x + "gate_proj.weight", DType::kF32, {2, 4}, iota32(8, 100 + 16 * e));
      w.add(x + "up_proj.weight", DType::kF32, {2, 4}, iota32(8, 108 + 16 * e));
      if (e < 2) w.add(x + "down_proj.weight", DType::kF32, {4, 2}, iota32(8, 500 + 8 * e));
    }
  }
  EXPECT_TRUE(w.write(d + "/model.safetensors"));
  return d;
}

TEST_F(CheckpointTest, LongcatFlashIdentityExpertsInBothLayouts) {
  for (bool fused : {false, true}) {
    SCOPED_TRACE(fused ? "fused" : "per expert");
    auto ckpt = openOk(writeLongcat(path(fused ? "longcat-fused" : "longcat"), fused));
    ASSERT_NE(ckpt, nullptr);
    const ModelConfig& c = ckpt->config();
    EXPECT_EQ(c.familyName, "LongCat-Flash");
    EXPECT_EQ(c.numExperts, 3u);  // scored by the router: E + Z
    EXPECT_EQ(c.numFfnExperts, 2u);
    EXPECT_EQ(c.intermediateSize, 2u);  // expert_ffn_hidden_size, not ffn_hidden_size
    EXPECT_EQ(c.topK, 2u);
    EXPECT_EQ(c.numLayers, 1u);
    EXPECT_EQ(c.moeLayers, std::vector<uint32_t>{0});
    EXPECT_TRUE(c.identityZeroExperts);
    EXPECT_EQ(c.expertKind(1), ExpertKind::kFfn);
    EXPECT_EQ(c.expertKind(2), ExpertKind::kCopy);
    EXPECT_EQ(c.expertInputScale(), 1.0f);  // the identity sees x, not k·x (MoE++ only)
    EXPECT_EQ(c.routing.describe(), "softmax, + correction bias for choice, top-k, x 1.5");
    EXPECT_FALSE(c.routing.routerBias);
    auto g = ckpt->gateWeight(0);
    ASSERT_TRUE(g) << g.error();
    EXPECT_EQ(g.value().size(), 12u);
    auto b = ckpt->scoreCorrectionBias(0);
    ASSERT_TRUE(b) << b.error();
    EXPECT_EQ(b.value(), (std::vector<float>{50, 51, 52}));
    auto e1 = ckpt->expert(0, 1);
    ASSERT_TRUE(e1) << e1.error();
    EXPECT_EQ(e1.value().w1, (std::vector<float>{116, 117, 118, 119, 120, 121, 122, 123}));
    EXPECT_EQ(e1.value().w3, (std::vector<float>{124, 125, 126, 127, 128, 129, 130, 131}));
    EXPECT_EQ(e1.value().w2, (std::vector<float>{508, 509, 510, 511, 512, 513, 514, 515}));
    auto identity = ckpt->expert(0, 2);
    ASSERT_FALSE(identity);
    EXPECT_TRUE(contains(identity.error(), "is an identity expert (zero_expert_num), not an FFN"))
        << identity.error();
  }
}

TEST_F(CheckpointTest, LongcatFlashFusedShapesMustBeExact) {
  // gate_up_proj without the identity expert's rows, or down_proj with them: named, with the
  // shape config.json implies.
  auto noZeroRows = openOk(writeLongcat(path("lc-gu"), true, {2, 4, 4}));
  ASSERT_NE(noZeroRows, nullptr);
  auto e = noZeroRows->expert(0, 0);
  ASSERT_FALSE(e);
  EXPECT_TRUE(contains(e.error(),
                       "tensor model.layers.0.mlp.experts.gate_up_proj: shape "
                       "[3,4,4] expected from config.json"))
      << e.error();
  auto downWithZero = openOk(writeLongcat(path("lc-down"), true, {3, 4, 4}, {3, 4, 2}));
  ASSERT_NE(downWithZero, nullptr);
  e = downWithZero->expert(0, 0);
  ASSERT_FALSE(e);
  EXPECT_TRUE(contains(e.error(),
                       "tensor model.layers.0.mlp.experts.down_proj: shape "
                       "[2,4,2] expected from config.json"))
      << e.error();
}

TEST_F(CheckpointTest, LongcatFlashConfigKeys) {
  const std::string d = writeLongcat(path("lc-config"), false);
  // transformers 4 writes num_hidden_layers = 2 × num_layers and num_experts_per_tok too.
  editConfig(d, [](json& c) {
    c["num_hidden_layers"] = 2;
    c["num_experts_per_tok"] = 2;
    c["router_bias"] = true;
  });
  auto ckpt = openOk(d);
  ASSERT_NE(ckpt, nullptr);
  EXPECT_TRUE(ckpt->config().routing.routerBias);
  auto rb = ckpt->routerBias(0);
  ASSERT_TRUE(rb) << rb.error();
  EXPECT_EQ(rb.value(), (std::vector<float>{40, 41, 42}));
  auto expectError = [&](auto edit, const std::string& want) { expectConfigError(d, edit, want); };
  expectError([](json& c) { c["num_hidden_layers"] = 1; },
              "key 'num_hidden_layers' (1) must be twice 'num_layers' (1)");
  expectError([](json& c) { c["num_experts_per_tok"] = 1; },
              "keys 'moe_topk' (2) and 'num_experts_per_tok' (1) contradict");
  expectError(
      [](json& c) {
        c["moe_topk"] = 4;
        c.erase("num_experts_per_tok");
      },
      "moe_topk 4 must be between 1 and n_routed_experts + zero_expert_num (3)");
  expectError([](json& c) { c["zero_expert_num"] = -1; },
              "key 'zero_expert_num' must be a non-negative integer");
  expectError([](json& c) { c.erase("expert_ffn_hidden_size"); },
              "key 'expert_ffn_hidden_size' missing (LongCat-Flash)");
  EXPECT_NE(openOk(d), nullptr);  // every edit was undone
  // Without identity experts it is a plain softmax family.
  editConfig(d, [](json& c) { c["zero_expert_num"] = 0; });
  auto plain = openOk(d);
  ASSERT_NE(plain, nullptr);
  EXPECT_EQ(plain->config().numExperts, 2u);
  EXPECT_FALSE(plain->config().identityZeroExperts);
}

TEST_F(CheckpointTest, MissingKey) {
  const std::string d = make(tinySpec());
  editConfig(d, [](json& c) { c.erase("hidden_size"); });
  EXPECT_EQ(openError(d), d + "/config.json: key 'hidden_size' missing (Mixtral)");
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

// ---- Families other than Mixtral ----------------------------------------------------------------

SyntheticModelSpec familySpec(const std::string& modelType, uint32_t experts = 4,
                              uint32_t layers = 3) {
  SyntheticModelSpec s = tinySpec();
  s.modelType = modelType;
  s.numExperts = experts;
  s.numLayers = layers;
  s.dtype = DType::kF32;
  return s;
}

std::set<std::string> tensorNames(const std::string& file) {
  std::set<std::string> names;
  auto f = SafetensorsFile::open(file);
  EXPECT_TRUE(f) << f.error();
  if (f) {
    for (const TensorInfo& t : f.value()->tensors()) names.insert(t.name);
  }
  return names;
}

// Loads the gate and every routed expert of every MoE layer and checks their sizes.
void expectRoutedTensors(const Checkpoint& ckpt) {
  const ModelConfig& c = ckpt.config();
  for (uint32_t l : c.moeLayers) {
    auto gate = ckpt.gateWeight(l);
    ASSERT_TRUE(gate) << gate.error();
    EXPECT_EQ(gate.value().size(), uint64_t{c.numExperts} * c.hiddenSize);
    for (uint32_t e = 0; e < c.numExperts; ++e) {
      auto ex = ckpt.expert(l, e);
      ASSERT_TRUE(ex) << ex.error();
      EXPECT_EQ(ex.value().w1.size(), uint64_t{c.intermediateSize} * c.hiddenSize);
      EXPECT_EQ(ex.value().w3.size(), uint64_t{c.intermediateSize} * c.hiddenSize);
      EXPECT_EQ(ex.value().w2.size(), uint64_t{c.hiddenSize} * c.intermediateSize);
      EXPECT_NE(ex.value().w1, ex.value().w3);
    }
  }
}

void expectSharedExpert(const Checkpoint& ckpt, uint32_t layer, uint64_t width) {
  auto sh = ckpt.sharedExpert(layer);
  ASSERT_TRUE(sh) << sh.error();
  EXPECT_EQ(sh.value().w1.size(), width * 16);
  EXPECT_EQ(sh.value().w3.size(), width * 16);
  EXPECT_EQ(sh.value().w2.size(), 16 * width);
}

TEST_F(CheckpointTest, Qwen2MoeSparseStepAndGatedSharedExpert) {
  SyntheticModelSpec spec = familySpec("qwen2_moe", 4, 4);
  spec.decoderSparseStep = 2;
  spec.sharedIntermediateSize = 32;
  spec.normTopkProb = true;
  const std::string d = make(spec);
  json config = json::parse(readFile(d + "/config.json"));
  EXPECT_EQ(config["architectures"], json::array({"Qwen2MoeForCausalLM"}));
  EXPECT_EQ(config["moe_intermediate_size"], 24);
  EXPECT_EQ(config["num_experts"], 4);
  EXPECT_EQ(config["shared_expert_intermediate_size"], 32);
  EXPECT_EQ(config["decoder_sparse_step"], 2);
  EXPECT_EQ(config["mlp_only_layers"], json::array());
  EXPECT_EQ(config["norm_topk_prob"], true);

  auto ckpt = openOk(d);
  ASSERT_NE(ckpt, nullptr);
  const ModelConfig& c = ckpt->config();
  EXPECT_EQ(c.modelType, "qwen2_moe");
  EXPECT_EQ(c.familyName, "Qwen2-MoE");
  EXPECT_EQ(c.hiddenSize, 16u);
  EXPECT_EQ(c.intermediateSize, 24u);
  EXPECT_EQ(c.numExperts, 4u);
  EXPECT_EQ(c.topK, 2u);
  EXPECT_EQ(c.numLayers, 4u);
  // Qwen2MoeDecoderLayer: sparse where (layer + 1) % decoder_sparse_step == 0.
  EXPECT_EQ(c.moeLayers, (std::vector<uint32_t>{1, 3}));
  EXPECT_EQ(c.routing.normalize, RoutingRecipe::Normalize::kSum);
  EXPECT_EQ(c.sharedIntermediateSize, 32u);
  EXPECT_TRUE(c.sharedExpertGated);
  EXPECT_FALSE(c.routing.choiceBias);
  EXPECT_EQ(c.routing.scoring, RoutingRecipe::Scoring::kSoftmax);

  // Dense layers get no tensors; each MoE layer: gate, 4×3 experts, 3 shared, 1 shared gate.
  auto names = tensorNames(d + "/model.safetensors");
  EXPECT_EQ(names.size(), 2u * (1 + 4 * 3 + 3 + 1));
  EXPECT_TRUE(names.count("model.layers.1.mlp.experts.3.down_proj.weight"));
  EXPECT_TRUE(names.count("model.layers.3.mlp.shared_expert.gate_proj.weight"));
  EXPECT_TRUE(names.count("model.layers.3.mlp.shared_expert_gate.weight"));
  EXPECT_FALSE(names.count("model.layers.0.mlp.gate.weight"));

  expectRoutedTensors(*ckpt);
  for (uint32_t l : c.moeLayers) {
    expectSharedExpert(*ckpt, l, 32);
    auto g = ckpt->sharedExpertGate(l);
    ASSERT_TRUE(g) << g.error();
    EXPECT_EQ(g.value().size(), 16u);
  }

  auto dense = ckpt->gateWeight(0);
  ASSERT_FALSE(dense);
  EXPECT_EQ(dense.error(), d + ": layer 0 is a dense layer of this model (MoE layers: 1, 3)");
  auto denseExpert = ckpt->expert(2, 0);
  ASSERT_FALSE(denseExpert);
  EXPECT_TRUE(contains(denseExpert.error(), "layer 2 is a dense layer")) << denseExpert.error();
  auto denseShared = ckpt->sharedExpert(0);
  ASSERT_FALSE(denseShared);
  EXPECT_TRUE(contains(denseShared.error(), "layer 0 is a dense layer")) << denseShared.error();
  EXPECT_TRUE(contains(ckpt->expert(4, 0).error(), "layer 4 is not a MoE layer"));
  auto bias = ckpt->scoreCorrectionBias(1);
  ASSERT_FALSE(bias);
  EXPECT_TRUE(contains(bias.error(), "e_score_correction_bias")) << bias.error();
  EXPECT_TRUE(contains(ckpt->expert(1, 4).error(), "has 4 experts (num_experts)"));
}

TEST_F(CheckpointTest, Qwen2MoeMlpOnlyLayersAndDefaults) {
  SyntheticModelSpec spec = familySpec("qwen2_moe");
  spec.mlpOnlyLayers = {0, 2};
  const std::string d = make(spec);
  auto ckpt = openOk(d);
  ASSERT_NE(ckpt, nullptr);
  EXPECT_EQ(ckpt->config().moeLayers, (std::vector<uint32_t>{1}));
  EXPECT_EQ(ckpt->config().routing.normalize, RoutingRecipe::Normalize::kNone);
  EXPECT_EQ(ckpt->config().sharedIntermediateSize, 0u);
  EXPECT_FALSE(ckpt->config().sharedExpertGated);
  expectRoutedTensors(*ckpt);
  EXPECT_TRUE(contains(ckpt->gateWeight(2).error(),
                       "layer 2 is a dense layer of this model "
                       "(MoE layers: 1)"));
  // shared_expert_intermediate_size 0: no shared expert, and no gate for it.
  auto sh = ckpt->sharedExpert(1);
  ASSERT_FALSE(sh);
  EXPECT_TRUE(contains(sh.error(), "no shared expert")) << sh.error();
  auto g = ckpt->sharedExpertGate(1);
  ASSERT_FALSE(g);
  EXPECT_TRUE(contains(g.error(), "no shared_expert_gate")) << g.error();

  // HF defaults: decoder_sparse_step 1, mlp_only_layers [], norm_topk_prob false (null = unset).
  editConfig(d, [](json& c) {
    c.erase("decoder_sparse_step");
    c["mlp_only_layers"] = nullptr;
    c.erase("norm_topk_prob");
    c.erase("shared_expert_intermediate_size");
  });
  auto defaults = openOk(d);
  ASSERT_NE(defaults, nullptr);
  EXPECT_EQ(defaults->config().moeLayers, (std::vector<uint32_t>{0, 1, 2}));
  EXPECT_EQ(defaults->config().routing.normalize, RoutingRecipe::Normalize::kNone);
  EXPECT_EQ(defaults->config().sharedIntermediateSize, 0u);

  editConfig(d, [](json& c) { c["mlp_only_layers"] = json::array({0, "x"}); });
  EXPECT_TRUE(contains(openError(d), "key 'mlp_only_layers' must be a list")) << openError(d);
  editConfig(d, [](json& c) {
    c["mlp_only_layers"] = json::array();
    c["decoder_sparse_step"] = 0;
  });
  EXPECT_TRUE(contains(openError(d), "key 'decoder_sparse_step' must be a positive integer"));
  editConfig(d, [](json& c) { c["decoder_sparse_step"] = 4; });  // (l + 1) % 4 == 0 for no l < 3
  EXPECT_TRUE(contains(openError(d), "no MoE layers")) << openError(d);
}

// transformers 5 writes Qwen3-MoE's expert count as num_local_experts (its attribute_map alias of
// num_experts); either key is read.
TEST_F(CheckpointTest, Qwen3MoeExpertCountUnderEitherKey) {
  const std::string d = make(familySpec("qwen3_moe"));
  editConfig(d, [](json& c) {
    c["num_local_experts"] = c["num_experts"];
    c.erase("num_experts");
  });
  auto ckpt = openOk(d);
  ASSERT_NE(ckpt, nullptr);
  EXPECT_EQ(ckpt->config().numExperts, familySpec("qwen3_moe").numExperts);
  editConfig(d, [](json& c) { c.erase("num_local_experts"); });
  EXPECT_TRUE(contains(openError(d), "key 'num_experts' missing")) << openError(d);
}

TEST_F(CheckpointTest, Qwen3MoeHasNoSharedExpert) {
  SyntheticModelSpec spec = familySpec("qwen3_moe");
  spec.mlpOnlyLayers = {1};
  spec.sharedIntermediateSize = 32;  // not a Qwen3-MoE key: ignored
  spec.normTopkProb = true;
  const std::string d = make(spec);
  json config = json::parse(readFile(d + "/config.json"));
  EXPECT_EQ(config["architectures"], json::array({"Qwen3MoeForCausalLM"}));
  EXPECT_FALSE(config.contains("shared_expert_intermediate_size"));
  auto ckpt = openOk(d);
  ASSERT_NE(ckpt, nullptr);
  const ModelConfig& c = ckpt->config();
  EXPECT_EQ(c.familyName, "Qwen3-MoE");
  EXPECT_EQ(c.moeLayers, (std::vector<uint32_t>{0, 2}));
  EXPECT_EQ(c.routing.normalize, RoutingRecipe::Normalize::kSum);
  EXPECT_EQ(c.sharedIntermediateSize, 0u);
  EXPECT_EQ(tensorNames(d + "/model.safetensors").size(), 2u * (1 + 4 * 3));
  expectRoutedTensors(*ckpt);
  EXPECT_FALSE(ckpt->sharedExpert(0));
  EXPECT_FALSE(ckpt->sharedExpertGate(0));
  EXPECT_FALSE(ckpt->scoreCorrectionBias(0));
  EXPECT_TRUE(contains(ckpt->gateWeight(1).error(), "(MoE layers: 0, 2)"));

  editConfig(d, [](json& c) { c.erase("norm_topk_prob"); });  // Qwen3MoeConfig default: false
  auto defaults = openOk(d);
  ASSERT_NE(defaults, nullptr);
  EXPECT_EQ(defaults->config().routing.normalize, RoutingRecipe::Normalize::kNone);
  editConfig(d, [](json& c) { c["norm_topk_prob"] = "yes"; });
  EXPECT_TRUE(contains(openError(d), "key 'norm_topk_prob' must be true or false"));
  editConfig(d, [](json& c) {
    c["norm_topk_prob"] = true;
    c.erase("moe_intermediate_size");
  });
  EXPECT_TRUE(contains(openError(d), d + "/config.json: key 'moe_intermediate_size' missing"));
}

TEST_F(CheckpointTest, OlmoeAllLayersMoe) {
  SyntheticModelSpec spec = familySpec("olmoe", 8);
  spec.topK = 3;
  spec.sharedIntermediateSize = 32;  // ignored: OLMoE has no shared expert
  const std::string d = make(spec);
  json config = json::parse(readFile(d + "/config.json"));
  EXPECT_EQ(config["architectures"], json::array({"OlmoeForCausalLM"}));
  EXPECT_EQ(config["intermediate_size"], 24);
  EXPECT_EQ(config["num_experts"], 8);
  auto ckpt = openOk(d);
  ASSERT_NE(ckpt, nullptr);
  const ModelConfig& c = ckpt->config();
  EXPECT_EQ(c.familyName, "OLMoE");
  EXPECT_EQ(c.numExperts, 8u);
  EXPECT_EQ(c.topK, 3u);
  EXPECT_EQ(c.moeLayers, (std::vector<uint32_t>{0, 1, 2}));
  EXPECT_EQ(c.routing.normalize, RoutingRecipe::Normalize::kNone);
  EXPECT_EQ(tensorNames(d + "/model.safetensors").size(), 3u * (1 + 8 * 3));
  expectRoutedTensors(*ckpt);
  auto sh = ckpt->sharedExpert(0);
  ASSERT_FALSE(sh);
  EXPECT_TRUE(contains(sh.error(), "model_type 'olmoe' has no shared expert")) << sh.error();
  EXPECT_FALSE(ckpt->scoreCorrectionBias(0));

  editConfig(d, [](json& c) { c.erase("num_experts"); });
  EXPECT_EQ(openError(d), d + "/config.json: key 'num_experts' missing (OLMoE; also read as "
                              "'num_local_experts')");
  editConfig(d, [](json& c) {
    c["num_experts"] = 8;
    c["num_experts_per_tok"] = 9;
  });
  EXPECT_TRUE(
      contains(openError(d), "num_experts_per_tok 9 must be between 1 and num_experts (8)"));
}

TEST_F(CheckpointTest, DeepseekV2FirstKDenseAndUngatedSharedExperts) {
  SyntheticModelSpec spec = familySpec("deepseek_v2", 8);
  spec.firstKDenseReplace = 1;
  spec.sharedIntermediateSize = 48;  // n_shared_experts = 2
  spec.nGroup = 4;
  spec.topkGroup = 2;
  spec.routedScalingFactor = 1.5f;
  const std::string d = make(spec);
  json config = json::parse(readFile(d + "/config.json"));
  EXPECT_EQ(config["architectures"], json::array({"DeepseekV2ForCausalLM"}));
  EXPECT_EQ(config["n_routed_experts"], 8);
  EXPECT_EQ(config["n_shared_experts"], 2);
  EXPECT_EQ(config["moe_intermediate_size"], 24);
  EXPECT_EQ(config["first_k_dense_replace"], 1);
  EXPECT_EQ(config["topk_method"], "group_limited_greedy");
  auto ckpt = openOk(d);
  ASSERT_NE(ckpt, nullptr);
  const ModelConfig& c = ckpt->config();
  EXPECT_EQ(c.familyName, "DeepSeek-V2");
  EXPECT_EQ(c.numExperts, 8u);
  EXPECT_EQ(c.moeLayers, (std::vector<uint32_t>{1, 2}));
  EXPECT_EQ(c.sharedIntermediateSize, 48u);
  EXPECT_FALSE(c.sharedExpertGated);
  EXPECT_EQ(c.routing.scoring, RoutingRecipe::Scoring::kSoftmax);
  EXPECT_EQ(c.routing.groups, RoutingRecipe::Groups::kMax);
  EXPECT_EQ(c.routing.nGroup, 4u);
  EXPECT_EQ(c.routing.topkGroup, 2u);
  EXPECT_FLOAT_EQ(c.routing.scale, 1.5f);
  EXPECT_EQ(c.routing.normalize, RoutingRecipe::Normalize::kNone);
  EXPECT_FALSE(c.routing.choiceBias);

  auto names = tensorNames(d + "/model.safetensors");
  EXPECT_EQ(names.size(), 2u * (1 + 8 * 3 + 3));
  EXPECT_TRUE(names.count("model.layers.2.mlp.shared_experts.up_proj.weight"));
  expectRoutedTensors(*ckpt);
  for (uint32_t l : c.moeLayers) expectSharedExpert(*ckpt, l, 48);
  auto g = ckpt->sharedExpertGate(1);
  ASSERT_FALSE(g);
  EXPECT_TRUE(contains(g.error(), "no shared_expert_gate")) << g.error();
  auto bias = ckpt->scoreCorrectionBias(1);
  ASSERT_FALSE(bias);
  EXPECT_TRUE(contains(bias.error(), "only deepseek_v3")) << bias.error();
  EXPECT_EQ(ckpt->gateWeight(0).error(),
            d + ": layer 0 is a dense layer of this model (MoE layers: 1, 2)");

  // Defaults of an older config that leaves the routing keys out: greedy softmax top-k, no
  // shared experts, every layer sparse.
  editConfig(d, [](json& c) {
    for (const char* k :
         {"n_shared_experts", "first_k_dense_replace", "moe_layer_freq", "n_group", "topk_group",
          "routed_scaling_factor", "scoring_func", "topk_method", "norm_topk_prob"}) {
      c.erase(k);
    }
  });
  auto defaults = openOk(d);
  ASSERT_NE(defaults, nullptr);
  const ModelConfig& dc = defaults->config();
  EXPECT_EQ(dc.moeLayers, (std::vector<uint32_t>{0, 1, 2}));
  EXPECT_EQ(dc.sharedIntermediateSize, 0u);
  EXPECT_EQ(dc.routing.scoring, RoutingRecipe::Scoring::kSoftmax);
  EXPECT_EQ(dc.routing.groups, RoutingRecipe::Groups::kNone);
  EXPECT_EQ(dc.routing.nGroup, 1u);
  EXPECT_EQ(dc.routing.topkGroup, 1u);
  EXPECT_FLOAT_EQ(dc.routing.scale, 1.0f);
  EXPECT_EQ(dc.routing.normalize, RoutingRecipe::Normalize::kNone);
  EXPECT_FALSE(defaults->sharedExpert(1));
}

TEST_F(CheckpointTest, DeepseekV3BiasAndGroups) {
  SyntheticModelSpec spec = familySpec("deepseek_v3", 8, 4);
  spec.firstKDenseReplace = 1;
  spec.sharedIntermediateSize = 24;  // n_shared_experts = 1
  spec.nGroup = 4;
  spec.topkGroup = 2;
  spec.routedScalingFactor = 2.5f;
  spec.normTopkProb = true;
  const std::string d = make(spec);
  json config = json::parse(readFile(d + "/config.json"));
  EXPECT_EQ(config["architectures"], json::array({"DeepseekV3ForCausalLM"}));
  EXPECT_EQ(config["scoring_func"], "sigmoid");
  EXPECT_EQ(config["topk_method"], "noaux_tc");
  auto ckpt = openOk(d);
  ASSERT_NE(ckpt, nullptr);
  const ModelConfig& c = ckpt->config();
  EXPECT_EQ(c.familyName, "DeepSeek-V3");
  EXPECT_EQ(c.moeLayers, (std::vector<uint32_t>{1, 2, 3}));
  EXPECT_EQ(c.sharedIntermediateSize, 24u);
  EXPECT_FALSE(c.sharedExpertGated);
  EXPECT_EQ(c.routing.scoring, RoutingRecipe::Scoring::kSigmoid);
  EXPECT_EQ(c.routing.groups, RoutingRecipe::Groups::kTop2Sum);
  EXPECT_EQ(c.routing.nGroup, 4u);
  EXPECT_EQ(c.routing.topkGroup, 2u);
  EXPECT_FLOAT_EQ(c.routing.scale, 2.5f);
  EXPECT_EQ(c.routing.normalize, RoutingRecipe::Normalize::kSum);
  EXPECT_TRUE(c.routing.choiceBias);

  EXPECT_EQ(tensorNames(d + "/model.safetensors").size(), 3u * (2 + 8 * 3 + 3));
  expectRoutedTensors(*ckpt);
  for (uint32_t l : c.moeLayers) {
    expectSharedExpert(*ckpt, l, 24);
    auto bias = ckpt->scoreCorrectionBias(l);
    ASSERT_TRUE(bias) << bias.error();
    ASSERT_EQ(bias.value().size(), 8u);
    float maxAbs = 0;
    for (float b : bias.value()) maxAbs = std::max(maxAbs, std::fabs(b));
    EXPECT_LE(maxAbs, 0.05f);
    EXPECT_GT(maxAbs, 0.01f);
  }
  EXPECT_TRUE(contains(ckpt->scoreCorrectionBias(0).error(), "layer 0 is a dense layer"));

  // The bias is large enough to change some top-2 choices on sigmoid scores (so a router that
  // ignores it is caught), but not most of them.
  auto gate = ckpt->gateWeight(1).value();
  auto bias = ckpt->scoreCorrectionBias(1).value();
  int changed = 0;
  const int tokens = 256;
  for (int t = 0; t < tokens; ++t) {
    std::vector<float> score(8), biased(8);
    for (uint32_t e = 0; e < 8; ++e) {
      float logit = 0;
      for (uint32_t h = 0; h < 16; ++h) {
        logit += gate[e * 16 + h] * std::sin(static_cast<float>(t * 16 + h) * 0.7f);
      }
      score[e] = 1.0f / (1.0f + std::exp(-logit));
      biased[e] = score[e] + bias[e];
    }
    auto top2 = [](std::vector<float> v) {
      std::vector<int> idx(v.size());
      for (size_t i = 0; i < idx.size(); ++i) idx[i] = static_cast<int>(i);
      std::partial_sort(idx.begin(), idx.begin() + 2, idx.end(),
                        [&](int a, int b) { return v[a] > v[b]; });
      return std::set<int>{idx[0], idx[1]};
    };
    changed += top2(score) != top2(biased);
  }
  EXPECT_LT(changed, tokens / 2) << changed;
  EXPECT_GT(changed, 0) << changed;

  // V3 defaults differ from V2's: sigmoid scores, noaux_tc, renormalized.
  editConfig(d, [](json& c) {
    c.erase("scoring_func");
    c.erase("topk_method");
    c.erase("norm_topk_prob");
    c["moe_layer_freq"] = 2;
  });
  auto defaults = openOk(d);
  ASSERT_NE(defaults, nullptr);
  EXPECT_EQ(defaults->config().routing.scoring, RoutingRecipe::Scoring::kSigmoid);
  EXPECT_EQ(defaults->config().routing.groups, RoutingRecipe::Groups::kTop2Sum);
  EXPECT_EQ(defaults->config().routing.normalize, RoutingRecipe::Normalize::kSum);
  // DeepseekV2DecoderLayer: layer >= first_k_dense_replace and layer % moe_layer_freq == 0.
  EXPECT_EQ(defaults->config().moeLayers, (std::vector<uint32_t>{2}));
}

TEST_F(CheckpointTest, DeepseekConfigErrorsNameTheKeys) {
  SyntheticModelSpec spec = familySpec("deepseek_v3", 8);
  spec.nGroup = 4;
  spec.topkGroup = 2;
  const std::string d = make(spec);
  auto expectError = [&](auto edit, const std::string& want) { expectConfigError(d, edit, want); };
  expectError([](json& c) { c["n_group"] = 3; }, "n_group 3 must divide n_routed_experts (8)");
  expectError([](json& c) { c["topk_group"] = 5; }, "topk_group 5 must be at most n_group (4)");
  expectError([](json& c) { c["n_group"] = 0; }, "key 'n_group' must be a positive integer");
  expectError([](json& c) { c["n_group"] = 8; }, "at least 2 experts per group");
  expectError(
      [](json& c) {
        c["topk_group"] = 1;
        c["num_experts_per_tok"] = 3;
      },
      "num_experts_per_tok 3 exceeds the 2 experts in topk_group (1)");
  expectError([](json& c) { c.erase("moe_intermediate_size"); },
              "key 'moe_intermediate_size' missing");
  expectError([](json& c) { c.erase("n_routed_experts"); }, "key 'n_routed_experts' missing");
  expectError([](json& c) { c["num_experts_per_tok"] = 9; },
              "num_experts_per_tok 9 must be between 1 and n_routed_experts (8)");
  expectError([](json& c) { c["scoring_func"] = "relu"; },
              "key 'scoring_func' must be one of softmax, sigmoid (got \"relu\")");
  expectError([](json& c) { c["topk_method"] = "best"; }, "key 'topk_method' must be one of");
  expectError([](json& c) { c["routed_scaling_factor"] = -1; },
              "key 'routed_scaling_factor' must be a positive number");
  expectError([](json& c) { c["n_shared_experts"] = -1; },
              "key 'n_shared_experts' must be a non-negative integer");
  expectError([](json& c) { c["first_k_dense_replace"] = 3; }, "no MoE layers");
  EXPECT_NE(openOk(d), nullptr);  // every edit was undone
}

TEST_F(CheckpointTest, FamilyGeneratorDeterministicAndSharded) {
  for (const char* type : {"qwen2_moe", "qwen3_moe", "olmoe", "deepseek_v2", "deepseek_v3"}) {
    SCOPED_TRACE(type);
    SyntheticModelSpec spec = familySpec(type, 8);
    spec.sharedIntermediateSize = 24;
    spec.nGroup = 2;
    spec.dtype = DType::kBF16;
    const std::string a = make(spec, std::string(type) + "-a");
    const std::string b = make(spec, std::string(type) + "-b");
    EXPECT_EQ(readFile(a + "/model.safetensors"), readFile(b + "/model.safetensors"));
    EXPECT_EQ(readFile(a + "/config.json"), readFile(b + "/config.json"));
    spec.numFiles = 3;
    const std::string sharded = make(spec, std::string(type) + "-s");
    auto one = openOk(a);
    auto three = openOk(sharded);
    ASSERT_TRUE(one && three);
    for (uint32_t l : one->config().moeLayers) {
      EXPECT_EQ(one->gateWeight(l).value(), three->gateWeight(l).value());
      EXPECT_EQ(one->expert(l, 7).value().w2, three->expert(l, 7).value().w2);
      if (one->config().sharedIntermediateSize > 0) {
        EXPECT_EQ(one->sharedExpert(l).value().w1, three->sharedExpert(l).value().w1);
      }
    }
  }
}

TEST_F(CheckpointTest, FamilyGeneratorRejectsBadSpecs) {
  auto expectReject = [&](const SyntheticModelSpec& s, const std::string& want) {
    Status st = writeSyntheticCheckpoint(s, path("bad"));
    EXPECT_FALSE(st);
    EXPECT_TRUE(contains(st.message(), want)) << st.message();
  };
  SyntheticModelSpec s = familySpec("llama");
  expectReject(s, "model_type 'llama' is not supported");
  s = familySpec("deepseek_v3", 8);
  s.nGroup = 3;
  expectReject(s, "n_group 3");
  s = familySpec("deepseek_v2", 8);
  s.topkGroup = 2;
  expectReject(s, "topk_group 2");
  s = familySpec("deepseek_v2");
  s.sharedIntermediateSize = 30;  // not a multiple of 24
  expectReject(s, "multiple of the expert width");
  s = familySpec("qwen2_moe");
  s.mlpOnlyLayers = {0, 1, 2};
  expectReject(s, "no MoE layer");
  s = familySpec("qwen3_moe");
  s.decoderSparseStep = 0;
  expectReject(s, "decoder_sparse_step");
}

// ---- MoE++ and Yuan 2.0-M32 ---------------------------------------------------------------------

const std::string kMoePP1 = "model.layers.1.mlp.moe.";

// The fused [2I, H] weight split into w1 (rows [0, I)) and w3 (rows [I, 2I)), w2 as stored.
void expectFusedSplit(const Checkpoint& ckpt, uint32_t layer, uint32_t e, const std::string& fused,
                      const std::string& down) {
  const ModelConfig& c = ckpt.config();
  const uint64_t half = uint64_t{c.intermediateSize} * c.hiddenSize;
  auto raw = ckpt.loadF32(fused, {2 * uint64_t{c.intermediateSize}, c.hiddenSize});
  ASSERT_TRUE(raw) << raw.error();
  auto rawDown = ckpt.loadF32(down, {c.hiddenSize, c.intermediateSize});
  ASSERT_TRUE(rawDown) << rawDown.error();
  auto ex = ckpt.expert(layer, e);
  ASSERT_TRUE(ex) << ex.error();
  const auto mid = raw.value().begin() + static_cast<std::ptrdiff_t>(half);
  EXPECT_EQ(ex.value().w1, std::vector<float>(raw.value().begin(), mid)) << fused;
  EXPECT_EQ(ex.value().w3, std::vector<float>(mid, raw.value().end())) << fused;
  EXPECT_EQ(ex.value().w2, rawDown.value()) << down;
}

SyntheticModelSpec moePlusPlusSpec() {
  SyntheticModelSpec s = familySpec("MoE++", 10, 4);  // 6 FFN experts + 4 zero-computation
  s.moeExpertInterval = 2;
  return s;
}

TEST_F(CheckpointTest, MoePlusPlusConfigAndTensors) {
  SyntheticModelSpec spec = moePlusPlusSpec();
  spec.noiseWeights = true;
  const std::string d = make(spec);
  json config = json::parse(readFile(d + "/config.json"));
  EXPECT_EQ(config["model_type"], "MoE++");
  EXPECT_EQ(config["num_experts"], json::array({10}));
  EXPECT_EQ(config["moe_expert_interval"], 2);
  EXPECT_EQ(config["moe_2layer_gate"], true);
  EXPECT_FALSE(config.contains("num_experts_per_tok"));

  auto ckpt = openOk(d);
  ASSERT_NE(ckpt, nullptr);
  const ModelConfig& c = ckpt->config();
  EXPECT_EQ(c.familyName, "MoE++");
  EXPECT_EQ(c.hiddenSize, 16u);
  EXPECT_EQ(c.intermediateSize, 24u);
  EXPECT_EQ(c.numExperts, 10u);
  EXPECT_EQ(c.numFfnExperts, 6u);
  EXPECT_EQ(c.topK, 2u);
  EXPECT_EQ(c.numLayers, 4u);
  // (layer + 1) % moe_expert_interval == 0.
  EXPECT_EQ(c.moeLayers, (std::vector<uint32_t>{1, 3}));
  EXPECT_EQ(c.routing.normalize, RoutingRecipe::Normalize::kSum);
  EXPECT_TRUE(c.gatingResidual);
  EXPECT_EQ(c.gateKind, GateKind::kTwoLayerTanh);
  EXPECT_FALSE(c.moeMixtralGating);
  EXPECT_FALSE(c.moeLogitsNorm);
  EXPECT_FALSE(c.moeFeatureNoMulTopk);
  EXPECT_FLOAT_EQ(c.moeGateNormStd, 1.0f);
  EXPECT_FLOAT_EQ(c.expertInputScale(), 2.0f);
  EXPECT_EQ(c.expertKind(5), ExpertKind::kFfn);
  EXPECT_EQ(c.expertKind(6), ExpertKind::kConstant);
  EXPECT_EQ(c.expertKind(7), ExpertKind::kConstant);
  EXPECT_EQ(c.expertKind(8), ExpertKind::kCopy);
  EXPECT_EQ(c.expertKind(9), ExpertKind::kZero);

  // Per MoE layer: wg.0, wg.2, gate_map, w_noise; 6 × (up_proj, down_proj); 2 × (wg, constant).
  auto names = tensorNames(d + "/model.safetensors");
  EXPECT_EQ(names.size(), 2u * (4 + 6 * 2 + 2 * 2));
  EXPECT_TRUE(names.count(kMoePP1 + "experts.experts.5.up_proj.weight"));
  EXPECT_TRUE(names.count(kMoePP1 + "experts.experts.7.constant"));
  EXPECT_FALSE(names.count(kMoePP1 + "experts.experts.8.wg.weight"));  // copy: no weights
  EXPECT_FALSE(names.count("model.layers.0.mlp.moe.gate.gate_map.weight"));

  for (uint32_t l : c.moeLayers) {
    const std::string p = "model.layers." + std::to_string(l) + ".mlp.moe.";
    auto gate = ckpt->twoLayerGate(l);
    ASSERT_TRUE(gate) << gate.error();
    EXPECT_EQ(gate.value().w1.size(), 80u * 16);
    EXPECT_EQ(gate.value().w2.size(), 10u * 80);
    auto map = ckpt->gateResidualMap(l);
    ASSERT_TRUE(map) << map.error();
    EXPECT_EQ(map.value().size(), 10u * 10);
    auto noise = ckpt->noiseWeight(l);
    ASSERT_TRUE(noise) << noise.error();
    EXPECT_EQ(noise.value().size(), 10u * 16);
    for (uint32_t e = 0; e < c.numFfnExperts; ++e) {
      const std::string ep = p + "experts.experts." + std::to_string(e) + ".";
      expectFusedSplit(*ckpt, l, e, ep + "up_proj.weight", ep + "down_proj.weight");
    }
    for (uint32_t e : {6u, 7u}) {
      auto k = ckpt->constantExpert(l, e);
      ASSERT_TRUE(k) << k.error();
      EXPECT_EQ(k.value().wc.size(), 2u * 16);
      EXPECT_EQ(k.value().v.size(), 16u);
    }
  }

  // Zero-computation experts are not FFNs; constantExpert() takes only the constant ones.
  for (auto [e, kind] : {std::pair{6u, "a constant"}, {8u, "the copy"}, {9u, "the zero"}}) {
    auto ex = ckpt->expert(1, e);
    ASSERT_FALSE(ex);
    EXPECT_TRUE(contains(ex.error(),
                         "expert " + std::to_string(e) + " of " + d + " is " + kind + " expert"))
        << ex.error();
    EXPECT_TRUE(contains(ex.error(), "not an FFN (FFN experts are 0..5)")) << ex.error();
  }
  EXPECT_TRUE(contains(ckpt->expert(1, 10).error(), "has 10 experts (num_experts)"));
  for (uint32_t e : {5u, 8u, 9u}) {
    auto k = ckpt->constantExpert(1, e);
    ASSERT_FALSE(k);
    EXPECT_TRUE(contains(k.error(), "not a constant expert (those are 6 and 7)")) << k.error();
  }
  EXPECT_TRUE(contains(ckpt->constantExpert(1, 10).error(), "out of range"));
  EXPECT_EQ(ckpt->gateWeight(1).error(),
            d + ": model_type 'MoE++' has a two-layer gate, not a linear gate (moe_2layer_gate)");
  EXPECT_TRUE(contains(ckpt->attentionRouter(1).error(), "has no attention router"));
  EXPECT_TRUE(contains(ckpt->twoLayerGate(0).error(), "layer 0 is a dense layer"));
  EXPECT_TRUE(contains(ckpt->noiseWeight(2).error(), "layer 2 is a dense layer"));
  EXPECT_FALSE(ckpt->sharedExpert(1));
  EXPECT_FALSE(ckpt->scoreCorrectionBias(1));

  // Defaults (configuration_moe_plus_plus.py), num_experts as a plain integer, the snake_case
  // alias, and the option keys.
  editConfig(d, [](json& c) {
    for (const char* k : {"moe_expert_interval", "moe_2layer_gate", "moe_use_mixtral_gating",
                          "moe_use_logits_norm", "moe_gate_norm_std", "moe_feature_no_mul_topk"}) {
      c.erase(k);
    }
    c["num_experts"] = 10;
    c["num_experts_per_tok"] = 2;
    c["model_type"] = "moe_plus_plus";
  });
  auto defaults = openOk(d);
  ASSERT_NE(defaults, nullptr);
  EXPECT_EQ(defaults->config().familyName, "MoE++");
  EXPECT_EQ(defaults->config().numExperts, 10u);
  EXPECT_EQ(defaults->config().moeLayers, (std::vector<uint32_t>{0, 1, 2, 3}));
  EXPECT_EQ(defaults->config().gateKind, GateKind::kTwoLayerTanh);
  editConfig(d, [](json& c) {
    c["moe_use_mixtral_gating"] = true;
    c["moe_use_logits_norm"] = true;
    c["moe_gate_norm_std"] = 0.5;
    c["moe_feature_no_mul_topk"] = true;
  });
  auto options = openOk(d);
  ASSERT_NE(options, nullptr);
  EXPECT_TRUE(options->config().moeMixtralGating);
  EXPECT_TRUE(options->config().moeLogitsNorm);
  EXPECT_FLOAT_EQ(options->config().moeGateNormStd, 0.5f);
  EXPECT_TRUE(options->config().moeFeatureNoMulTopk);
  EXPECT_FLOAT_EQ(options->config().expertInputScale(), 1.0f);
}

TEST_F(CheckpointTest, MoePlusPlusSingleLayerGate) {
  SyntheticModelSpec spec = moePlusPlusSpec();
  spec.moeTwoLayerGate = false;
  const std::string d = make(spec);
  auto ckpt = openOk(d);
  ASSERT_NE(ckpt, nullptr);
  EXPECT_EQ(ckpt->config().gateKind, GateKind::kLinear);
  auto names = tensorNames(d + "/model.safetensors");
  EXPECT_TRUE(names.count(kMoePP1 + "gate.wg.weight"));
  EXPECT_FALSE(names.count(kMoePP1 + "gate.wg.0.weight"));
  auto gate = ckpt->gateWeight(1);
  ASSERT_TRUE(gate) << gate.error();
  EXPECT_EQ(gate.value().size(), 10u * 16);
  EXPECT_TRUE(ckpt->gateResidualMap(3));
  EXPECT_TRUE(
      contains(ckpt->twoLayerGate(1).error(), "has no two-layer gate (moe_2layer_gate is false)"));
  // No w_noise written unless asked for.
  EXPECT_EQ(ckpt->noiseWeight(1).error(), "tensor " + kMoePP1 + "w_noise.weight missing from " + d);
}

TEST_F(CheckpointTest, MoePlusPlusConfigErrorsNameTheKeys) {
  const std::string d = make(moePlusPlusSpec());
  auto expectError = [&](auto edit, const std::string& want) { expectConfigError(d, edit, want); };
  expectError([](json& c) { c["num_experts"] = json::array({4}); },
              "key 'num_experts' is 4: MoE++ needs at least 5 experts");
  expectError([](json& c) { c["num_experts"] = 4; }, "key 'num_experts' is 4");
  expectError([](json& c) { c["num_experts"] = json::array(); },
              "key 'num_experts' must be a positive integer or a list starting with one");
  expectError([](json& c) { c["num_experts"] = "32"; }, "key 'num_experts' must be a positive");
  expectError([](json& c) { c.erase("num_experts"); }, "key 'num_experts' missing");
  expectError([](json& c) { c["num_experts_per_tok"] = 3; },
              "key 'num_experts_per_tok' is 3: MoE++ routes every token to exactly 2 experts");
  expectError([](json& c) { c["moe_expert_interval"] = 0; },
              "key 'moe_expert_interval' must be a positive integer");
  expectError([](json& c) { c["moe_expert_interval"] = 5; }, "no MoE layers among the 4 layers");
  expectError([](json& c) { c["moe_2layer_gate"] = "yes"; },
              "key 'moe_2layer_gate' must be true or false");
  expectError([](json& c) { c["moe_gate_norm_std"] = 0; },
              "key 'moe_gate_norm_std' must be a positive number");
  expectError([](json& c) { c.erase("intermediate_size"); }, "key 'intermediate_size' missing");
  EXPECT_NE(openOk(d), nullptr);  // every edit was undone
}

SyntheticModelSpec yuanSpec() {
  return familySpec("yuan", 8, 2);
}

TEST_F(CheckpointTest, YuanConfigAndTensors) {
  const std::string d = make(yuanSpec());
  json config = json::parse(readFile(d + "/config.json"));
  EXPECT_EQ(config["architectures"], json::array({"YuanForCausalLM"}));
  EXPECT_EQ(config["use_moe"], true);
  EXPECT_EQ(config["moe_config"]["moe_num_experts"], 8);
  EXPECT_EQ(config["moe_config"]["moe_top_k"], 2);
  EXPECT_EQ(config["moe_config"]["ffn_hidden_size"], 24);
  EXPECT_EQ(config["moe_config"]["router_type"], "attn_router");

  auto ckpt = openOk(d);
  ASSERT_NE(ckpt, nullptr);
  const ModelConfig& c = ckpt->config();
  EXPECT_EQ(c.familyName, "Yuan-2.0-M32");
  EXPECT_EQ(c.gateKind, GateKind::kAttention);
  EXPECT_EQ(c.numExperts, 8u);
  EXPECT_EQ(c.numFfnExperts, 8u);
  EXPECT_EQ(c.topK, 2u);
  EXPECT_EQ(c.intermediateSize, 24u);
  EXPECT_EQ(c.moeLayers, (std::vector<uint32_t>{0, 1}));
  EXPECT_EQ(c.routing.normalize, RoutingRecipe::Normalize::kSum);
  EXPECT_FALSE(c.gatingResidual);
  EXPECT_FLOAT_EQ(c.expertInputScale(), 1.0f);
  EXPECT_EQ(c.expertKind(7), ExpertKind::kFfn);

  // Per layer: query, key, value; 8 × (w1, w2).
  EXPECT_EQ(tensorNames(d + "/model.safetensors").size(), 2u * (3 + 8 * 2));
  for (uint32_t l : c.moeLayers) {
    const std::string p = "model.layers." + std::to_string(l) + ".mlp.";
    auto qkv = ckpt->attentionRouter(l);
    ASSERT_TRUE(qkv) << qkv.error();
    ASSERT_EQ(qkv.value().size(), 3u * 8 * 16);
    std::vector<float> expected;
    for (const char* part : {"query", "key", "value"}) {
      auto w = ckpt->loadF32(p + "gate." + part + ".weight", {8, 16});
      ASSERT_TRUE(w) << w.error();
      expected.insert(expected.end(), w.value().begin(), w.value().end());
    }
    EXPECT_EQ(qkv.value(), expected);
    for (uint32_t e = 0; e < c.numExperts; ++e) {
      const std::string ep = p + "experts." + std::to_string(e) + ".";
      expectFusedSplit(*ckpt, l, e, ep + "w1.weight", ep + "w2.weight");
    }
  }

  EXPECT_EQ(ckpt->gateWeight(0).error(),
            d + ": model_type 'yuan' has an attention router, not a linear gate");
  EXPECT_TRUE(contains(ckpt->twoLayerGate(0).error(), "has no two-layer gate (only MoE++"));
  EXPECT_TRUE(contains(ckpt->gateResidualMap(0).error(), "has no gate.gate_map"));
  EXPECT_TRUE(contains(ckpt->constantExpert(0, 0).error(), "has no constant experts"));
  EXPECT_TRUE(contains(ckpt->expert(0, 8).error(), "has 8 experts (moe_config.moe_num_experts)"));
  EXPECT_TRUE(contains(ckpt->attentionRouter(2).error(), "layer 2 is not a MoE layer"));
  EXPECT_EQ(ckpt->noiseWeight(0).error(),
            "tensor model.layers.0.mlp.w_noise.weight missing from " + d);
}

TEST_F(CheckpointTest, YuanConfigErrorsNameTheKeys) {
  const std::string d = make(yuanSpec());
  auto expectError = [&](auto edit, const std::string& want) { expectConfigError(d, edit, want); };
  expectError([](json& c) { c["moe_config"]["router_type"] = "linear"; },
              "key 'moe_config.router_type' must be \"attn_router\" (got \"linear\"): only "
              "Yuan's attention router is supported");
  expectError([](json& c) { c["moe_config"].erase("router_type"); },
              "key 'moe_config.router_type' must be \"attn_router\" (got nothing)");
  expectError([](json& c) { c["use_moe"] = false; }, "key 'use_moe' is false or missing");
  expectError([](json& c) { c.erase("use_moe"); },
              "key 'use_moe' is false or missing: this yuan model is a dense model");
  expectError([](json& c) { c.erase("moe_config"); }, "key 'moe_config' missing");
  expectError([](json& c) { c["moe_config"] = 8; }, "key 'moe_config' must be a JSON object");
  expectError([](json& c) { c["moe_config"]["moe_top_k"] = 9; },
              "moe_config.moe_top_k 9 must be between 1 and moe_config.moe_num_experts (8)");
  expectError([](json& c) { c["moe_config"]["moe_num_experts"] = 0; },
              "key 'moe_config.moe_num_experts' must be a positive integer");
  expectError([](json& c) { c["moe_config"].erase("ffn_hidden_size"); },
              "key 'moe_config.ffn_hidden_size' missing");
  EXPECT_NE(openOk(d), nullptr);
}

// A missing or mis-shaped tensor of the new kinds is named in the error when it is asked for.
TEST_F(CheckpointTest, MoePlusPlusAndYuanTensorErrorsNameTheTensor) {
  const std::string m = make(moePlusPlusSpec(), "moepp");
  const std::string dropped = kMoePP1 + "experts.experts.7.constant";
  rewriteWithout(m + "/model.safetensors", dropped);
  rewriteWithout(m + "/model.safetensors", kMoePP1 + "gate.gate_map.weight");
  auto ckpt = openOk(m);
  ASSERT_NE(ckpt, nullptr);
  EXPECT_TRUE(ckpt->constantExpert(1, 6));
  EXPECT_EQ(ckpt->constantExpert(1, 7).error(), "tensor " + dropped + " missing from " + m);
  EXPECT_EQ(ckpt->gateResidualMap(1).error(),
            "tensor " + kMoePP1 + "gate.gate_map.weight missing from " + m);
  EXPECT_TRUE(ckpt->gateResidualMap(3));

  editConfig(m, [](json& c) { c["intermediate_size"] = 32; });
  auto wide = openOk(m);
  ASSERT_NE(wide, nullptr);
  EXPECT_EQ(wide->expert(3, 0).error(),
            "tensor model.layers.3.mlp.moe.experts.experts.0.up_proj.weight: shape [64,16] "
            "expected from config.json, file " +
                m + "/model.safetensors has [48,16]");
  editConfig(m, [](json& c) { c["num_experts"] = json::array({12}); });
  EXPECT_TRUE(contains(openOk(m)->twoLayerGate(3).error(),
                       "tensor model.layers.3.mlp.moe.gate.wg.0.weight: shape [96,16] expected"));

  const std::string y = make(yuanSpec(), "yuan");
  rewriteWithout(y + "/model.safetensors", "model.layers.1.mlp.gate.value.weight");
  editConfig(y, [](json& c) { c["moe_config"]["ffn_hidden_size"] = 20; });
  auto yuan = openOk(y);
  ASSERT_NE(yuan, nullptr);
  EXPECT_EQ(yuan->attentionRouter(1).error(),
            "tensor model.layers.1.mlp.gate.value.weight missing from " + y);
  EXPECT_TRUE(yuan->attentionRouter(0));
  EXPECT_TRUE(contains(yuan->expert(0, 2).error(),
                       "tensor model.layers.0.mlp.experts.2.w1.weight: shape [40,16] expected"))
      << yuan->expert(0, 2).error();
}

TEST_F(CheckpointTest, NoiseWeightsForEveryFamily) {
  for (const char* type : {"mixtral", "qwen2_moe", "deepseek_v3", "MoE++", "yuan"}) {
    SCOPED_TRACE(type);
    SyntheticModelSpec spec = familySpec(type, 8);
    spec.noiseWeights = true;
    const std::string d = make(spec, type == std::string("MoE++") ? "moepp" : type);
    auto ckpt = openOk(d);
    ASSERT_NE(ckpt, nullptr);
    const char* block = type == std::string("mixtral") ? ".block_sparse_moe."
                        : type == std::string("MoE++") ? ".mlp.moe."
                                                       : ".mlp.";
    for (uint32_t l : ckpt->config().moeLayers) {
      auto noise = ckpt->noiseWeight(l);
      ASSERT_TRUE(noise) << noise.error();
      auto raw =
          ckpt->loadF32("model.layers." + std::to_string(l) + block + "w_noise.weight", {8, 16});
      ASSERT_TRUE(raw) << raw.error();
      EXPECT_EQ(noise.value(), raw.value());
    }
  }
}

TEST_F(CheckpointTest, MoePlusPlusAndYuanGeneratorDeterministicShardedDTypes) {
  for (SyntheticModelSpec spec : {moePlusPlusSpec(), yuanSpec()}) {
    SCOPED_TRACE(spec.modelType);
    const std::string t = spec.modelType == "yuan" ? "yuan" : "moepp";
    spec.dtype = DType::kBF16;
    spec.noiseWeights = true;
    const std::string a = make(spec, t + "-a");
    const std::string b = make(spec, t + "-b");
    EXPECT_EQ(readFile(a + "/model.safetensors"), readFile(b + "/model.safetensors"));
    EXPECT_EQ(readFile(a + "/config.json"), readFile(b + "/config.json"));
    EXPECT_EQ(json::parse(readFile(a + "/config.json"))["torch_dtype"], "bfloat16");
    spec.numFiles = 3;
    const std::string sharded = make(spec, t + "-s");
    EXPECT_TRUE(fs::exists(sharded + "/model-00003-of-00003.safetensors"));
    auto one = openOk(a);
    auto three = openOk(sharded);
    ASSERT_TRUE(one && three);
    const uint32_t lastFfn = one->config().numFfnExperts - 1;
    for (uint32_t l : one->config().moeLayers) {
      EXPECT_EQ(one->expert(l, lastFfn).value().w3, three->expert(l, lastFfn).value().w3);
      EXPECT_EQ(one->noiseWeight(l).value(), three->noiseWeight(l).value());
      if (spec.modelType == "yuan") {
        EXPECT_EQ(one->attentionRouter(l).value(), three->attentionRouter(l).value());
      } else {
        EXPECT_EQ(one->twoLayerGate(l).value().w2, three->twoLayerGate(l).value().w2);
        EXPECT_EQ(one->constantExpert(l, 7).value().v, three->constantExpert(l, 7).value().v);
      }
    }
  }
}

TEST_F(CheckpointTest, MoePlusPlusGeneratorRejectsBadSpecs) {
  auto expectReject = [&](const SyntheticModelSpec& s, const std::string& want) {
    Status st = writeSyntheticCheckpoint(s, path("bad"));
    EXPECT_FALSE(st);
    EXPECT_TRUE(contains(st.message(), want)) << st.message();
  };
  SyntheticModelSpec s = moePlusPlusSpec();
  s.topK = 3;
  expectReject(s, "MoE++ top-k must be 2");
  s = familySpec("MoE++", 4);
  expectReject(s, "MoE++ needs at least 5 experts (4 given)");
  s = moePlusPlusSpec();
  s.moeExpertInterval = 0;
  expectReject(s, "moe_expert_interval must be > 0");
  s = moePlusPlusSpec();
  s.moeExpertInterval = 5;  // 4 layers
  expectReject(s, "no MoE layer");
}

// ---- Synthetic routing is non-degenerate for the new routers (hidden 64, N(0,1) tokens) --------

std::vector<float> normalTokens(uint32_t count, uint32_t h) {
  std::mt19937_64 rng(11);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> x(size_t{count} * h);
  for (float& v : x) v = normal(rng);
  return x;
}

// out[r] = Σ_c w[r, c] · x[c] for a row-major [rows, x.size()] matrix.
std::vector<float> matVec(const std::vector<float>& w, const float* x, size_t cols) {
  std::vector<float> out(w.size() / cols, 0.0f);
  for (size_t r = 0; r < out.size(); ++r) {
    for (size_t c = 0; c < cols; ++c) out[r] += w[r * cols + c] * x[c];
  }
  return out;
}

// The two largest entries, as DESIGN §6's top-2 of softmax (monotone in the logits) picks them.
std::pair<int, int> top2(const std::vector<float>& v) {
  std::vector<int> idx(v.size());
  for (size_t i = 0; i < idx.size(); ++i) idx[i] = static_cast<int>(i);
  std::partial_sort(idx.begin(), idx.begin() + 2, idx.end(),
                    [&](int a, int b) { return v[a] > v[b]; });
  return {idx[0], idx[1]};
}

TEST_F(CheckpointTest, MoePlusPlusSyntheticRoutingUsesEveryExpertKind) {
  SyntheticModelSpec spec = familySpec("MoE++", 10, 2);
  spec.hiddenSize = 64;
  auto ckpt = openOk(make(spec));
  ASSERT_NE(ckpt, nullptr);
  const uint32_t T = 512, H = 64, N = 10;
  const std::vector<float> x = normalTokens(T, H);
  std::vector<std::vector<float>> prev(T);  // layer 0's logits, the gate_map input of layer 1
  for (uint32_t l : {0u, 1u}) {
    auto gate = ckpt->twoLayerGate(l).value();
    auto map = ckpt->gateResidualMap(l).value();
    std::vector<int> picked(N, 0);
    int zeroCompute = 0, mapChanged = 0;
    float spread = 0;
    for (uint32_t t = 0; t < T; ++t) {
      std::vector<float> hidden = matVec(gate.w1, &x[size_t{t} * H], H);
      for (float& v : hidden) v = std::tanh(v);
      std::vector<float> logits = matVec(gate.w2, hidden.data(), 8 * N);
      const auto plain = top2(logits);
      if (l == 1) {
        const std::vector<float> residual = matVec(map, prev[t].data(), N);
        for (uint32_t e = 0; e < N; ++e) logits[e] += residual[e];
        mapChanged += top2(logits) != plain;
      }
      const auto [a, b] = top2(logits);
      ++picked[a];
      ++picked[b];
      zeroCompute += (a >= 6) + (b >= 6);
      spread += *std::max_element(logits.begin(), logits.end()) -
                *std::min_element(logits.begin(), logits.end());
      prev[t] = logits;
    }
    SCOPED_TRACE("layer " + std::to_string(l));
    // 4 of 10 experts are zero-computation: with unbiased weights about 40% of the 2T picks land
    // there; demand a quarter.
    EXPECT_GT(zeroCompute, static_cast<int>(2 * T / 4)) << zeroCompute;
    for (uint32_t e = 0; e < N; ++e) EXPECT_GT(picked[e], static_cast<int>(T / 50)) << e;
    EXPECT_GT(spread / T, 1.5f);
    EXPECT_LT(spread / T, 10.0f);
    if (l == 1) {
      EXPECT_GT(mapChanged, static_cast<int>(T / 10)) << mapChanged;
    }
  }
}

TEST_F(CheckpointTest, YuanSyntheticRoutingSpreadsAcrossExperts) {
  SyntheticModelSpec spec = familySpec("yuan", 8, 1);
  spec.hiddenSize = 64;
  auto ckpt = openOk(make(spec));
  ASSERT_NE(ckpt, nullptr);
  const uint32_t T = 512, H = 64, N = 8;
  const std::vector<float> x = normalTokens(T, H);
  auto qkvW = ckpt->attentionRouter(0).value();
  std::vector<int> picked(N, 0);
  float spread = 0;
  for (uint32_t t = 0; t < T; ++t) {
    const std::vector<float> qkv = matVec(qkvW, &x[size_t{t} * H], H);
    std::vector<float> logits(N);
    for (uint32_t i = 0; i < N; ++i) {
      // l_i = Σ_j softmax_j(q_i·k_j)·v_j (DESIGN §6, no 1/√d).
      float maxS = -INFINITY, den = 0, num = 0;
      for (uint32_t j = 0; j < N; ++j) maxS = std::max(maxS, qkv[i] * qkv[N + j]);
      for (uint32_t j = 0; j < N; ++j) {
        const float w = std::exp(qkv[i] * qkv[N + j] - maxS);
        den += w;
        num += w * qkv[2 * N + j];
      }
      logits[i] = num / den;
    }
    const auto [a, b] = top2(logits);
    ++picked[a];
    ++picked[b];
    spread += *std::max_element(logits.begin(), logits.end()) -
              *std::min_element(logits.begin(), logits.end());
  }
  for (uint32_t e = 0; e < N; ++e) EXPECT_GT(picked[e], static_cast<int>(T / 25)) << e;
  EXPECT_GT(spread / T, 1.0f);
  EXPECT_LT(spread / T, 10.0f);
}

// ---- gpt-oss MXFP4 (transformers' convert_moe_packed_tensors) ----

// transformers' FP4_VALUES, written out: what each E2M1 nibble means.
constexpr float kE2M1[16] = {0.0f,  0.5f,  1.0f,  1.5f,  2.0f,  3.0f,  4.0f,  6.0f,
                             -0.0f, -0.5f, -1.0f, -1.5f, -2.0f, -3.0f, -4.0f, -6.0f};

TEST(Mxfp4, DecodesEveryNibbleInBothHalvesAtEveryScaleRange) {
  const float inf = std::numeric_limits<float>::infinity();
  // One 32-value row per case: `byte` at position (row % 16), the rest 0x00 (+0); values
  // 2·pos (low nibble) and 2·pos + 1 (high nibble), × 2^(scale − 127).
  const struct {
    uint8_t byte, scale;
    float lo, hi;
  } cases[] = {
      // every nibble as the low and as the high half, scale 127 (× 1)
      {0x10, 127, 0.0f, 0.5f},
      {0x01, 127, 0.5f, 0.0f},
      {0x32, 127, 1.0f, 1.5f},
      {0x23, 127, 1.5f, 1.0f},
      {0x54, 127, 2.0f, 3.0f},
      {0x45, 127, 3.0f, 2.0f},
      {0x76, 127, 4.0f, 6.0f},
      {0x67, 127, 6.0f, 4.0f},
      {0x98, 127, -0.0f, -0.5f},
      {0x89, 127, -0.5f, -0.0f},
      {0xBA, 127, -1.0f, -1.5f},
      {0xAB, 127, -1.5f, -1.0f},
      {0xDC, 127, -2.0f, -3.0f},
      {0xCD, 127, -3.0f, -2.0f},
      {0xFE, 127, -4.0f, -6.0f},
      {0xEF, 127, -6.0f, -4.0f},
      // scales 127 ± k
      {0x7F, 128, -12.0f, 12.0f},
      {0x71, 126, 0.25f, 3.0f},
      {0x2A, 137, -1024.0f, 1024.0f},
      {0x2A, 117, -0x1p-10f, 0x1p-10f},
      {0x3B, 254, -0x1.8p127f, 0x1.8p127f},
      // the extremes: 255 is 2^128 (no NaN code, as torch.ldexp does it): 0.5 · 2^128 is finite,
      // 6 · 2^128 overflows, zeros stay signed zeros; 0 and 1 give subnormal and tiny normals
      {0x71, 255, 0x1p127f, inf},
      {0x8F, 255, -inf, -0.0f},
      {0x71, 0, 0x1p-128f, 0x1.8p-125f},
      {0x9A, 1, -0x1p-126f, -0x1p-127f},
      {0x00, 200, 0.0f, 0.0f},
  };
  const size_t rows = std::size(cases);
  std::vector<std::byte> blocks(rows * 16, std::byte{0}), scales(rows);
  for (size_t r = 0; r < rows; ++r) {
    blocks[r * 16 + r % 16] = std::byte{cases[r].byte};
    scales[r] = std::byte{cases[r].scale};
  }
  std::vector<float> out(rows * 32, 99.0f);
  dequantizeMxfp4(blocks, scales, out);
  for (size_t r = 0; r < rows; ++r) {
    SCOPED_TRACE("byte " + std::to_string(cases[r].byte) + " scale " +
                 std::to_string(cases[r].scale));
    const size_t pos = r % 16;
    for (size_t i = 0; i < 32; ++i) {
      const float want = i == 2 * pos ? cases[r].lo : i == 2 * pos + 1 ? cases[r].hi : 0.0f;
      // Bit patterns: -0 and +0 differ, and so would a NaN.
      EXPECT_EQ(std::bit_cast<uint32_t>(out[r * 32 + i]), std::bit_cast<uint32_t>(want))
          << "element " << i << ": " << out[r * 32 + i] << " vs " << want;
    }
  }
  for (uint8_t n = 0; n < 16; ++n) {
    EXPECT_EQ(std::bit_cast<uint32_t>(e2m1ToFloat(n)), std::bit_cast<uint32_t>(kE2M1[n])) << int(n);
  }
}

// The hub's MXFP4 layout of one gpt_oss layer (H 32, I 32, E 2, top-1), and what a test breaks.
struct Mxfp4Layout {
  std::string modelType = "gpt_oss";
  std::vector<uint64_t> gateUpBlocks{2, 64, 1, 16}, gateUpScales{2, 64, 1};
  DType blocksDType = DType::kU8;
  bool writeScales = true;
  bool packedInMemory = false;  // Mxfp4GptOssExperts' own U8 gate_up_proj [E, 2I, H/2]
  bool writeExperts = true;
};

// Block byte i of a tensor, and scale i: arbitrary but every byte and scales around 127 occur.
uint8_t mxByte(uint64_t i) {
  return static_cast<uint8_t>(i * 37 + 11);
}
uint8_t mxScale(uint64_t i) {
  return static_cast<uint8_t>(120 + i % 15);
}

std::vector<std::byte> mxBytes(uint64_t n, uint64_t offset, uint8_t (*f)(uint64_t)) {
  std::vector<std::byte> out(n);
  for (uint64_t i = 0; i < n; ++i) out[i] = std::byte{f(i + offset)};
  return out;
}

// Value (row, col) of expert e of a [E, R, C] MXFP4 tensor written with mxByte/mxScale, its rows
// starting `offset` rows in (bytes offset·16, scales offset); one scale per row here (C = 32).
float mxValue(uint64_t e, uint64_t rows, uint64_t row, uint64_t col, uint64_t offset) {
  const uint64_t r = e * rows + row;
  const uint8_t b = mxByte((r + offset) * 16 + col / 2);
  const float v = kE2M1[col % 2 == 0 ? (b & 0x0f) : (b >> 4)];
  return std::ldexp(v, static_cast<int>(mxScale(r + offset)) - 127);
}

constexpr uint64_t kMxDownOffset = 5000;  // the down projection's bytes differ from gate_up's

std::string writeMxfp4(const std::string& d, const Mxfp4Layout& l) {
  fs::create_directories(d);
  writeFile(d + "/config.json", R"({"model_type": ")" + l.modelType + R"(", "hidden_size": 32,
      "intermediate_size": 32, "moe_intermediate_size": 32, "num_local_experts": 2,
      "num_experts_per_tok": 1, "num_hidden_layers": 1,
      "quantization_config": {"quant_method": "mxfp4", "modules_to_not_convert": []}})");
  SafetensorsWriter w;
  const std::string p = "model.layers.0.mlp.";
  w.add(p + "router.weight", DType::kF32, {2, 32}, iota32(64, 0));
  w.add(p + "router.bias", DType::kF32, {2}, iota32(2, 0));
  if (l.writeExperts) {
    w.add(p + "experts.gate_up_proj_bias", DType::kF32, {2, 64}, iota32(128, 1000));
    w.add(p + "experts.down_proj_bias", DType::kF32, {2, 32}, iota32(64, 2000));
    if (l.packedInMemory) {
      w.add(p + "experts.gate_up_proj", DType::kU8, {2, 64, 16}, mxBytes(2048, 0, mxByte));
      w.add(p + "experts.down_proj", DType::kU8, {2, 32, 16}, mxBytes(1024, 0, mxByte));
    } else {
      uint64_t n = 1;
      for (uint64_t v : l.gateUpBlocks) n *= v;
      w.add(p + "experts.gate_up_proj_blocks", l.blocksDType, l.gateUpBlocks,
            mxBytes(n * dtypeSize(l.blocksDType), 0, mxByte));
      n = 1;
      for (uint64_t v : l.gateUpScales) n *= v;
      if (l.writeScales) {
        w.add(p + "experts.gate_up_proj_scales", DType::kU8, l.gateUpScales,
              mxBytes(n, 0, mxScale));
      }
      w.add(p + "experts.down_proj_blocks", DType::kU8, {2, 32, 1, 16},
            mxBytes(1024, kMxDownOffset * 16, mxByte));
      w.add(p + "experts.down_proj_scales", DType::kU8, {2, 32, 1},
            mxBytes(64, kMxDownOffset, mxScale));
    }
  }
  EXPECT_TRUE(w.write(d + "/model.safetensors"));
  return d;
}

TEST_F(CheckpointTest, GptOssMxfp4ExpertsAreDequantizedInTransformersOrientation) {
  auto ckpt = openOk(writeMxfp4(path("mxfp4"), {}));
  ASSERT_NE(ckpt, nullptr);
  EXPECT_EQ(ckpt->config().quantMethod, "mxfp4");
  EXPECT_EQ(ckpt->expertsDType(), DType::kU8);  // model.dtype auto: bf16 (config_test)
  for (uint32_t e = 0; e < 2; ++e) {
    SCOPED_TRACE("expert " + std::to_string(e));
    auto t = ckpt->expert(0, e);
    ASSERT_TRUE(t) << t.error();
    // transformers: gate_up [E, 2I, H] dequantized, transposed to [E, H, 2I]; gate = [..., ::2],
    // up = [..., 1::2]: the even / odd rows of the dequantized [2I, H]. down [E, H, I] → [H, I].
    ASSERT_EQ(t.value().w1.size(), 32u * 32);
    ASSERT_EQ(t.value().w2.size(), 32u * 32);
    for (uint64_t i = 0; i < 32; ++i) {
      for (uint64_t c = 0; c < 32; ++c) {
        EXPECT_EQ(t.value().w1[i * 32 + c], mxValue(e, 64, 2 * i, c, 0)) << i << "," << c;
        EXPECT_EQ(t.value().w3[i * 32 + c], mxValue(e, 64, 2 * i + 1, c, 0)) << i << "," << c;
        EXPECT_EQ(t.value().w2[i * 32 + c], mxValue(e, 32, i, c, kMxDownOffset)) << i << "," << c;
      }
    }
    // Biases stay floats: interleaved like the weights.
    EXPECT_EQ(t.value().b1[1], 1000.0f + 64 * e + 2);
    EXPECT_EQ(t.value().b3[1], 1000.0f + 64 * e + 3);
    EXPECT_EQ(t.value().b2[5], 2000.0f + 32 * e + 5);
  }
}

TEST_F(CheckpointTest, Mxfp4ErrorsNameTheTensorAndTheShapeOrMethod) {
  const std::string gu = "tensor model.layers.0.mlp.experts.gate_up_proj";
  const struct {
    std::string name;
    Mxfp4Layout layout;
    std::function<void(json&)> config;
    std::vector<std::string> want;
  } cases[] = {
      {"scales missing",
       {.writeScales = false},
       nullptr,
       {gu + "_scales missing from", "needs both _blocks and _scales"}},
      {"blocks of the wrong shape",
       {.gateUpBlocks = {2, 64, 2, 8}},
       nullptr,
       {gu + "_blocks: MXFP4 shape [2,64,1,16] expected from config.json", "has [2,64,2,8]"}},
      {"scales of the wrong shape",
       {.gateUpScales = {2, 64}},
       nullptr,
       {gu + "_scales: MXFP4 shape [2,64,1] expected from config.json", "has [2,64]"}},
      {"blocks not u8",
       {.blocksDType = DType::kF32},
       nullptr,
       {gu + "_blocks: dtype f32 cannot be dequantized as MXFP4 (u8 expected)"}},
      {"width not a multiple of 32",
       {},
       [](json& c) { c["hidden_size"] = 48; },
       {gu + "_blocks: MXFP4 packs 32 values per scale, but its rows are 48 wide"}},
      {"another quant_method",
       {},
       [](json& c) { c["quantization_config"]["quant_method"] = "gptq"; },
       {gu + "_blocks: *_blocks/*_scales are read as MXFP4 for quantization_config.quant_method "
             "mxfp4 only, not 'gptq'",
        "(quantization_config.quant_method 'gptq' cannot be dequantized: only mxfp4 and fp8 are)"}},
      {"fp8's quant_method over MXFP4 blocks",
       {},
       [](json& c) { c["quantization_config"]["quant_method"] = "fp8"; },
       {gu + "_blocks: *_blocks/*_scales are read as MXFP4 for quantization_config.quant_method "
             "mxfp4 only, not 'fp8'"}},
      {"transformers' in-memory packed u8",
       {.packedInMemory = true},
       nullptr,
       {gu + ": dtype u8 (quantized bytes, quantization_config.quant_method 'mxfp4') cannot be "
             "dequantized as a weight"}},
      {"a quantization without known tensors",
       {.writeExperts = false},
       [](json& c) { c["quantization_config"]["quant_method"] = "awq"; },
       {gu + " missing from",
        "(quantization_config.quant_method 'awq' cannot be dequantized: only mxfp4 and fp8 are)"}},
      {"a family whose fused experts are [E, 2I, H]",
       {.modelType = "qwen3_moe"},
       nullptr,
       {gu + "_blocks: MXFP4 experts are read for the x @ W layout ([E, H, 2I], gpt_oss) only; "
             "Qwen3-MoE stores [E, 2I, H]"}},
  };
  int n = 0;
  for (const auto& tc : cases) {
    SCOPED_TRACE(tc.name);
    const std::string d = writeMxfp4(path("mx" + std::to_string(n++)), tc.layout);
    if (tc.config) editConfig(d, tc.config);
    auto ckpt = openOk(d);
    ASSERT_NE(ckpt, nullptr);
    auto e = ckpt->expert(0, 1);
    ASSERT_FALSE(e);
    for (const std::string& want : tc.want) EXPECT_TRUE(contains(e.error(), want)) << e.error();
  }
}

TEST_F(CheckpointTest, QuantizationConfigErrorsNameTheKey) {
  const std::string d = writeMxfp4(path("mxcfg"), {});
  expectConfigError(
      d, [](json& c) { c["quantization_config"] = "mxfp4"; },
      "key 'quantization_config' must be a JSON object (got \"mxfp4\")");
  expectConfigError(
      d, [](json& c) { c["quantization_config"] = json::object(); },
      "key 'quantization_config.quant_method' missing");
  expectConfigError(
      d, [](json& c) { c["quantization_config"]["quant_method"] = 4; },
      "key 'quantization_config.quant_method' must be a non-empty string (got 4)");
  editConfig(d, [](json& c) { c["quantization_config"] = nullptr; });  // null: not quantized
  auto ckpt = openOk(d);
  ASSERT_NE(ckpt, nullptr);
  EXPECT_EQ(ckpt->config().quantMethod, "");
  EXPECT_TRUE(ckpt->expert(0, 0));  // the blocks name the layout
}

// ---- LFM2-MoE, AFMoE, HY-V3, Cohere2-MoE (issue #13) ----

// config.json of `type`: H 8, I 4, 4 experts, top-2, `layers` layers, plus `extra` members.
std::string issue13Config(const std::string& type, const std::string& extra, int layers = 3) {
  return R"({"model_type": ")" + type + R"(", "hidden_size": 8, "intermediate_size": 4,
      "moe_intermediate_size": 4, "num_experts": 4, "num_experts_per_tok": 2,
      "num_hidden_layers": )" +
         std::to_string(layers) + (extra.empty() ? "" : ", " + extra) + "}";
}

TEST(Issue13Families, DefaultsAndKeysAsTheirConfigClassesSay) {
  struct Case {
    std::string type, extra;
    std::vector<uint32_t> moeLayers;
    std::string recipe;
    uint32_t shared;
    float outputScale;
  };
  const std::vector<Case> cases = {
      // Lfm2MoeConfig: num_dense_layers 2, use_expert_bias and norm_topk_prob true, scale 1.
      {"lfm2_moe",
       "",
       {2},
       "sigmoid, + correction bias for choice, top-k, renormalize (+1e-06)",
       0,
       1.0f},
      {"lfm2_moe",
       R"("num_dense_layers": 0, "use_expert_bias": false, "norm_topk_prob": false,
         "routed_scaling_factor": 1.5)",
       {0, 1, 2},
       "sigmoid, top-k, x 1.5",
       0,
       1.0f},
      // AfmoeConfig: num_dense_layers 1, num_shared_experts 2 (× moe_intermediate_size).
      {"afmoe",
       "",
       {1, 2},
       "sigmoid, + correction bias for choice, top-k, renormalize (+1e-20)",
       8,
       1.0f},
      {"afmoe",
       R"("num_dense_layers": 2, "num_shared_experts": 0, "route_scale": 2.5,
         "score_func": "sigmoid", "route_norm": true)",
       {2},
       "sigmoid, + correction bias for choice, top-k, renormalize (+1e-20), x 2.5",
       0,
       1.0f},
      // HYV3Config: mlp_layer_types default all but layer 0; router_scaling_factor 2.826;
      // num_shared_experts 1; num_local_experts is its attribute_map alias.
      {"hy_v3",
       "",
       {1, 2},
       "sigmoid, + correction bias for choice, top-k, renormalize (+1e-20), x 2.826",
       4,
       1.0f},
      {"hy_v3",
       R"("mlp_layer_types": ["sparse", "dense", "sparse"], "num_local_experts": 4,
         "router_scaling_factor": 1.0, "num_shared_experts": 2, "mlp_bias": false)",
       {0, 2},
       "sigmoid, + correction bias for choice, top-k, renormalize (+1e-20)",
       8,
       1.0f},
      // Cohere2MoeConfig: every layer sparse unless first_k_dense_replace; softmax over the top
      // logits; no shared expert by default, averaged when there is one.
      {"cohere2_moe", "", {0, 1, 2}, "top-k of logits, softmax over the chosen", 0, 1.0f},
      {"cohere2_moe",
       R"("first_k_dense_replace": 1, "num_shared_experts": 2)",
       {1, 2},
       "top-k of logits, softmax over the chosen",
       8,
       0.5f},
      {"cohere2_moe",
       R"("num_shared_experts": 1, "shared_expert_combination_strategy": "sum",
         "expert_selection_fn": "sigmoid")",
       {0, 1, 2},
       "sigmoid, top-k of logits, renormalize",
       4,
       1.0f},
      {"cohere2_moe",
       R"("mlp_layer_types": ["dense", "sparse", "sparse"],
         "first_k_dense_replace": 2, "expert_selection_fn": "sigmoid", "norm_topk_prob": false)",
       {1, 2},
       "sigmoid, top-k of logits",
       0,
       1.0f},
      // AriaTextConfig: moe_num_experts / moe_topk; moe_num_shared_experts 2 (× intermediate_size);
      // every layer MoE.
      {"aria_text",
       R"("moe_num_experts": 4, "moe_topk": 2)",
       {0, 1, 2},
       "top-k of logits, softmax over the chosen",
       8,
       1.0f},
      {"aria_text",
       R"("moe_num_experts": 4, "moe_topk": 2, "moe_num_shared_experts": 0,
         "hidden_act": "silu", "mlp_bias": false)",
       {0, 1, 2},
       "top-k of logits, softmax over the chosen",
       0,
       1.0f},
      // BeamConfig (round 2): mlp_layer_types; DeepSeek-V3 noaux_tc, no shared expert, × 2.5.
      {"beam",
       R"("n_group": 2, "topk_group": 1, "mlp_layer_types": ["dense", "sparse", "sparse"])",
       {1, 2},
       "sigmoid, + correction bias for choice, groups (top-2 sum, keep 1 of 2, others -inf), "
       "top-k, renormalize (+1e-20), x 2.5",
       0,
       1.0f},
      // LaraMiniConfig: every layer MoE, norm_topk_prob true, shared width 512.
      {"lara_mini", "", {0, 1, 2}, "softmax, top-k, renormalize", 512, 1.0f},
      {"lara_mini",
       R"("norm_topk_prob": false, "shared_expert_intermediate_size": 0)",
       {0, 1, 2},
       "softmax, top-k",
       0,
       1.0f},
      // FlintConfig: mlp_only_layers absent or null means [0, 1]; σ without bias; shared 1024.
      {"flint", "", {2}, "sigmoid, top-k, renormalize", 1024, 1.0f},
      {"flint", R"("mlp_only_layers": null)", {2}, "sigmoid, top-k, renormalize", 1024, 1.0f},
      {"flint",
       R"("mlp_only_layers": [], "decoder_sparse_step": 2, "norm_topk_prob": false,
         "shared_expert_intermediate_size": 16)",
       {1},
       "sigmoid, top-k",
       16,
       1.0f},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.type + " " + c.extra);
    auto m = parseModelConfig(issue13Config(c.type, c.extra), "config.json");
    ASSERT_TRUE(m) << m.error();
    EXPECT_EQ(m.value().moeLayers, c.moeLayers);
    EXPECT_EQ(m.value().routing.describe(), c.recipe);
    EXPECT_EQ(m.value().sharedIntermediateSize, c.shared);
    EXPECT_EQ(m.value().blockOutputScale(), c.outputScale);
    EXPECT_EQ(m.value().numFfnExperts, 4u);
  }
}

TEST(Issue13Families, ConfigErrorsNameTheKeyAndTheFamily) {
  struct Case {
    std::string type, extra, want;
  };
  const std::vector<Case> cases = {
      {"afmoe", R"("score_func": "softmax")",
       "key 'score_func' is \"softmax\", but AFMoE is served only with \"sigmoid\""},
      {"afmoe", R"("route_norm": false)",
       "key 'route_norm' is false, but AFMoE is served only with true"},
      {"hy_v3", R"("mlp_bias": true)", "key 'mlp_bias' is true, but HY-V3 is served only with"},
      {"hy_v3", R"("num_shared_experts": 0)",
       "key 'num_shared_experts' is 0, but HY-V3 is not served with it: transformers' HYV3MLP"},
      {"hy_v3", R"("num_local_experts": 8)",
       "keys 'num_experts' (4) and 'num_local_experts' (8) contradict each other (HY-V3"},
      {"hy_v3", R"("router_scaling_factor": 0)",
       "key 'router_scaling_factor' must be a positive number"},
      {"hy_v3", R"("mlp_layer_types": ["dense", "sparse"])", "key 'mlp_layer_types' must list"},
      {"cohere2_moe", R"("expert_selection_fn": "relu")",
       "key 'expert_selection_fn' must be one of softmax, sigmoid (got \"relu\")"},
      {"cohere2_moe", R"("shared_expert_combination_strategy": "max")",
       "key 'shared_expert_combination_strategy' must be one of sum, average"},
      {"cohere2_moe", R"("first_k_dense_replace": 3)", "no MoE layers"},
      {"lfm2_moe", R"("use_expert_bias": "yes")", "key 'use_expert_bias' must be true or false"},
      {"lfm2_moe", R"("num_dense_layers": -1)",
       "key 'num_dense_layers' must be a non-negative integer"},
      {"lfm2_moe", R"("num_dense_layers": 3)", "no MoE layers among the 3 layers of this LFM2-MoE"},
      {"afmoe", R"("num_shared_experts": 1.5)",
       "key 'num_shared_experts' must be a non-negative integer"},
      {"aria_text", R"("moe_num_experts": 4, "moe_topk": 2, "hidden_act": "gelu")",
       "key 'hidden_act' is \"gelu\", but Aria is served only with \"silu\""},
      {"aria_text", R"("moe_num_experts": 4, "moe_topk": 2, "mlp_bias": true)",
       "key 'mlp_bias' is true, but Aria is served only with false"},
      {"aria_text", R"("moe_num_experts": 4)", "moe_topk"},
      {"beam", "", "n_group 8 must divide num_experts (4)"},
      {"beam", R"("n_group": 2, "topk_group": 1)", "no MoE layers"},
      {"beam", R"("topk_method": "greedy")",
       "key 'topk_method' is \"greedy\", but Beam is served only with \"noaux_tc\""},
      {"beam", R"("scoring_func": "softmax")",
       "key 'scoring_func' is \"softmax\", but Beam is served only with \"sigmoid\""},
      {"flint", R"("mlp_only_layers": [0, 1, 2])", "no MoE layers"},
      {"lara_mini", R"("shared_expert_intermediate_size": -1)",
       "key 'shared_expert_intermediate_size' must be a non-negative integer"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.type + " " + c.extra);
    auto m = parseModelConfig(issue13Config(c.type, c.extra), "config.json");
    ASSERT_FALSE(m);
    EXPECT_TRUE(contains(m.error(), "config.json: ")) << m.error();
    EXPECT_TRUE(contains(m.error(), c.want)) << m.error();
  }
}

// HY-V3's checkpoints name the router, bias and shared expert as saved (router.gate, expert_bias,
// shared_mlp) or as transformers 5 holds them (gate, e_score_correction_bias, shared_experts);
// both load to the same tensors.
TEST_F(CheckpointTest, HyV3ReadsSavedAndInMemoryNames) {
  std::vector<std::vector<float>> seen;
  for (bool saved : {true, false}) {
    SCOPED_TRACE(saved ? "saved names" : "in-memory names");
    const std::string d = path(saved ? "hy-saved" : "hy-memory");
    fs::create_directories(d);
    writeFile(d + "/config.json", issue13Config("hy_v3", R"("mlp_layer_types": ["sparse"])", 1));
    SafetensorsWriter w;
    const std::string p = "model.layers.0.mlp.";
    w.add(p + (saved ? "router.gate.weight" : "gate.weight"), DType::kF32, {4, 8}, iota32(32, 0));
    w.add(p + (saved ? "expert_bias" : "e_score_correction_bias"), DType::kF32, {4}, iota32(4, 50));
    const std::string sh = p + (saved ? "shared_mlp." : "shared_experts.");
    w.add(sh + "gate_proj.weight", DType::kF32, {4, 8}, iota32(32, 100));
    w.add(sh + "up_proj.weight", DType::kF32, {4, 8}, iota32(32, 200));
    w.add(sh + "down_proj.weight", DType::kF32, {8, 4}, iota32(32, 300));
    for (uint32_t e = 0; e < 4; ++e) {
      const std::string x = p + "experts." + std::to_string(e) + ".";
      w.add(x + "gate_proj.weight", DType::kF32, {4, 8}, iota32(32, 1000.0f * e));
      w.add(x + "up_proj.weight", DType::kF32, {4, 8}, iota32(32, 1000.0f * e + 100));
      w.add(x + "down_proj.weight", DType::kF32, {8, 4}, iota32(32, 1000.0f * e + 200));
    }
    ASSERT_TRUE(w.write(d + "/model.safetensors"));
    auto ckpt = openOk(d);
    ASSERT_NE(ckpt, nullptr);
    EXPECT_EQ(ckpt->config().moeLayers, (std::vector<uint32_t>{0}));
    auto g = ckpt->gateWeight(0);
    auto b = ckpt->scoreCorrectionBias(0);
    auto s = ckpt->sharedExpert(0);
    auto e = ckpt->expert(0, 3);
    ASSERT_TRUE(g && b && s && e);
    EXPECT_EQ(g.value().size(), 32u);
    EXPECT_EQ(g.value()[31], 31.0f);
    EXPECT_EQ(b.value(), (std::vector<float>{50, 51, 52, 53}));
    EXPECT_EQ(s.value().w1.front(), 100.0f);
    EXPECT_EQ(s.value().w3.front(), 200.0f);
    EXPECT_EQ(s.value().w2.front(), 300.0f);
    EXPECT_EQ(e.value().w1.front(), 3000.0f);
  }
}

}  // namespace
}  // namespace moe
