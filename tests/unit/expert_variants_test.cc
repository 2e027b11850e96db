// The family variants of the expert FFN served by a real ShardServer (its RPC entry point,
// validation, run queue and coalescing, the BLAS backend): gpt-oss's clamped SwiGLU with expert
// biases, Llama 4's routing weight on the expert's input (top-1), and NemotronH's non-gated relu²
// experts (up/down only: the checkpoint's gate matrix is dropped). Each shard's model config is
// the synthetic checkpoint's with the variant's fields set here, and its experts get biases from
// this test, because reading those fields and tensors from a gpt_oss / llama4 checkpoint is the
// loader's part (issue 13, family table); so this runs below the router, at the ExpertShard.run
// level. The shard's replies are compared with the client reference (client/reference
// addFfnExperts: expert by expert in plain code on the reference backend) built from the same
// config and tensors, and shown to differ from the plain-SwiGLU / weight-on-output answer.
#include <gtest/gtest.h>
#include <kj/async-io.h>
#include <prometheus/registry.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "client/reference/in_process_layer.h"
#include "client/reference/reference_experts.h"
#include "common/checkpoint.h"
#include "common/config.h"
#include "expert_service/expert_metrics.h"
#include "expert_service/expert_store.h"
#include "expert_service/shard_server.h"
#include "kernels/backend.h"
#include "kernels/resident_expert.h"
#include "tests/unit/test_util.h"
#include "tools/synthetic_checkpoint.h"

namespace moe::expert {
namespace {

constexpr uint32_t kH = 48, kI = 40, kE = 4, kLayer = 0;

// How a variant changes the synthetic Mixtral model.
struct Variant {
  const char* name;
  bool clampedWithBias;  // gpt-oss
  bool weightOnInput;    // Llama 4
  uint32_t topK;
  bool relu2 = false;  // NemotronH: down(relu(up(x))²), no gate
};
constexpr Variant kVariants[] = {
    {"gpt-oss: clamped SwiGLU + biases, top-2", true, false, 2},
    {"Llama 4: weight on the input, top-1", false, true, 1},
    {"NemotronH: non-gated relu2, top-2", false, false, 2, true},
};

ModelConfig variantModel(ModelConfig m, const Variant& v) {
  m.topK = v.topK;
  if (v.clampedWithBias) {
    m.expertActivation = ExpertActivation::kClampedSwiglu;
    m.swigluAlpha = 1.702f;
    m.swigluLimit = 7.0f;
    m.expertBias = true;
  }
  m.weightOnInput = v.weightOnInput;
  if (v.relu2) m.expertActivation = ExpertActivation::kRelu2;
  return m;
}

// The routing of T tokens: k distinct experts each, weights in (0.05, 1).
client::ReferenceRouting randomRouting(std::mt19937& rng, uint32_t T, uint32_t k) {
  client::ReferenceRouting r;
  r.k = k;
  std::uniform_real_distribution<float> weight(0.05f, 1.0f);
  std::vector<uint32_t> order(kE);
  for (uint32_t e = 0; e < kE; ++e) order[e] = e;
  for (uint32_t t = 0; t < T; ++t) {
    std::shuffle(order.begin(), order.end(), rng);
    for (uint32_t j = 0; j < k; ++j) {
      r.ids.push_back(order[j]);
      r.weights.push_back(weight(rng));
    }
  }
  r.dropped.assign(r.ids.size(), 0);
  return r;
}

double maxRelErr(const std::vector<float>& got, const std::vector<float>& want) {
  double maxDiff = 0.0, maxRef = 0.0;
  for (size_t i = 0; i < want.size(); ++i) {
    maxDiff = std::max(maxDiff, std::abs(double(got[i]) - double(want[i])));
    maxRef = std::max(maxRef, std::abs(double(want[i])));
  }
  return maxDiff / std::max(maxRef, 1e-30);
}

class ExpertVariantsTest : public unit::ScratchDirTest {
 protected:
  void SetUp() override {
    unit::ScratchDirTest::SetUp();
    SyntheticModelSpec spec;
    spec.hiddenSize = kH;
    spec.intermediateSize = kI;
    spec.numExperts = kE;
    spec.numLayers = 1;
    spec.dtype = DType::kF32;
    ASSERT_TRUE(writeSyntheticCheckpoint(spec, path("model")));
    auto ckpt = Checkpoint::open(path("model"));
    ASSERT_TRUE(ckpt) << ckpt.error();
    ckpt_ = std::move(ckpt).value();
  }

