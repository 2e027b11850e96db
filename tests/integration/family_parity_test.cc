// Family parity through the cluster, against transformers itself: every fixture under
// tests/fixtures/families/ (tools/make_family_fixtures.py: a tiny model written by transformers'
// own save_pretrained, and each MoE block's input, output and chosen experts captured from
// transformers' own block) is served by a real router + 2 shards with model.dtype f32; each MoE
// layer's input goes through Router.forward, and the experts chosen for every token must equal
// transformers' and the output must be within 1e-5 relative (max |Δ| / max |want|). A fixture's
// config.transformers4.json (the same model's config as transformers 4.57 writes it) must load
// into the same ModelConfig as its config.json. A fixture whose family the cluster cannot serve
// fails; kKnownGaps says why, so the failure names the missing piece.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/checkpoint.h"
#include "common/safetensors.h"
#include "tests/integration/test_cluster.h"

namespace moe::testing {
namespace {

namespace fs = std::filesystem;

// Families (by model_type) or single fixtures (by name) that are not served yet, and why. A gap
// must be refused with an error that names what is missing — never served wrong, never a crash —
// and a gap that starts to load fails the test until it leaves this list.
const std::map<std::string, std::string> kKnownGaps = {
    {"jetmoe",
     "JetMoeMoE adds a learned output bias (mlp.bias [H]) once per token after the weighted "
     "expert sum, which the cluster has no place for; its experts (input_linear/output_linear) and "
     "router (top-k of logits, softmax over k) are Granite-MoE's"},
    // AXK1MoE (modeling_axk1.py): DeepSeek-V3's block, then post_mlp_layernorm (an RMSNorm with
    // its own [H] weight) over routed + shared; the router has no block-output norm step.
    {"axk1",
     "AXK1MoE applies post_mlp_layernorm (RMSNorm, weight [H], rms_norm_eps) to the sum of the "
     "routed and shared experts; the router and the reference have no post-block norm step"},
};

// The fixtures directory: MOE_FAMILY_FIXTURES in the environment, else the source tree's.
std::string fixturesDir() {
  if (const char* env = std::getenv("MOE_FAMILY_FIXTURES"); env && *env) return env;
  return MOE_FAMILY_FIXTURES_DIR;
}

std::vector<std::string> fixtureNames() {
  std::vector<std::string> names;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(fixturesDir(), ec)) {
    if (fs::exists(entry.path() / "fixture.json")) names.push_back(entry.path().filename());
  }
  std::sort(names.begin(), names.end());
  if (names.empty()) names.push_back("none");  // FixturesExist reports it
  return names;
}

nlohmann::json readJson(const fs::path& p) {
  std::ifstream in(p);
  return nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
}

std::string readText(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

// A reference tensor in fp32 with its shape.
struct RefTensor {
  std::vector<float> values;
  std::vector<uint64_t> shape;
};

Result<RefTensor> loadRef(const SafetensorsFile& f, const std::string& name) {
  const TensorInfo* t = f.find(name);
  if (!t) return makeError("reference.safetensors has no " + name);
  RefTensor r;
  r.shape = t->shape;
  r.values.resize(t->numel());
  convertToF32(t->dtype, f.bytes(*t), r.values);
  return r;
}

// Every ModelConfig field that decides what the cluster computes, as text (for comparing the
// configs transformers 4 and 5 write for one model).
std::string describe(const ModelConfig& c) {
  std::ostringstream o;
  o << c.modelType << " H" << c.hiddenSize << " I" << c.intermediateSize << " E" << c.numExperts
    << " k" << c.topK << " L" << c.numLayers << " moe[";
  for (uint32_t l : c.moeLayers) o << l << ",";
  o << "] routing{" << c.routing.describe() << "} shared " << c.sharedIntermediateSize
    << (c.sharedExpertGated ? " gated" : "") << " act " << static_cast<int>(c.expertActivation)
    << " alpha " << c.swigluAlpha << " limit " << c.swigluLimit << " bias " << c.expertBias
    << " onInput " << c.weightOnInput << " ffn " << c.numFfnExperts << " combine x"
    << c.blockOutputScale() << " identity " << c.identityZeroExperts << " shared act "
    << static_cast<int>(c.sharedActivation);
  return o.str();
}

// Serves fixture `name` through a router + 2 shards (the shared expert on shard
// `sharedExpertShard`, or on the router when -1) and compares every MoE layer with transformers.
void expectClusterMatches(const std::string& name, int sharedExpertShard) {
  const fs::path dir = fs::path(fixturesDir()) / name;
  auto meta = readJson(dir / "fixture.json");
  ASSERT_TRUE(meta.is_object()) << "fixture.json unreadable";
  auto ckpt = Checkpoint::open(dir.string());
  ASSERT_TRUE(ckpt.isOk()) << ckpt.error();
  const ModelConfig model = ckpt.value()->config();
  std::vector<uint32_t> layers = meta.value("moe_layers", std::vector<uint32_t>{});
  EXPECT_EQ(layers, model.moeLayers) << "MoE layers differ from transformers'";

  ClusterSpec spec;
  spec.modelPath = fs::absolute(dir).string();
  spec.modelYaml = "  dtype: f32\n";
  const uint32_t E = model.numFfnExperts;
  spec.shardExperts.resize(2);
  for (uint32_t e = 0; e < E; ++e) spec.shardExperts[e < E / 2 ? 0 : 1].push_back(e);
  spec.sharedExpertShard = sharedExpertShard;
  const std::string yaml =
      writeCluster("family-" + name + (sharedExpertShard >= 0 ? "-shared-on-shard" : ""), spec);
  auto cluster = startCluster(yaml);
  ASSERT_TRUE(cluster);

  auto refFile = SafetensorsFile::open((dir / "reference.safetensors").string());
  ASSERT_TRUE(refFile.isOk()) << refFile.error();
  const SafetensorsFile& ref = *refFile.value();
  TestClient client(cluster->routerAddress());
  const uint32_t H = model.hiddenSize;
  for (uint32_t layer : layers) {
    SCOPED_TRACE("layer " + std::to_string(layer));
    const std::string p = "layers." + std::to_string(layer) + ".";
    auto in = loadRef(ref, p + "input");
    auto out = loadRef(ref, p + "output");
    auto ids = loadRef(ref, p + "expert_ids");
    ASSERT_TRUE(in.isOk() && out.isOk() && ids.isOk()) << "reference tensors of layer " << layer;
    const auto T = static_cast<uint32_t>(in.value().shape.at(0));
    const auto k = static_cast<uint32_t>(ids.value().shape.at(1));
    ASSERT_EQ(k, model.topK);
    ForwardExtras extras;
    extras.returnRouting = true;
    auto reply = client.forward(layer, in.value().values, T, H, extras);
    ASSERT_TRUE(reply.value) << reply.error;
    auto routing = reply.value->getRouting();
    ASSERT_EQ(routing.getExperts().size(), size_t{T} * k);
    uint32_t mismatches = 0, first = T;
    for (uint32_t t = 0; t < T; ++t) {
      std::multiset<uint32_t> got, want;
      for (uint32_t j = 0; j < k; ++j) {
        got.insert(routing.getExperts()[size_t{t} * k + j]);
        want.insert(static_cast<uint32_t>(ids.value().values[size_t{t} * k + j]));
      }
      if (got != want) {
        ++mismatches;
        first = std::min(first, t);
      }
    }
    EXPECT_EQ(mismatches, 0u) << "tokens routed differently from transformers; first: token "
                              << first;
    // Granite-MoE-Shared/Hybrid: the shared MLP sits in the decoder layer beside the block; the
    // fixture captures it as shared_output on the same input, and the layer adds both, as the
    // cluster does.
    std::vector<float> want = out.value().values;
    if (ref.find(p + "shared_output")) {
      auto shared = loadRef(ref, p + "shared_output");
      ASSERT_TRUE(shared.isOk() && shared.value().values.size() == want.size());
      for (size_t i = 0; i < want.size(); ++i) want[i] += shared.value().values[i];
    }
    const double err = maxRelErr(outputValues(*reply.value), want);
    EXPECT_LE(err, 1e-5) << "max relative error " << err << " (" << model.routing.describe() << ")";
    ::testing::Test::RecordProperty(
        (sharedExpertShard >= 0 ? name + "_shared_on_shard_" : std::string()) +
            "max_rel_err_layer" + std::to_string(layer),
        (std::ostringstream() << std::scientific << err).str());
    std::printf("[family] %s%s layer %u: max rel err %.3e, %u/%u tokens' experts identical (%s)\n",
                name.c_str(), sharedExpertShard >= 0 ? " (shared expert on a shard)" : "", layer,
                err, T - mismatches, T, model.routing.describe().c_str());
  }
}

class FamilyFixture : public ::testing::TestWithParam<std::string> {
 protected:
  fs::path dir() const { return fs::path(fixturesDir()) / GetParam(); }
  // The known gap of this fixture's family, "" when none.
  std::string gap() const {
    auto meta = readJson(dir() / "fixture.json");
    const std::string type = meta.value("model_type", "");
    auto it = kKnownGaps.find(GetParam());
    if (it == kKnownGaps.end()) it = kKnownGaps.find(type);
    return it == kKnownGaps.end() ? "" : "known gap (" + it->first + "): " + it->second;
  }
  // For a known gap: the checkpoint, or its first MoE layer's first expert, is refused with an
  // error message ("" when it loads).
  std::string refusal() const {
    auto ckpt = Checkpoint::open(dir().string());
    if (!ckpt.isOk()) return ckpt.error();
    const ModelConfig& c = ckpt.value()->config();
    if (c.moeLayers.empty()) return "no MoE layer";
    auto e = ckpt.value()->expert(c.moeLayers.front(), 0);
    return e.isOk() ? std::string() : e.error();
  }
};

TEST(FamilyFixtures, FixturesExist) {
  if (!fs::exists(fixturesDir())) {
    GTEST_SKIP() << fixturesDir() << " is absent (the fixtures come from "
                 << "tools/make_family_fixtures.py)";
  }
  EXPECT_NE(fixtureNames().front(), "none") << "no fixture under " << fixturesDir();
}

TEST_P(FamilyFixture, Transformers4ConfigLoadsTheSame) {
  if (GetParam() == "none") GTEST_SKIP() << "no fixtures";
  const fs::path v4 = dir() / "config.transformers4.json";
  if (!fs::exists(v4)) GTEST_SKIP() << "no config.transformers4.json";
  auto five = parseModelConfig(readText(dir() / "config.json"), (dir() / "config.json").string());
  auto four = parseModelConfig(readText(v4), v4.string());
  if (!gap().empty() && !five.isOk()) {  // an unknown family: both versions refused alike
    EXPECT_FALSE(four.isOk()) << "transformers 4's config loads, 5's does not: " << five.error();
    return;
  }
  ASSERT_TRUE(five.isOk()) << five.error() << "\n" << gap();
  ASSERT_TRUE(four.isOk()) << four.error() << "\n" << gap();
  EXPECT_EQ(describe(four.value()), describe(five.value()));
}

TEST_P(FamilyFixture, ClusterMatchesTransformers) {
  if (GetParam() == "none") GTEST_SKIP() << "no fixtures";
  const std::string why = gap();
  if (!why.empty()) {
    const std::string error = refusal();
    EXPECT_FALSE(error.empty()) << GetParam() << " now loads: take it out of kKnownGaps (" << why
                                << ") so it is compared with transformers";
    std::printf("[family] %s: %s; refused: %s\n", GetParam().c_str(), why.c_str(), error.c_str());
    return;
  }
  expectClusterMatches(GetParam(), /*sharedExpertShard=*/-1);
}

// A shared expert held by a shard comes back as one more weighted partial; the block's output
// factor (Cohere2-MoE's "average" halves routed + shared) applies to the sum all the same.
TEST(FamilyFixtures, SharedExpertOnAShardCombinesAsOnTheRouter) {
  for (const char* name :
       {"cohere2_moe_f32_per_expert", "afmoe_f32_per_expert", "hy_v3_f32_per_expert"}) {
    SCOPED_TRACE(name);
    if (!fs::exists(fs::path(fixturesDir()) / name / "fixture.json")) {
      ADD_FAILURE() << name << " is missing under " << fixturesDir();
      continue;
    }
    expectClusterMatches(name, /*sharedExpertShard=*/1);
  }
}

INSTANTIATE_TEST_SUITE_P(Families, FamilyFixture, ::testing::ValuesIn(fixtureNames()),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace moe::testing
