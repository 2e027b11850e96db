// Small helpers shared by the unit tests: substring assertions on error messages, a per-test
// scratch directory, and hand-written routing decisions.
#pragma once

#include <gtest/gtest.h>

#include <filesystem>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "common/checkpoint.h"
#include "router_service/gating.h"

namespace moe::unit {

// EXPECT_TRUE(contains(message, "part")): on failure prints both strings.
inline ::testing::AssertionResult contains(std::string_view text, std::string_view part) {
  if (text.find(part) != std::string_view::npos) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << "\"" << text << "\"\n  does not contain \"" << part << "\"";
}

inline ::testing::AssertionResult notContains(std::string_view text, std::string_view part) {
  if (text.find(part) == std::string_view::npos) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << "\"" << text << "\"\n  unexpectedly contains \"" << part << "\"";
}

// A fresh directory under the gtest temp dir, named after the running test; removed afterwards.
class ScratchDirTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = std::filesystem::path(::testing::TempDir()) /
           ("moe_unit_" + std::string(info->test_suite_name()) + "_" + info->name());
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  std::string path(std::string_view name) const { return (dir_ / name).string(); }

  std::filesystem::path dir_;
};

// A routing decision of `tokens` × `k` assignments, spelled out by a test.
inline router::RoutingDecision decision(uint32_t tokens, uint32_t k, std::vector<uint32_t> ids,
                                        std::vector<float> weights) {
  router::RoutingDecision d;
  d.tokens = tokens;
  d.k = k;
  d.ids = std::move(ids);
  d.weights = std::move(weights);
  return d;
}

// The ModelConfig of an MoE++ layer with E experts (E - 4 FFN experts), as config.json implies.
inline ModelConfig moePlusPlusConfig(uint32_t E) {
  ModelConfig m;
  m.modelType = "MoE++";
  m.numExperts = E;
  m.numFfnExperts = E - kMoePlusPlusZeroComputeExperts;
  m.topK = 2;
  m.gatingResidual = true;
  m.routing = moePlusPlusRecipe(m);
  return m;
}

}  // namespace moe::unit