  // The checkpoint's expert with, for a model with expert biases, wide deterministic biases: the
  // gate pre-activation then exceeds +limit and the up one passes both ±limit for many rows.
  Result<ExpertTensors> tensors(const ModelConfig& m, uint32_t layer, uint32_t e) const {
    auto t = ckpt_->expert(layer, e);
    if (t && m.expertActivation == ExpertActivation::kRelu2) t.value().w1.clear();  // up/down only
    if (!t || !m.expertBias) return t;
    std::mt19937 rng(100 + e);
    std::uniform_real_distribution<float> wide(-12.0f, 12.0f), small(-1.0f, 1.0f);
    t.value().b1.resize(m.intermediateSize);
    t.value().b3.resize(m.intermediateSize);
    t.value().b2.resize(m.hiddenSize);
    for (float& b : t.value().b1) b = wide(rng);
    for (float& b : t.value().b3) b = wide(rng);
    for (float& b : t.value().b2) b = small(rng);
    return t;
  }

  ExpertStore::ExpertSource source(const ModelConfig& m) const {
    ExpertStore::ExpertSource s;
    s.expert = [this, m](uint32_t layer, uint32_t e) { return tensors(m, layer, e); };
    s.shared = [this](uint32_t layer) { return ckpt_->sharedExpert(layer); };
    return s;
  }

  // y = the client reference on (m, tensors): every expert uploaded to the reference backend
  // with uploadRoutedExpert, then addFfnExperts (moeExpertsInProcess underneath).
  std::vector<float> reference(const ModelConfig& m, const std::vector<float>& x, uint32_t T,
                               const client::ReferenceRouting& routing) const {
    auto backend = kernels::createBackend(kernels::BackendKind::kReference).value();
    std::vector<kernels::ResidentExpert> resident;
    std::vector<kernels::ExpertFfnWeights> ffn;
    for (uint32_t e = 0; e < kE; ++e) {
      auto t = tensors(m, kLayer, e);
      EXPECT_TRUE(t) << t.error();
      auto r = kernels::uploadRoutedExpert(*backend, m, t.value());
      EXPECT_TRUE(r) << r.error();
      resident.push_back(std::move(r).value());
    }
    for (const auto& r : resident) ffn.push_back(r.view());
    std::vector<float> y(size_t{T} * kH, 0.0f);
    const Status s = client::addFfnExperts(*backend, ffn, x, T, kH, routing, y, m.weightOnInput);
    EXPECT_TRUE(s) << s.message();
    return y;
  }

  std::unique_ptr<Checkpoint> ckpt_;
};

// A real ShardServer holding every expert of layer 0 for model `m`, on BLAS (one thread).
class Shard {
 public:
  Shard(const ModelConfig& m, const ExpertStore::ExpertSource& source, uint32_t windowUs)
      : io_(kj::setupAsyncIo()) {
    auto model = std::make_unique<ShardModel>();
    model->shard.name = "variant-shard";
    model->shard.listen = "127.0.0.1:1";
    model->shard.device.kind = ComputeDevice::Kind::kCpu;
    model->shard.threads = 1;
    for (uint32_t e = 0; e < kE; ++e) model->shard.experts.push_back(e);
    model->shard.batching.windowUs = windowUs;
    model->model = m;
    model->fingerprint = "test";
    model->maxInflight = 16;
    model->backend = kernels::createBackend(kernels::BackendKind::kBlas).value();
    auto store = ExpertStore::load(*model->backend, m, source, model->shard);
    EXPECT_TRUE(store) << store.error();
    model->store = std::move(store).value();
    metrics_ = std::make_unique<ExpertMetrics>(registry_, *model->store, "blas");
    client_ = kj::heap<ShardServer>(std::move(model), *metrics_, io_.provider->getTimer());
  }

  // One ExpertShard.run per routing: the rows each call names and, per expert, its (row, weight)
  // list, as the router's dispatch plan sends them. All calls are in flight at once, so with a
  // coalescing window they merge into one compute job.
  std::vector<std::vector<float>> run(const std::vector<std::vector<float>>& xs, uint32_t T,
                                      const std::vector<client::ReferenceRouting>& routings) {
    std::vector<kj::Promise<capnp::Response<proto::ExpertShard::RunResults>>> pending;
    for (size_t c = 0; c < xs.size(); ++c) {
      auto req = client_.runRequest();
      req.setLayer(kLayer);
      auto rows = req.initRows();
      rows.setDtype(proto::DType::F32);
      auto shape = rows.initShape(2);
      shape.set(0, T);
      shape.set(1, kH);
      auto data = rows.initData(xs[c].size() * sizeof(float));
      std::memcpy(data.begin(), xs[c].data(), data.size());
      const client::ReferenceRouting& r = routings[c];
      std::map<uint32_t, std::vector<std::pair<uint32_t, float>>> byExpert;
      for (uint32_t t = 0; t < T; ++t) {
        for (uint32_t j = 0; j < r.k; ++j) {
          byExpert[r.ids[t * r.k + j]].push_back({t, r.weights[t * r.k + j]});
        }
      }
      auto segs = req.initSegments(static_cast<unsigned>(byExpert.size()));
      unsigned s = 0;
      for (const auto& [expert, list] : byExpert) {
        segs[s].setExpert(expert);
        auto idx = segs[s].initRowIndex(static_cast<unsigned>(list.size()));
        auto wt = segs[s].initWeight(static_cast<unsigned>(list.size()));
        for (unsigned j = 0; j < list.size(); ++j) {
          idx.set(j, list[j].first);
          wt.set(j, list[j].second);
        }
        ++s;
      }
      kj::Promise<capnp::Response<proto::ExpertShard::RunResults>> sent = req.send();
      pending.push_back(kj::mv(sent));
    }
    std::vector<std::vector<float>> out;
    for (auto& p : pending) {
      auto resp = p.wait(io_.waitScope);
      auto data = resp.getOutput().getData();
      std::vector<float> y(data.size() / sizeof(float));
      std::memcpy(y.data(), data.begin(), data.size());
      out.push_back(std::move(y));
    }
    return out;
  }

  // Compute jobs run so far (moe_expert_coalesced_calls observes one sample per job).
  uint64_t jobs() const {
    for (const auto& family : registry_.Collect()) {
      if (family.name == "moe_expert_coalesced_calls") {
        return family.metric.at(0).histogram.sample_count;
      }
    }
    return 0;
  }

 private:
  kj::AsyncIoContext io_;
  prometheus::Registry registry_;
  std::unique_ptr<ExpertMetrics> metrics_;
  proto::ExpertShard::Client client_{nullptr};
};

TEST_F(ExpertVariantsTest, ShardMatchesTheReference) {
  for (const Variant& v : kVariants) {
    SCOPED_TRACE(v.name);
    const ModelConfig m = variantModel(ckpt_->config(), v);
    std::mt19937 rng(7);
    std::uniform_real_distribution<float> value(-2.0f, 2.0f);
    constexpr uint32_t T = 24;
    // Two calls: once alone each, once both in flight under a coalescing window (merged job).
    std::vector<std::vector<float>> xs(2, std::vector<float>(size_t{T} * kH));
    for (auto& x : xs) {
      for (float& f : x) f = value(rng);
    }
    const std::vector<client::ReferenceRouting> routings = {randomRouting(rng, T, v.topK),
                                                            randomRouting(rng, T, v.topK)};
    for (uint32_t windowUs : {0u, 200000u}) {
      SCOPED_TRACE("window_us " + std::to_string(windowUs));
      Shard shard(m, source(m), windowUs);
      const auto got = shard.run(xs, T, routings);
      if (windowUs > 0) {
        EXPECT_EQ(shard.jobs(), 1u) << "the two calls were not merged into one job";
      }
      for (size_t c = 0; c < xs.size(); ++c) {
        const std::vector<float> want = reference(m, xs[c], T, routings[c]);
        ASSERT_EQ(got[c].size(), want.size());
        EXPECT_LE(maxRelErr(got[c], want), 1e-5) << "call " << c;
        // The variant matters: the plain model (SwiGLU, no biases, weight on the output) answers
        // differently, so a shard that ignored the variant would fail above.
        const std::vector<float> plain = reference(ckpt_->config(), xs[c], T, routings[c]);
        EXPECT_GT(maxRelErr(plain, want), 1e-2) << "call " << c;
      }
    }
  }
}

TEST_F(ExpertVariantsTest, StoreRefusesMissingOrUnexpectedBiases) {
  auto backend = kernels::createBackend(kernels::BackendKind::kBlas).value();
  ShardConfig shard;
  shard.name = "s";
  shard.experts = {0, 1};
  ModelConfig withBias = variantModel(ckpt_->config(), kVariants[0]);
  // The model says biases, the tensors have none.
  auto missing = ExpertStore::load(*backend, withBias, source(ckpt_->config()), shard);
  ASSERT_FALSE(missing);
  EXPECT_TRUE(unit::contains(missing.error(), "layer 0 expert 0: b1"));
  // Biases given to a model without them.
  auto unexpected = ExpertStore::load(*backend, ckpt_->config(), source(withBias), shard);
  ASSERT_FALSE(unexpected);
  EXPECT_TRUE(unit::contains(unexpected.error(), "model without expert biases"));
  // A bias of the wrong length names it.
  ExpertStore::ExpertSource shortBias = source(withBias);
  shortBias.expert = [this, withBias](uint32_t layer, uint32_t e) {
    auto t = tensors(withBias, layer, e);
    t.value().b2.pop_back();
    return t;
  };
  auto wrong = ExpertStore::load(*backend, withBias, shortBias, shard);
  ASSERT_FALSE(wrong);
  EXPECT_TRUE(unit::contains(wrong.error(), "b2: 47 elements, expected 48"));
}

TEST_F(ExpertVariantsTest, StoreRefusesAGateForANonGatedExpert) {
  auto backend = kernels::createBackend(kernels::BackendKind::kBlas).value();
  ShardConfig shard;
  shard.name = "s";
  shard.experts = {0};
  const ModelConfig relu2 = variantModel(ckpt_->config(), kVariants[2]);
  // The checkpoint's SwiGLU tensors (with w1) handed to a relu2 model: refused, not ignored.
  auto refused = ExpertStore::load(*backend, relu2, source(ckpt_->config()), shard);
  ASSERT_FALSE(refused);
  EXPECT_TRUE(unit::contains(refused.error(), "layer 0 expert 0: w1: a gate projection given"));
  // And up/down only for a gated model: the missing gate is named.
  auto missing = ExpertStore::load(*backend, ckpt_->config(), source(relu2), shard);
  ASSERT_FALSE(missing);
  EXPECT_TRUE(unit::contains(missing.error(), "layer 0 expert 0: w1")) << missing.error();
}

TEST_F(ExpertVariantsTest, StoreRefusesGatedSharedExpertWithWeightOnInput) {
  auto backend = kernels::createBackend(kernels::BackendKind::kBlas).value();
  ShardConfig shard;
  shard.name = "s";
  shard.experts = {0};
  shard.sharedExpert = true;
  ModelConfig m = variantModel(ckpt_->config(), kVariants[1]);
  m.sharedExpertGated = true;
  m.sharedIntermediateSize = kI;
  auto refused = ExpertStore::load(*backend, m, source(m), shard);
  ASSERT_FALSE(refused);
  EXPECT_TRUE(unit::contains(refused.error(), "gated shared expert"));
}

}  // namespace
}  // namespace moe::expert
