// Unit tests for common/config: cluster YAML parsing into typed structs, error messages that name
// file:line and the dotted key, validatePlacement against a model, and parseHostPort.
#include "common/config.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/checkpoint.h"
#include "tests/unit/test_util.h"

namespace moe {
namespace {

using unit::contains;

// Joins lines with '\n' so each test states its line numbers explicitly (line 1 is the first).
std::string lines(std::initializer_list<std::string_view> ls) {
  std::string out;
  for (auto l : ls) {
    out += l;
    out += '\n';
  }
  return out;
}

Result<ClusterConfig> parse(std::string_view yaml) {
  return parseClusterConfig(yaml, "cluster.yaml", "/etc/moe");
}

// The error of a parse that must fail ("" and a test failure when it parsed).
std::string errorOf(std::string_view yaml) {
  auto r = parse(yaml);
  EXPECT_FALSE(r.isOk()) << "parsed, but an error was expected:\n" << yaml;
  return r.isOk() ? std::string() : r.error();
}

// A valid two-shard config; tests that need an error at a known line spell their YAML out.
const std::string kMinimal = lines({
    "model:",                      // 1
    "  path: /models/m",           // 2
    "shards:",                     // 3
    "  - name: s0",                // 4
    "    listen: 127.0.0.1:7201",  // 5
    "    experts: [0, 1]",         // 6
    "  - name: s1",                // 7
    "    listen: 127.0.0.1:7202",  // 8
    "    experts: [2, 3]",         // 9
});

std::vector<uint32_t> ids(std::initializer_list<uint32_t> v) {
  return v;
}

// ---------------------------------------------------------------------------------------------
// Valid configs

TEST(ConfigParse, FullConfigParsesIntoStructs) {
  const std::string yaml = lines({
      "# a full cluster",
      "model:",
      "  path: ckpt/../models/mixtral",
      "router:",
      "  listen: 0.0.0.0:7100",
      "  device: reference",
      "  max_tokens: 512",
      "shards:",
      "  - name: shard-0",
      "    listen: 127.0.0.1:7201",
      "    device: cuda:1",
      "    experts: [0, 1, 5]",
      "  - name: shard-1",
      "    listen: 10.0.0.2:7202",
      "    device: auto",
      "    experts: \"2-4\"",
      "    layers: [1, 3]",
      "  - name: shard-2",
      "    listen: host-2:7203",
      "    device: cpu",
      "    experts: [\"6-7\", 0]",
      "    layers: all",
      "  - name: shard-3",
      "    listen: host-3:7204",
      "    device: auto:2",
      "    experts: 3",
      "timeouts:",
      "  request_ms: 1000",
      "  shard_call_ms: 500",
      "  connect_ms: 100",
  });
  auto r = parse(yaml);
  ASSERT_TRUE(r.isOk()) << r.error();
  const ClusterConfig& c = r.value();
  EXPECT_EQ(c.sourcePath, "cluster.yaml");
  EXPECT_EQ(c.modelPath, "/etc/moe/models/mixtral");  // relative: against baseDir, normalised

  EXPECT_EQ(c.router.listen, "0.0.0.0:7100");
  EXPECT_EQ(c.router.device.kind, ComputeDevice::Kind::kReference);
  EXPECT_EQ(c.router.device.str(), "reference");
  EXPECT_EQ(c.router.maxTokens, 512u);

  ASSERT_EQ(c.shards.size(), 4u);
  const ShardConfig& s0 = c.shards[0];
  EXPECT_EQ(s0.name, "shard-0");
  EXPECT_EQ(s0.listen, "127.0.0.1:7201");
  EXPECT_EQ(s0.device.kind, ComputeDevice::Kind::kCuda);
  EXPECT_EQ(s0.device.index, 1);
  EXPECT_EQ(s0.device.str(), "cuda:1");
  EXPECT_EQ(s0.experts, ids({0, 1, 5}));
  EXPECT_FALSE(s0.layers.has_value());  // omitted: every MoE layer
  EXPECT_TRUE(s0.servesLayer(0));
  EXPECT_TRUE(s0.servesLayer(7));

  const ShardConfig& s1 = c.shards[1];
  EXPECT_EQ(s1.device.kind, ComputeDevice::Kind::kAuto);
  EXPECT_EQ(s1.device.index, 0);
  EXPECT_EQ(s1.device.str(), "auto");
  EXPECT_EQ(s1.experts, ids({2, 3, 4}));  // "A-B" is inclusive
  ASSERT_TRUE(s1.layers.has_value());
  EXPECT_EQ(*s1.layers, ids({1, 3}));
  EXPECT_TRUE(s1.servesLayer(1));
  EXPECT_TRUE(s1.servesLayer(3));
  EXPECT_FALSE(s1.servesLayer(0));
  EXPECT_FALSE(s1.servesLayer(2));

  const ShardConfig& s2 = c.shards[2];
  EXPECT_EQ(s2.device.kind, ComputeDevice::Kind::kCpu);
  EXPECT_EQ(s2.device.str(), "cpu");
  EXPECT_EQ(s2.experts, ids({6, 7, 0}));  // mixed list: ranges expanded in place
  EXPECT_FALSE(s2.layers.has_value());    // "all"

  const ShardConfig& s3 = c.shards[3];
  EXPECT_EQ(s3.device.kind, ComputeDevice::Kind::kAuto);
  EXPECT_EQ(s3.device.index, 2);
  EXPECT_EQ(s3.device.str(), "auto:2");
  EXPECT_EQ(s3.experts, ids({3}));  // a single scalar id

  EXPECT_EQ(c.timeouts.requestMs, 1000u);
  EXPECT_EQ(c.timeouts.shardCallMs, 500u);
  EXPECT_EQ(c.timeouts.connectMs, 100u);

  EXPECT_EQ(c.findShard("shard-2"), &c.shards[2]);
  EXPECT_EQ(c.findShard("shard-9"), nullptr);
}

TEST(ConfigParse, DefaultsWhenRouterAndTimeoutsOmitted) {
  auto r = parse(kMinimal);
  ASSERT_TRUE(r.isOk()) << r.error();
  const ClusterConfig& c = r.value();
  EXPECT_EQ(c.modelPath, "/models/m");  // absolute: kept as is
  EXPECT_EQ(c.router.listen, "127.0.0.1:7100");
  EXPECT_EQ(c.router.device.kind, ComputeDevice::Kind::kCpu);
  EXPECT_EQ(c.router.maxTokens, 8192u);
  EXPECT_EQ(c.timeouts.requestMs, 60000u);
  EXPECT_EQ(c.timeouts.shardCallMs, 30000u);
  EXPECT_EQ(c.timeouts.connectMs, 2000u);
  ASSERT_EQ(c.shards.size(), 2u);
  EXPECT_EQ(c.shards[0].device.kind, ComputeDevice::Kind::kAuto);  // shard default
  EXPECT_EQ(c.shards[0].experts, ids({0, 1}));
  EXPECT_EQ(c.shards[1].experts, ids({2, 3}));
}

TEST(ConfigParse, PartialRouterSectionKeepsOtherDefaults) {
  auto r = parse(lines({
      "model: {path: m}",
      "router: {max_tokens: 16}",
      "shards: [{name: a, listen: 'h:1', experts: 0}]",
  }));
  ASSERT_TRUE(r.isOk()) << r.error();
  EXPECT_EQ(r.value().modelPath, "/etc/moe/m");
  EXPECT_EQ(r.value().router.maxTokens, 16u);
  EXPECT_EQ(r.value().router.listen, "127.0.0.1:7100");
  EXPECT_EQ(r.value().router.device.kind, ComputeDevice::Kind::kCpu);
}

TEST(ConfigParse, DeviceStrings) {
  struct Case {
    const char* text;
    ComputeDevice::Kind kind;
    int index;
  };
  for (const Case& c :
       {Case{"auto", ComputeDevice::Kind::kAuto, 0}, Case{"cpu", ComputeDevice::Kind::kCpu, 0},
        Case{"reference", ComputeDevice::Kind::kReference, 0},
        Case{"cuda:0", ComputeDevice::Kind::kCuda, 0},
        Case{"cuda:7", ComputeDevice::Kind::kCuda, 7},
        Case{"auto:3", ComputeDevice::Kind::kAuto, 3}}) {
    SCOPED_TRACE(c.text);
    auto r = parse(lines({"model: {path: m}", "router: {device: '" + std::string(c.text) + "'}",
                          "shards: [{name: a, listen: 'h:1', experts: 0}]"}));
    ASSERT_TRUE(r.isOk()) << r.error();
    EXPECT_EQ(r.value().router.device.kind, c.kind);
    EXPECT_EQ(r.value().router.device.index, c.index);
    EXPECT_EQ(r.value().router.device.str(), c.text);
  }
}

class ConfigFile : public unit::ScratchDirTest {};

TEST_F(ConfigFile, LoadResolvesModelPathAgainstFileDirectory) {
  std::filesystem::create_directories(dir_ / "conf");
  const std::string file = path("conf/cluster.yaml");
  {
    std::ofstream out(file);
    out << "model:\n  path: ../ckpt\n"
        << "shards:\n  - {name: s0, listen: '127.0.0.1:7201', experts: [0]}\n";
  }
  auto r = loadClusterConfig(file);
  ASSERT_TRUE(r.isOk()) << r.error();
  EXPECT_EQ(r.value().sourcePath, file);
  EXPECT_EQ(r.value().modelPath,
            (std::filesystem::absolute(dir_) / "ckpt").lexically_normal().string());
}

TEST_F(ConfigFile, ErrorsNameTheFilePath) {
  const std::string file = path("bad.yaml");
  {
    std::ofstream out(file);
    out << "model:\n  path: /m\n  colour: red\n";
  }
  auto r = loadClusterConfig(file);
  ASSERT_FALSE(r.isOk());
  EXPECT_TRUE(contains(r.error(), file + ":3: model.colour: unknown key"));
}

TEST(ConfigParse, LoadMissingFileNamesThePath) {
  auto r = loadClusterConfig("/nonexistent/moe/cluster.yaml");
  ASSERT_FALSE(r.isOk());
  EXPECT_TRUE(contains(r.error(), "/nonexistent/moe/cluster.yaml: cannot open cluster config"));
}

// ---------------------------------------------------------------------------------------------
// Errors: "<source>:<line>: <dotted key>: <what>"

TEST(ConfigErrors, UnknownTopLevelKey) {
  std::string yaml = kMinimal + "colour: red\n";  // line 10
  auto e = errorOf(yaml);
  EXPECT_TRUE(contains(e, "cluster.yaml:10: colour: unknown key"));
  EXPECT_TRUE(contains(e, "expected one of: model, router, shards, timeouts"));
}

TEST(ConfigErrors, UnknownKeyInSecondShard) {
  auto e = errorOf(lines({
      "model:",                      // 1
      "  path: /models/m",           // 2
      "shards:",                     // 3
      "  - name: s0",                // 4
      "    listen: 127.0.0.1:7201",  // 5
      "    experts: [0, 1]",         // 6
      "  - name: s1",                // 7
      "    listen: 127.0.0.1:7202",  // 8
      "    replicas: 2",             // 9
      "    experts: [2, 3]",         // 10
  }));
  EXPECT_TRUE(contains(e, "cluster.yaml:9: shards[1].replicas: unknown key"));
  EXPECT_TRUE(contains(e, "name, listen, device, experts, layers"));
}

TEST(ConfigErrors, UnknownKeyInRouterAndTimeouts) {
  EXPECT_TRUE(contains(errorOf(kMinimal + "router:\n  max_token: 5\n"),
                       "cluster.yaml:11: router.max_token: unknown key"));
  EXPECT_TRUE(contains(errorOf(kMinimal + "timeouts:\n  connect_ms: 5\n  request: 9\n"),
                       "cluster.yaml:12: timeouts.request: unknown key"));
}

TEST(ConfigErrors, MissingModelPath) {
  auto e = errorOf(lines({
      "shards:",                                               // 1
      "  - {name: s0, listen: '127.0.0.1:7201', experts: 0}",  // 2
      "model: {}",                                             // 3
  }));
  EXPECT_TRUE(contains(e, "cluster.yaml:3: model.path: missing"));
}

TEST(ConfigErrors, MissingModelSection) {
  auto e = errorOf(lines({
      "shards:",                                               // 1
      "  - {name: s0, listen: '127.0.0.1:7201', experts: 0}",  // 2
  }));
  EXPECT_TRUE(contains(e, "cluster.yaml:1: model: missing"));
}

TEST(ConfigErrors, EmptyModelPath) {
  auto e =
      errorOf(lines({"model:", "  path: ''", "shards: [{name: a, listen: 'h:1', experts: 0}]"}));
  EXPECT_TRUE(contains(e, "cluster.yaml:2: model.path: must not be empty"));
}

TEST(ConfigErrors, MissingShards) {
  auto e = errorOf(lines({"model:", "  path: /m"}));
  EXPECT_TRUE(contains(e, "cluster.yaml:1: shards: missing"));
}

TEST(ConfigErrors, EmptyShardList) {
  auto e = errorOf(lines({"model:", "  path: /m", "shards: []"}));
  EXPECT_TRUE(contains(e, "cluster.yaml:3: shards: expected a non-empty list"));
}

TEST(ConfigErrors, ShardsNotAList) {
  auto e = errorOf(lines({"model:", "  path: /m", "shards: {name: a}"}));
  EXPECT_TRUE(contains(e, "cluster.yaml:3: shards: expected a non-empty list"));
}

TEST(ConfigErrors, MissingRequiredShardKey) {
  auto e = errorOf(lines({
      "model: {path: /m}",           // 1
      "shards:",                     // 2
      "  - name: s0",                // 3
      "    listen: 127.0.0.1:7201",  // 4
      "    experts: [0]",            // 5
      "  - name: s1",                // 6
      "    listen: 127.0.0.1:7202",  // 7
  }));
  EXPECT_TRUE(contains(e, "cluster.yaml:6: shards[1].experts: missing"));
}

TEST(ConfigErrors, BadPort) {
  struct Case {
    const char* listen;
    const char* port;
  };
  for (const Case& c : {Case{"127.0.0.1:0", "0"}, Case{"127.0.0.1:70000", "70000"},
                        Case{"127.0.0.1:http", "http"}, Case{"127.0.0.1:", ""}}) {
    SCOPED_TRACE(c.listen);
    auto e = errorOf(lines({
        "model: {path: /m}",                            // 1
        "shards:",                                      // 2
        "  - name: s0",                                 // 3
        "    experts: [0]",                             // 4
        "    listen: '" + std::string(c.listen) + "'",  // 5
    }));
    EXPECT_TRUE(contains(e, "cluster.yaml:5: shards[0].listen: port '" + std::string(c.port) +
                                "' in '" + c.listen + "' is not in 1..65535"));
  }
}

TEST(ConfigErrors, RouterListenWithoutPort) {
  auto e = errorOf(kMinimal + "router:\n  listen: localhost\n");
  EXPECT_TRUE(contains(e, "cluster.yaml:11: router.listen: 'localhost' is not host:port"));
}

TEST(ConfigErrors, DuplicateShardName) {
  auto e = errorOf(lines({
      "model: {path: /m}",           // 1
      "shards:",                     // 2
      "  - name: s0",                // 3
      "    listen: 127.0.0.1:7201",  // 4
      "    experts: [0]",            // 5
      "  - name: s0",                // 6
      "    listen: 127.0.0.1:7202",  // 7
      "    experts: [1]",            // 8
  }));
  EXPECT_TRUE(contains(e, "cluster.yaml:6: shards[1].name: shard name 's0' used twice"));
}

TEST(ConfigErrors, DuplicateListenAddress) {
  auto e = errorOf(lines({
      "model: {path: /m}",           // 1
      "shards:",                     // 2
      "  - name: s0",                // 3
      "    listen: 127.0.0.1:7201",  // 4
      "    experts: [0]",            // 5
      "  - name: s1",                // 6
      "    experts: [1]",            // 7
      "    listen: 127.0.0.1:7201",  // 8
  }));
  EXPECT_TRUE(contains(e,
                       "cluster.yaml:8: shards[1].listen: address 127.0.0.1:7201 is already "
                       "used by another service"));
}

TEST(ConfigErrors, ShardListenOnRouterAddress) {
  // The router's default address counts too.
  auto e = errorOf(lines({
      "model: {path: /m}",           // 1
      "shards:",                     // 2
      "  - name: s0",                // 3
      "    listen: 127.0.0.1:7100",  // 4
      "    experts: [0]",            // 5
  }));
  EXPECT_TRUE(contains(e, "cluster.yaml:4: shards[0].listen: address 127.0.0.1:7100 is already"));
}

TEST(ConfigErrors, BadDeviceString) {
  auto e = errorOf(kMinimal + "router:\n  device: gpu0\n");
  EXPECT_TRUE(contains(e, "cluster.yaml:11: router.device: 'gpu0' is not a device"));
  EXPECT_TRUE(contains(e, "auto, cpu, reference, cuda:N"));

  for (const char* bad : {"cuda:", "cuda:x", "cuda:-1", "cuda:1x", "cuda:256"}) {
    SCOPED_TRACE(bad);
    auto e2 = errorOf(lines({
        "model: {path: /m}",                       // 1
        "shards:",                                 // 2
        "  - name: s0",                            // 3
        "    listen: 127.0.0.1:7201",              // 4
        "    experts: [0]",                        // 5
        "    device: '" + std::string(bad) + "'",  // 6
    }));
    EXPECT_TRUE(contains(
        e2, "cluster.yaml:6: shards[0].device: bad device index in '" + std::string(bad) + "'"));
  }
}

TEST(ConfigErrors, BadRange) {
  auto e = errorOf(lines({
      "model: {path: /m}",           // 1
      "shards:",                     // 2
      "  - name: s0",                // 3
      "    listen: 127.0.0.1:7201",  // 4
      "    experts: \"5-2\"",        // 5
  }));
  EXPECT_TRUE(
      contains(e, "cluster.yaml:5: shards[0].experts: bad range '5-2' (expected A-B with A <= B)"));

  for (const char* bad : {"3-", "1-x", "1-2-3"}) {
    SCOPED_TRACE(bad);
    auto e2 = errorOf(lines({
        "model: {path: /m}",                   // 1
        "shards:",                             // 2
        "  - name: s0",                        // 3
        "    listen: 127.0.0.1:7201",          // 4
        "    experts:",                        // 5
        "      - 0",                           // 6
        "      - '" + std::string(bad) + "'",  // 7
    }));
    EXPECT_TRUE(
        contains(e2, "cluster.yaml:7: shards[0].experts: bad range '" + std::string(bad) + "'"));
  }
}

TEST(ConfigErrors, NegativeExpertId) {
  auto e = errorOf(lines({
      "model: {path: /m}",           // 1
      "shards:",                     // 2
      "  - name: s0",                // 3
      "    listen: 127.0.0.1:7201",  // 4
      "    experts: [0, -1]",        // 5
  }));
  EXPECT_TRUE(contains(e, "cluster.yaml:5: shards[0].experts: '-1' is not a non-negative integer"));
}

TEST(ConfigErrors, DuplicateExpertId) {
  auto e = errorOf(lines({
      "model: {path: /m}",           // 1
      "shards:",                     // 2
      "  - name: s0",                // 3
      "    listen: 127.0.0.1:7201",  // 4
      "    experts: [0, 1, 1]",      // 5
  }));
  EXPECT_TRUE(contains(e, "cluster.yaml:5: shards[0].experts: id 1 listed twice"));

  // A range overlapping a single id.
  auto e2 = errorOf(lines({
      "model: {path: /m}",           // 1
      "shards:",                     // 2
      "  - name: s0",                // 3
      "    listen: 127.0.0.1:7201",  // 4
      "    layers: [0]",             // 5
      "    experts: ['0-3', 2]",     // 6
  }));
  EXPECT_TRUE(contains(e2, "cluster.yaml:6: shards[0].experts: id 2 listed twice"));
}

TEST(ConfigErrors, EmptyLayerList) {
  auto e = errorOf(lines({
      "model: {path: /m}",           // 1
      "shards:",                     // 2
      "  - name: s0",                // 3
      "    listen: 127.0.0.1:7201",  // 4
      "    experts: [0]",            // 5
      "    layers: []",              // 6
  }));
  EXPECT_TRUE(contains(e, "cluster.yaml:6: shards[0].layers: must name at least one id"));
}

TEST(ConfigErrors, MaxTokensNegativeOrNotAnInteger) {
  EXPECT_TRUE(contains(errorOf(kMinimal + "router:\n  max_tokens: -5\n"),
                       "cluster.yaml:11: router.max_tokens: '-5' is not a non-negative integer"));
  EXPECT_TRUE(contains(errorOf(kMinimal + "router:\n  max_tokens: 1.5\n"),
                       "cluster.yaml:11: router.max_tokens: '1.5' is not a non-negative integer"));
  EXPECT_TRUE(contains(errorOf(kMinimal + "router:\n  max_tokens: lots\n"),
                       "cluster.yaml:11: router.max_tokens: 'lots' is not a non-negative integer"));
  EXPECT_TRUE(contains(errorOf(kMinimal + "router:\n  max_tokens: [1]\n"),
                       "cluster.yaml:11: router.max_tokens: expected an integer"));
}

TEST(ConfigErrors, MaxTokensOutOfRange) {
  EXPECT_TRUE(contains(errorOf(kMinimal + "router:\n  max_tokens: 0\n"),
                       "cluster.yaml:11: router.max_tokens: 0 out of range [1, 1048576]"));
  EXPECT_TRUE(contains(errorOf(kMinimal + "router:\n  max_tokens: 1048577\n"),
                       "cluster.yaml:11: router.max_tokens: 1048577 out of range [1, 1048576]"));
}

TEST(ConfigErrors, TimeoutOutOfRange) {
  EXPECT_TRUE(contains(errorOf(kMinimal + "timeouts:\n  shard_call_ms: 0\n"),
                       "cluster.yaml:11: timeouts.shard_call_ms: 0 out of range [1, 3600000]"));
}

TEST(ConfigErrors, SectionNotAMapping) {
  EXPECT_TRUE(
      contains(errorOf(kMinimal + "router: 7\n"), "cluster.yaml:10: router: expected a mapping"));
}

TEST(ConfigErrors, InvalidYamlSyntaxReportsLine) {
  auto e = errorOf(lines({
      "model:",               // 1
      "  path: /models/m",    // 2
      "   bad: indentation",  // 3
      "shards: []",           // 4
  }));
  EXPECT_TRUE(contains(e, "cluster.yaml:3: invalid YAML"));

  auto tab = errorOf(lines({
      "model:",           // 1
      "  path: /m",       // 2
      "shards:",          // 3
      "  - name: s0",     // 4
      "\tlisten: 'h:1'",  // 5  a tab as indentation
  }));
  EXPECT_TRUE(contains(tab, "cluster.yaml:5: invalid YAML: illegal tab"));

  auto brace = errorOf(lines({
      "model:",                                        // 1
      "  path: /m",                                    // 2
      "shards:",                                       // 3
      "  - {name: s0, listen: 'a:1', experts: [0]}}",  // 4  one '}' too many
  }));
  EXPECT_TRUE(contains(brace, "cluster.yaml:4: invalid YAML: illegal flow end"));

  // An unclosed flow sequence is noticed on the next line, where the parser finds it unclosed.
  auto open = errorOf(lines({
      "model:",                      // 1
      "  path: /models/m",           // 2
      "shards:",                     // 3
      "  - name: s0",                // 4
      "    listen: 127.0.0.1:7201",  // 5
      "    experts: [0, 1",          // 6
      "  - name: s1",                // 7
  }));
  EXPECT_TRUE(contains(open, "cluster.yaml:7: invalid YAML: end of sequence flow not found"));
}

TEST(ConfigErrors, EmptyFile) {
  EXPECT_TRUE(contains(errorOf(""), "cluster.yaml: (top level): the file is empty"));
  EXPECT_TRUE(contains(errorOf("# only a comment\n"), "the file is empty"));
}

// ---------------------------------------------------------------------------------------------
// Known bugs in the code under test: these fail until common/config.cc is fixed.

// Regression (common/config.cc, parse → checkKeys(root, "", ...): a top-level document that is not
// a mapping is reported with an empty key ("cluster.yaml:1: : expected a mapping"); the empty-file
// case names it "(top level)", and errors must name the key.
TEST(ConfigRegression, TopLevelNotAMappingNamesTheTopLevel) {
  auto e = errorOf("- a\n- b\n");
  EXPECT_TRUE(contains(e, "expected a mapping"));
  EXPECT_TRUE(contains(e, "cluster.yaml:1: (top level): expected a mapping"));
}

// Regression (common/config.cc, Parser::checkKeys / parse): a key given twice in one mapping is
// accepted silently and the later value is ignored (yaml-cpp's operator[] returns the first), so
// a second "shards:" section drops its shards without a word. Expected: an error naming the
// line of the repeated key.
TEST(ConfigRegression, DuplicateKeyIsAnError) {
  auto r = parse(lines({
      "model:",                                       // 1
      "  path: /m",                                   // 2
      "shards:",                                      // 3
      "  - {name: s0, listen: 'a:1', experts: [0]}",  // 4
      "shards:",                                      // 5
      "  - {name: s1, listen: 'a:2', experts: [1]}",  // 6
  }));
  EXPECT_FALSE(r.isOk()) << "accepted; shards kept: " << (r.isOk() ? r.value().shards.size() : 0);
  if (!r.isOk()) {
    EXPECT_TRUE(contains(r.error(), "cluster.yaml:5: shards"));
  }

  auto r2 = parse(lines({
      "model:",                                       // 1
      "  path: /m",                                   // 2
      "  path: /other",                               // 3
      "shards:",                                      // 4
      "  - {name: s0, listen: 'a:1', experts: [0]}",  // 5
  }));
  EXPECT_FALSE(r2.isOk()) << "accepted; model.path = " << (r2.isOk() ? r2.value().modelPath : "");
  if (!r2.isOk()) {
    EXPECT_TRUE(contains(r2.error(), "cluster.yaml:3: model.path"));
  }
}

// ---------------------------------------------------------------------------------------------
// validatePlacement

ModelConfig model4x2() {
  ModelConfig m;
  m.modelType = "mixtral";
  m.hiddenSize = 8;
  m.intermediateSize = 16;
  m.numExperts = 4;
  m.numFfnExperts = 4;
  m.topK = 2;
  m.numLayers = 3;
  m.moeLayers = {0, 2};
  return m;
}

ClusterConfig mustParse(const std::string& yaml) {
  auto r = parse(yaml);
  EXPECT_TRUE(r.isOk()) << r.error();
  return r.isOk() ? r.value() : ClusterConfig{};
}

TEST(ValidatePlacement, AcceptsFullCoverage) {
  auto c = mustParse(lines({
      "model: {path: /m}",
      "shards:",
      "  - {name: a, listen: 'h:1', experts: '0-3', layers: [0]}",
      "  - {name: b, listen: 'h:2', experts: [0, 1], layers: [2]}",
      "  - {name: c, listen: 'h:3', experts: [2, 3]}",
  }));
  auto s = validatePlacement(c, model4x2());
  EXPECT_TRUE(s.isOk()) << s.message();
}

TEST(ValidatePlacement, ExpertIdOutOfRange) {
  auto c = mustParse(lines({
      "model: {path: /m}",
      "shards:",
      "  - {name: a, listen: 'h:1', experts: '0-3'}",
      "  - {name: b, listen: 'h:2', experts: [1, 4]}",
  }));
  auto s = validatePlacement(c, model4x2());
  ASSERT_FALSE(s.isOk());
  EXPECT_TRUE(contains(s.message(),
                       "cluster.yaml: shard b lists expert 4 but the model has 4 FFN experts"));
}

TEST(ValidatePlacement, LayerNotAnMoeLayer) {
  auto c = mustParse(lines({
      "model: {path: /m}",
      "shards:",
      "  - {name: a, listen: 'h:1', experts: '0-3'}",
      "  - {name: b, listen: 'h:2', experts: [1], layers: [0, 1]}",
  }));
  auto s = validatePlacement(c, model4x2());
  ASSERT_FALSE(s.isOk());
  EXPECT_TRUE(contains(
      s.message(), "cluster.yaml: shard b lists layer 1, which is not an MoE layer of the model"));
}

TEST(ValidatePlacement, UnservedExpertOfLayer) {
  auto c = mustParse(lines({
      "model: {path: /m}",
      "shards:",
      "  - {name: a, listen: 'h:1', experts: '0-3', layers: [0]}",
      "  - {name: b, listen: 'h:2', experts: [0, 1, 3], layers: [2]}",
  }));
  auto s = validatePlacement(c, model4x2());
  ASSERT_FALSE(s.isOk());
  EXPECT_TRUE(contains(s.message(), "cluster.yaml: no shard serves expert 2 of layer 2"));
}

// ---------------------------------------------------------------------------------------------
// parseHostPort

TEST(ParseHostPort, Valid) {
  auto a = parseHostPort("localhost:80");
  ASSERT_TRUE(a.isOk()) << a.error();
  EXPECT_EQ(a.value().first, "localhost");
  EXPECT_EQ(a.value().second, 80);
  auto b = parseHostPort("[::1]:65535");
  ASSERT_TRUE(b.isOk()) << b.error();
  EXPECT_EQ(b.value().first, "[::1]");
  EXPECT_EQ(b.value().second, 65535);
  auto c = parseHostPort("0.0.0.0:1");
  ASSERT_TRUE(c.isOk()) << c.error();
  EXPECT_EQ(c.value().second, 1);
}

TEST(ParseHostPort, Invalid) {
  EXPECT_TRUE(contains(parseHostPort("localhost").error(), "'localhost' is not host:port"));
  EXPECT_TRUE(contains(parseHostPort(":80").error(), "':80' is not host:port"));
  EXPECT_TRUE(contains(parseHostPort("h:0").error(), "port '0' in 'h:0' is not in 1..65535"));
  EXPECT_TRUE(
      contains(parseHostPort("h:65536").error(), "port '65536' in 'h:65536' is not in 1..65535"));
  EXPECT_TRUE(contains(parseHostPort("h:-1").error(), "port '-1'"));
  EXPECT_TRUE(contains(parseHostPort("h:80x").error(), "port '80x'"));
  EXPECT_TRUE(contains(parseHostPort("h: 80").error(), "port ' 80'"));
}

TEST(ConfigParse, BlasThreadsPerService) {
  auto c = parse(kMinimal + "router:\n  threads: 2\n");
  ASSERT_TRUE(c.isOk()) << c.error();
  EXPECT_EQ(c.value().router.threads, 2u);
  EXPECT_EQ(c.value().shards[0].threads, 0u);  // unset: the library default
  auto withShard =
      parse(lines({"model: {path: /m}", "shards:", "  - name: s0", "    listen: 127.0.0.1:7201",
                   "    experts: [0]", "    threads: 3"}));
  ASSERT_TRUE(withShard.isOk()) << withShard.error();
  EXPECT_EQ(withShard.value().shards[0].threads, 3u);
  EXPECT_TRUE(contains(errorOf(kMinimal + "router:\n  threads: 0\n"),
                       "cluster.yaml:11: router.threads: 0 out of range [1, 1024]"));
}

// ---------------------------------------------------------------------------------------------
// Routing options and shared-expert placement

TEST(ConfigParse, RoutingOptionsAreOffByDefault) {
  auto c = mustParse(kMinimal);
  EXPECT_FALSE(c.routing.noisyTopk);
  EXPECT_EQ(c.routing.capacityFactor, 0.0);
  EXPECT_FALSE(c.routing.capacityRenormalize);
  EXPECT_EQ(c.routing.missingExpert, MissingExpertPolicy::kError);
  EXPECT_FALSE(c.shards[0].sharedExpert);
}

TEST(ConfigParse, RoutingSectionAndSharedExpertFlag) {
  auto c = mustParse(kMinimal + lines({
                                    "routing:",
                                    "  noisy_topk: {seed: 42}",
                                    "  capacity_factor: 1.25",
                                    "  capacity_renormalize: true",
                                }));
  EXPECT_TRUE(c.routing.noisyTopk);
  EXPECT_EQ(c.routing.noiseSeed, 42u);
  EXPECT_DOUBLE_EQ(c.routing.capacityFactor, 1.25);
  EXPECT_TRUE(c.routing.capacityRenormalize);
  auto shared = mustParse(lines({
      "model: {path: /m}",
      "shards:",
      "  - {name: a, listen: 'h:1', experts: '0-3', shared_expert: true}",
  }));
  EXPECT_TRUE(shared.shards[0].sharedExpert);
}

TEST(ConfigErrors, RoutingOptionsNameTheKey) {
  EXPECT_TRUE(contains(errorOf(kMinimal + "routing: {capacity_factor: -1}\n"),
                       "cluster.yaml:10: routing.capacity_factor: '-1' is not a number"));
  EXPECT_TRUE(contains(errorOf(kMinimal + "routing: {capacity_factor: lots}\n"),
                       "routing.capacity_factor: 'lots' is not a number"));
  EXPECT_TRUE(contains(errorOf(kMinimal + "routing: {capacity_renormalize: true}\n"),
                       "routing.capacity_renormalize: needs routing.capacity_factor > 0"));
  EXPECT_TRUE(contains(errorOf(kMinimal + "routing: {noisy_topk: {sead: 1}}\n"),
                       "routing.noisy_topk.sead: unknown key"));
  EXPECT_TRUE(
      contains(errorOf(kMinimal + "routing: {capacity: 2}\n"), "routing.capacity: unknown key"));
}

TEST(ConfigParse, MissingExpertPolicies) {
  const struct {
    const char* value;
    MissingExpertPolicy policy;
  } cases[] = {
      {"error", MissingExpertPolicy::kError},
      {"renormalize", MissingExpertPolicy::kRenormalize},
      {"reroute", MissingExpertPolicy::kReroute},
  };
  for (const auto& tc : cases) {
    SCOPED_TRACE(tc.value);
    auto c = mustParse(kMinimal + "routing:\n  missing_expert: " + tc.value + "\n");
    EXPECT_EQ(c.routing.missingExpert, tc.policy);
    EXPECT_EQ(missingExpertPolicyName(tc.policy), tc.value);  // the spelling round-trips
    // Other routing keys beside it keep their defaults.
    EXPECT_FALSE(c.routing.noisyTopk);
    EXPECT_EQ(c.routing.capacityFactor, 0.0);
  }
}

TEST(ConfigErrors, MissingExpertPolicyNamesTheKeyAndTheChoices) {
  const struct {
    std::string yaml;
    const char* error;
  } cases[] = {
      {kMinimal + "routing:\n  missing_expert: drop\n",
       "cluster.yaml:11: routing.missing_expert: 'drop' is not a missing-expert policy (expected "
       "error, renormalize or reroute)"},
      {kMinimal + "routing: {missing_expert: Reroute}\n",
       "cluster.yaml:10: routing.missing_expert: 'Reroute' is not a missing-expert policy"},
      {kMinimal + "routing: {missing_expert: [error]}\n",
       "cluster.yaml:10: routing.missing_expert: expected a string"},
      {kMinimal + "routing: {missing_expert: ''}\n",
       "cluster.yaml:10: routing.missing_expert: must not be empty"},
      {kMinimal + "routing: {missing_experts: reroute}\n",
       "cluster.yaml:10: routing.missing_experts: unknown key (expected one of: noisy_topk, "
       "capacity_factor, capacity_renormalize, missing_expert)"},
  };
  for (const auto& tc : cases) {
    SCOPED_TRACE(tc.yaml);
    EXPECT_TRUE(contains(errorOf(tc.yaml), tc.error));
  }
}

// ---------------------------------------------------------------------------------------------
// Batching: router.batching, router.max_queued_tokens, expert.batching and shards[].expert.batching

TEST(ConfigParse, BatchingDefaults) {
  auto c = mustParse(kMinimal);
  EXPECT_TRUE(c.router.batching.enabled);
  EXPECT_EQ(c.router.batching.windowUs, 0u);
  EXPECT_EQ(c.router.batching.maxTokens, 4096u);
  EXPECT_EQ(c.router.maxQueuedTokens, 65536u);
  EXPECT_TRUE(c.expertDefaults.batching.enabled);
  EXPECT_EQ(c.expertDefaults.batching.windowUs, 0u);
  EXPECT_EQ(c.expertDefaults.batching.maxRows, 8192u);
  for (const ShardConfig& s : c.shards) {
    SCOPED_TRACE(s.name);
    EXPECT_TRUE(s.batching.enabled);
    EXPECT_EQ(s.batching.windowUs, 0u);
    EXPECT_EQ(s.batching.maxRows, 8192u);
  }
}

TEST(ConfigParse, RouterBatchingExplicitValues) {
  struct Case {
    std::string yaml;  // the router section, appended to kMinimal
    RouterBatchingConfig want;
    uint32_t wantQueued;
  };
  const Case cases[] = {
      {"router: {batching: {enabled: false}}\n", {false, 0, 4096}, 65536},
      {"router: {batching: {window_us: 250}}\n", {true, 250, 4096}, 65536},
      {"router:\n  batching: {enabled: true, window_us: 1000000, max_tokens: 1}\n"
       "  max_queued_tokens: 1\n",
       {true, 1000000, 1},
       1},
      {"router: {max_queued_tokens: 100000, batching: {max_tokens: 8192}}\n",
       {true, 0, 8192},
       100000},
  };
  for (const Case& tc : cases) {
    SCOPED_TRACE(tc.yaml);
    auto c = mustParse(kMinimal + tc.yaml);
    EXPECT_EQ(c.router.batching.enabled, tc.want.enabled);
    EXPECT_EQ(c.router.batching.windowUs, tc.want.windowUs);
    EXPECT_EQ(c.router.batching.maxTokens, tc.want.maxTokens);
    EXPECT_EQ(c.router.maxQueuedTokens, tc.wantQueued);
    EXPECT_EQ(c.router.maxTokens, 8192u);  // the per-call limit is a different key
  }
}

TEST(ConfigParse, ExpertBatchingDefaultAndShardOverridesKeyByKey) {
  auto c = mustParse(lines({
      "model: {path: /m}",
      "expert:",
      "  batching: {window_us: 100, max_rows: 512}",
      "shards:",
      "  - {name: a, listen: 'h:1', experts: [0]}",
      "  - {name: b, listen: 'h:2', experts: [1], expert: {batching: {enabled: false}}}",
      "  - {name: c, listen: 'h:3', experts: [2], expert: {batching: {max_rows: 64}}}",
      "  - name: d",
      "    listen: 'h:4'",
      "    experts: [3]",
      "    expert:",
      "      batching: {enabled: true, window_us: 0, max_rows: 1}",
  }));
  EXPECT_EQ(c.expertDefaults.batching.windowUs, 100u);
  EXPECT_EQ(c.expertDefaults.batching.maxRows, 512u);
  struct Want {
    const char* shard;
    ExpertBatchingConfig batching;
  };
  for (const Want& w : {Want{"a", {true, 100, 512}}, Want{"b", {false, 100, 512}},
                        Want{"c", {true, 100, 64}}, Want{"d", {true, 0, 1}}}) {
    SCOPED_TRACE(w.shard);
    const ShardConfig* s = c.findShard(w.shard);
    ASSERT_NE(s, nullptr);
    EXPECT_EQ(s->batching.enabled, w.batching.enabled);
    EXPECT_EQ(s->batching.windowUs, w.batching.windowUs);
    EXPECT_EQ(s->batching.maxRows, w.batching.maxRows);
  }
  // A shard block without a cluster default applies over the built-in defaults.
  auto own = mustParse(lines({"model: {path: /m}", "shards:",
                              "  - {name: a, listen: 'h:1', experts: [0], expert: {batching: "
                              "{window_us: 7}}}"}));
  EXPECT_TRUE(own.shards[0].batching.enabled);
  EXPECT_EQ(own.shards[0].batching.windowUs, 7u);
  EXPECT_EQ(own.shards[0].batching.maxRows, 8192u);
  EXPECT_EQ(own.expertDefaults.batching.windowUs, 0u);
}

TEST(ConfigErrors, BatchingValuesNameTheKey) {
  const std::string shardPrefix = lines({
      "model: {path: /m}",                           // 1
      "shards:",                                     // 2
      "  - {name: a, listen: 'h:1', experts: [0],",  // 3
  });
  const struct {
    std::string yaml;
    const char* error;
  } cases[] = {
      {kMinimal + "router: {batching: {max_tokens: 0}}\n",
       "cluster.yaml:10: router.batching.max_tokens: 0 out of range [1, 4294967295]"},
      {kMinimal + "router: {batching: {window_us: 1000001}}\n",
       "cluster.yaml:10: router.batching.window_us: 1000001 out of range [0, 1000000]"},
      {kMinimal + "router: {batching: {window_us: -1}}\n",
       "cluster.yaml:10: router.batching.window_us: '-1' is not a non-negative integer"},
      {kMinimal + "router: {batching: {enabled: yes}}\n",
       "cluster.yaml:10: router.batching.enabled: expected true or false"},
      {kMinimal + "router: {max_queued_tokens: 0}\n",
       "cluster.yaml:10: router.max_queued_tokens: 0 out of range [1, 4294967295]"},
      {kMinimal + "router: {max_queued_tokens: 4294967296}\n",
       "cluster.yaml:10: router.max_queued_tokens: 4294967296 out of range [1, 4294967295]"},
      {kMinimal + "router: {batching: true}\n",
       "cluster.yaml:10: router.batching: expected a mapping"},
      {kMinimal + "expert:\n  batching:\n    max_rows: 0\n",
       "cluster.yaml:12: expert.batching.max_rows: 0 out of range [1, 4294967295]"},
      {kMinimal + "expert:\n  batching:\n    window_us: 2000000\n",
       "cluster.yaml:12: expert.batching.window_us: 2000000 out of range [0, 1000000]"},
      {kMinimal + "expert: {batching: {enabled: 1}}\n",
       "cluster.yaml:10: expert.batching.enabled: expected true or false"},
      {kMinimal + "expert: []\n", "cluster.yaml:10: expert: expected a mapping"},
      {shardPrefix + "     expert: {batching: {max_rows: 0}}}\n",
       "cluster.yaml:4: shards[0].expert.batching.max_rows: 0 out of range [1, 4294967295]"},
      {shardPrefix + "     expert: {batching: {window_us: 1000001}}}\n",
       "cluster.yaml:4: shards[0].expert.batching.window_us: 1000001 out of range"},
  };
  for (const auto& tc : cases) {
    SCOPED_TRACE(tc.yaml);
    EXPECT_TRUE(contains(errorOf(tc.yaml), tc.error));
  }
}

TEST(ConfigErrors, UnknownKeysInBatchingSections) {
  const struct {
    std::string yaml;
    const char* error;
  } cases[] = {
      {kMinimal + "router: {batching: {max_rows: 8}}\n",
       "cluster.yaml:10: router.batching.max_rows: unknown key (expected one of: enabled, "
       "window_us, max_tokens)"},
      {kMinimal + "router: {batching: {window: 8}}\n", "router.batching.window: unknown key"},
      {kMinimal + "router: {max_queued: 8}\n", "router.max_queued: unknown key"},
      {kMinimal + "expert: {batching: {max_tokens: 8}}\n",
       "cluster.yaml:10: expert.batching.max_tokens: unknown key (expected one of: enabled, "
       "window_us, max_rows)"},
      {kMinimal + "expert:\n  threads: 2\n",
       "cluster.yaml:11: expert.threads: unknown key (expected one of: batching)"},
      {lines({"model: {path: /m}", "shards:",
              "  - {name: a, listen: 'h:1', experts: [0], expert: {batching: {size: 1}}}"}),
       "cluster.yaml:3: shards[0].expert.batching.size: unknown key"},
      {lines({"model: {path: /m}",
              "shards:", "  - {name: a, listen: 'h:1', experts: [0], expert: {window_us: 1}}"}),
       "cluster.yaml:3: shards[0].expert.window_us: unknown key"},
      {lines({"model: {path: /m}",
              "shards:", "  - {name: a, listen: 'h:1', experts: [0], batching: {window_us: 1}}"}),
       "cluster.yaml:3: shards[0].batching: unknown key"},
  };
  for (const auto& tc : cases) {
    SCOPED_TRACE(tc.yaml);
    EXPECT_TRUE(contains(errorOf(tc.yaml), tc.error));
  }
}

TEST(ValidatePlacement, ZeroComputeExpertsAreNotPlacedOnShards) {
  ModelConfig m = model4x2();
  m.modelType = "MoE++";
  m.numExperts = 6;
  m.numFfnExperts = 2;
  auto ok = mustParse(
      lines({"model: {path: /m}", "shards:", "  - {name: a, listen: 'h:1', experts: [0, 1]}"}));
  EXPECT_TRUE(validatePlacement(ok, m).isOk());
  auto bad = mustParse(
      lines({"model: {path: /m}", "shards:", "  - {name: a, listen: 'h:1', experts: '0-2'}"}));
  auto s = validatePlacement(bad, m);
  ASSERT_FALSE(s.isOk());
  EXPECT_TRUE(contains(s.message(),
                       "lists expert 2 but the model has 2 FFN experts (ids 2..5 are "
                       "zero-computation experts, evaluated on the router)"))
      << s.message();
}

TEST(ValidatePlacement, SharedExpertFlagNeedsAModelWithOne) {
  auto c = mustParse(lines({"model: {path: /m}", "shards:",
                            "  - {name: a, listen: 'h:1', experts: '0-3', shared_expert: true}"}));
  auto s = validatePlacement(c, model4x2());
  ASSERT_FALSE(s.isOk());
  EXPECT_TRUE(contains(s.message(),
                       "shard a sets shared_expert: true but the model (mixtral) has "
                       "no shared expert"));
}

// ---------------------------------------------------------------------------------------------
// metrics.per_expert: all | off; unset resolves by the number of (layer, expert) pairs.

TEST(ConfigParse, PerExpertMetricsModes) {
  ModelConfig small;  // 2 layers × 8 experts
  small.numExperts = 8;
  small.moeLayers = {0, 1};
  ModelConfig deepseek;  // DeepSeek-V3: 58 MoE layers × 256 experts
  deepseek.numExperts = 256;
  for (uint32_t l = 3; l < 61; ++l) deepseek.moeLayers.push_back(l);
  ModelConfig edge;  // exactly kPerExpertSeriesLimit pairs
  edge.numExperts = 64;
  for (uint32_t l = 0; l < 64; ++l) edge.moeLayers.push_back(l);
  const struct {
    std::string yaml;
    const ModelConfig* model;
    PerExpertMetrics configured, resolved;
    bool logged;
  } cases[] = {
      {"", &small, PerExpertMetrics::kAuto, PerExpertMetrics::kAll, false},
      {"", &edge, PerExpertMetrics::kAuto, PerExpertMetrics::kAll, false},
      {"", &deepseek, PerExpertMetrics::kAuto, PerExpertMetrics::kOff, true},
      {"metrics: {per_expert: all}\n", &deepseek, PerExpertMetrics::kAll, PerExpertMetrics::kAll,
       false},
      {"metrics:\n  per_expert: off\n", &small, PerExpertMetrics::kOff, PerExpertMetrics::kOff,
       false},
      {"metrics: {}\n", &small, PerExpertMetrics::kAuto, PerExpertMetrics::kAll, false},
  };
  for (const auto& tc : cases) {
    SCOPED_TRACE(tc.yaml + " with " + std::to_string(tc.model->moeLayers.size()) + " layers");
    auto c = mustParse(kMinimal + tc.yaml);
    EXPECT_EQ(c.metrics.perExpert, tc.configured);
    std::string why;
    EXPECT_EQ(resolvePerExpertMetrics(c.metrics, *tc.model, &why), tc.resolved);
    EXPECT_EQ(!why.empty(), tc.logged) << why;
    if (tc.logged) {
      EXPECT_TRUE(contains(why, "58 MoE layers × 256 experts = 14848")) << why;
    }
  }
}

TEST(ConfigErrors, PerExpertMetricsNamesTheKeyAndTheChoices) {
  const struct {
    std::string yaml;
    const char* error;
  } cases[] = {
      {kMinimal + "metrics: {per_expert: none}\n",
       "cluster.yaml:10: metrics.per_expert: 'none' is not a per-expert mode (expected all or "
       "off)"},
      {kMinimal + "metrics: {per_expert: true}\n",
       "cluster.yaml:10: metrics.per_expert: 'true' is not a per-expert mode"},
      {kMinimal + "metrics: {per_experts: off}\n",
       "cluster.yaml:10: metrics.per_experts: unknown key (expected one of: per_expert)"},
  };
  for (const auto& tc : cases) {
    SCOPED_TRACE(tc.yaml);
    EXPECT_TRUE(contains(errorOf(tc.yaml), tc.error)) << errorOf(tc.yaml);
  }
}

// model.dtype and router.wire_dtype: the spellings, their defaults, and errors naming the key.
TEST(ConfigDtypes, ParsedAndDefaulted) {
  const ClusterConfig defaults = mustParse(kMinimal);
  EXPECT_EQ(defaults.modelDtype, ModelDType::kF32);
  EXPECT_EQ(defaults.router.wireDtype, DType::kF32);
  const struct {
    const char* model;
    ModelDType want;
  } models[] = {{"auto", ModelDType::kAuto},
                {"bf16", ModelDType::kBF16},
                {"f16", ModelDType::kF16},
                {"f32", ModelDType::kF32}};
  for (const auto& tc : models) {
    SCOPED_TRACE(tc.model);
    const ClusterConfig c =
        mustParse(lines({"model: {path: /m, dtype: " + std::string(tc.model) + "}",
                         "shards:", "  - {name: a, listen: 'h:1', experts: [0]}"}));
    EXPECT_EQ(c.modelDtype, tc.want);
    EXPECT_EQ(modelDTypeName(c.modelDtype), tc.model);
  }
  EXPECT_EQ(mustParse(kMinimal + "router: {wire_dtype: bf16}\n").router.wireDtype, DType::kBF16);
  EXPECT_EQ(mustParse(kMinimal + "router: {wire_dtype: f32}\n").router.wireDtype, DType::kF32);
}

TEST(ConfigDtypes, ResolveAutoToTheCheckpointDtype) {
  const struct {
    ModelDType configured;
    DType checkpoint;
    DType want;
  } cases[] = {
      {ModelDType::kAuto, DType::kBF16, DType::kBF16},
      {ModelDType::kAuto, DType::kF32, DType::kF32},
      {ModelDType::kAuto, DType::kF16, DType::kF16},
      {ModelDType::kAuto, DType::kF64, DType::kF32},
      {ModelDType::kAuto, DType::kF8E4M3, DType::kBF16},
      {ModelDType::kAuto, DType::kU8, DType::kBF16},  // gpt-oss MXFP4 blocks
      {ModelDType::kF32, DType::kU8, DType::kF32},
      {ModelDType::kF32, DType::kBF16, DType::kF32},
      {ModelDType::kBF16, DType::kF32, DType::kBF16},
  };
  for (const auto& tc : cases) {
    EXPECT_EQ(resolveModelDType(tc.configured, tc.checkpoint), tc.want)
        << modelDTypeName(tc.configured) << " over " << dtypeName(tc.checkpoint);
  }
}

TEST(ConfigDtypes, BadValuesNameTheKey) {
  const struct {
    std::string yaml;
    const char* error;
  } cases[] = {
      {"model: {path: /m, dtype: fp8}\nshards: [{name: a, listen: 'h:1', experts: [0]}]\n",
       "cluster.yaml:1: model.dtype: 'fp8' is not a model dtype (expected auto, bf16, f16 or f32)"},
      {kMinimal + "router: {wire_dtype: f16}\n",
       "cluster.yaml:10: router.wire_dtype: 'f16' is not a wire dtype (expected f32 or bf16)"},
      {kMinimal + "router: {wire_dtype: [bf16]}\n", "cluster.yaml:10: router.wire_dtype"},
  };
  for (const auto& tc : cases) {
    SCOPED_TRACE(tc.yaml);
    EXPECT_TRUE(contains(errorOf(tc.yaml), tc.error)) << errorOf(tc.yaml);
  }
}

}  // namespace
}  // namespace moe

namespace moe {
namespace {

using unit::contains;

// ---------------------------------------------------------------------------------------------
// limits:

TEST(ConfigLimits, DefaultsAndExplicitValues) {
  struct Case {
    std::string yaml;  // appended to kMinimal
    LimitsConfig want;
  };
  LimitsConfig defaults;
  defaults.maxRowsPerShardCall = 8192;  // the larger of max_tokens_per_request and batching
  LimitsConfig small = defaults;
  small.maxTokensPerRequest = 512;
  small.maxRowsPerShardCall = 4096;  // router.batching.max_tokens (4096) is larger
  LimitsConfig all{100, 5000, 8, uint64_t{1} << 20, 7, 9, 600000};
  LimitsConfig longRequests = defaults;
  longRequests.idleTimeoutMs = 7200000;  // unset: twice timeouts.request_ms
  const std::vector<Case> cases = {
      {"", defaults},
      {"router: {max_tokens: 512}\n", small},
      {"limits: {max_tokens_per_request: 512}\n", small},
      {"router: {max_tokens: 512}\nlimits: {max_tokens_per_request: 512}\n", small},
      {"router: {max_tokens: 100, batching: {max_tokens: 100}}\n"
       "limits: {max_rows_per_shard_call: 5000, max_segments_per_shard_call: 8,\n"
       "  max_message_bytes: 1048576, max_inflight_requests: 7, max_connections: 9,\n"
       "  idle_timeout_ms: 600000}\n",
       all},
      {"timeouts: {request_ms: 3600000}\n", longRequests},
  };
  for (const auto& tc : cases) {
    SCOPED_TRACE(tc.yaml);
    auto c = parse(kMinimal + tc.yaml);
    ASSERT_TRUE(c.isOk()) << c.error();
    const LimitsConfig& l = c.value().limits;
    EXPECT_EQ(l.maxTokensPerRequest, tc.want.maxTokensPerRequest);
    EXPECT_EQ(c.value().router.maxTokens, tc.want.maxTokensPerRequest);
    EXPECT_EQ(l.maxRowsPerShardCall, tc.want.maxRowsPerShardCall);
    EXPECT_EQ(l.maxSegmentsPerShardCall, tc.want.maxSegmentsPerShardCall);
    EXPECT_EQ(l.maxMessageBytes, tc.want.maxMessageBytes);
    EXPECT_EQ(l.maxInflightRequests, tc.want.maxInflightRequests);
    EXPECT_EQ(l.maxConnections, tc.want.maxConnections);
    EXPECT_EQ(l.idleTimeoutMs, tc.want.idleTimeoutMs);
  }
}

TEST(ConfigLimits, ErrorsNameTheKey) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"limits: {max_conections: 5}\n", "cluster.yaml:10: limits.max_conections: unknown key"},
      {"limits: {max_connections: 0}\n",
       "cluster.yaml:10: limits.max_connections: 0 out of range [1, 1048576]"},
      {"limits: {max_message_bytes: 1e400}\n",
       "limits.max_message_bytes: '1e400' is not a non-negative integer"},
      {"limits: {max_message_bytes: 1000}\n",
       "limits.max_message_bytes: 1000 out of range [65536, 2147483648]"},
      {"router: {max_tokens: 512}\nlimits: {max_tokens_per_request: 1024}\n",
       "cluster.yaml:11: limits.max_tokens_per_request: 1024 differs from router.max_tokens = 512"},
      {"limits: {max_rows_per_shard_call: 100}\n",
       "cluster.yaml:10: limits.max_rows_per_shard_call: 100 is below the 8192 rows one router "
       "batch may send a shard"},
      {"limits: {max_segments_per_shard_call: 1}\n",
       "cluster.yaml:10: limits.max_segments_per_shard_call: 1 is below the 2 segments a call to "
       "s0 may need"},
      {"limits: {idle_timeout_ms: 60000}\n",
       "cluster.yaml:10: limits.idle_timeout_ms: 60000 must exceed timeouts.request_ms = 60000"},
  };
  for (const auto& [yaml, want] : cases) {
    SCOPED_TRACE(yaml);
    EXPECT_TRUE(contains(errorOf(kMinimal + yaml), want)) << errorOf(kMinimal + yaml);
  }
}

TEST(ConfigLimits, MessageSizeMustHoldTheLargestCall) {
  ModelConfig m;
  m.hiddenSize = 4096;
  m.numExperts = 64;
  m.topK = 8;
  struct Case {
    std::string limits;  // appended to kMinimal
    bool ok;
  };
  const std::vector<Case> cases = {
      {"", true},  // 8192 × 4096 × 4 = 128 MiB (+ segments, logits) under 512 MiB
      {"limits: {max_message_bytes: 134217728}\n", false},  // exactly 128 MiB: no room for the rest
      {"limits: {max_message_bytes: 134217728, max_tokens_per_request: 4096}\n", true},
  };
  for (const auto& tc : cases) {
    SCOPED_TRACE(tc.limits);
    auto c = parse(kMinimal + tc.limits);
    ASSERT_TRUE(c.isOk()) << c.error();
    const Status s = validateLimits(c.value(), m);
    EXPECT_EQ(s.isOk(), tc.ok) << s.message();
    if (!tc.ok) {
      EXPECT_EQ(s.code(), StatusCode::kFailedPrecondition);
      EXPECT_TRUE(contains(s.message(),
                           "cluster.yaml: limits.max_message_bytes = 134217728 is below "
                           "the 136970240 bytes of the largest call"))
          << s.message();
    }
  }
}

}  // namespace
}  // namespace moe

namespace moe {
namespace {

TEST(ConfigParse, TlsAndAdminPlaneSections) {
  auto r = parse(kMinimal +
                 lines({"tls:", "  ca: certs/ca.pem", "  cert: /pki/node.pem", "  key: node.key",
                        "admin:", "  tls: {ca: a.pem, cert: b.pem, key: c.pem, client_auth: false}",
                        "  expose_paths: [/metrics, /healthz]"}));
  ASSERT_TRUE(r.isOk()) << r.error();
  const auto& c = r.value();
  ASSERT_TRUE(c.tls.has_value());
  EXPECT_EQ(c.tls->ca, "/etc/moe/certs/ca.pem");  // relative: against the YAML's directory
  EXPECT_EQ(c.tls->cert, "/pki/node.pem");
  EXPECT_EQ(c.tls->key, "/etc/moe/node.key");
  EXPECT_TRUE(c.tls->clientAuth);  // mutual by default
  ASSERT_TRUE(c.admin.tls.has_value());
  EXPECT_FALSE(c.admin.tls->clientAuth);
  ASSERT_TRUE(c.admin.exposePaths.has_value());
  EXPECT_EQ(*c.admin.exposePaths, (std::vector<std::string>{"/metrics", "/healthz"}));
  EXPECT_FALSE(parse(kMinimal).value().tls.has_value());  // no section: plaintext
}

TEST(ConfigParse, TlsSectionErrorsNameTheKey) {
  const struct {
    std::vector<std::string_view> extra;
    const char* expected;
  } cases[] = {
      {{"tls:", "  ca: a.pem", "  cert: b.pem"}, "tls.key: missing"},
      {{"tls: {ca: a, cert: b, key: c, verify: no}"}, "tls.verify: unknown key"},
      {{"tls: {ca: a, cert: b, key: c, client_auth: maybe}"}, "tls.client_auth: expected true"},
      {{"admin:", "  expose_paths: metrics"}, "admin.expose_paths: expected a list"},
      {{"admin:", "  expose_paths: [metrics]"}, "'metrics' must start with /"},
      {{"admin:", "  tls: {ca: a}"}, "admin.tls.cert: missing"},
  };
  for (const auto& c : cases) {
    std::string yaml = kMinimal;
    for (auto l : c.extra) yaml += std::string(l) + "\n";
    EXPECT_TRUE(contains(errorOf(yaml), c.expected)) << errorOf(yaml);
  }
}

}  // namespace
}  // namespace moe

namespace moe {
namespace {

// With tls: on the RPC ports and no admin.tls, every admin address must be loopback; admin.tls
// (or no tls: at all) lifts the rule.
TEST(ConfigParse, AdminOnLoopbackUnlessAdminTls) {
  const std::string tls = "tls: {ca: ca.pem, cert: c.pem, key: k.pem}\n";
  const std::string adminTls = "admin:\n  tls: {ca: ca.pem, cert: a.pem, key: ak.pem}\n";
  auto withAdmin = [](std::string_view router, std::string_view shard) {
    std::string y = kMinimal;
    y.insert(y.find("shards:"), "router:\n  admin: \"" + std::string(router) + "\"\n");
    y.insert(y.find("    experts: [0, 1]"), "    admin: \"" + std::string(shard) + "\"\n");
    return y;
  };
  const struct {
    std::string yaml;
    const char* error;  // nullptr: parses
  } cases[] = {
      {withAdmin("127.0.0.1:9100", "127.0.0.1:9201") + tls, nullptr},
      {withAdmin("localhost:9100", "[::1]:9201") + tls, nullptr},
      {withAdmin("127.8.9.10:9100", "LocalHost:9201") + tls, nullptr},
      {withAdmin("0.0.0.0:9100", "127.0.0.1:9201") + tls,
       "router.admin: address 0.0.0.0:9100 is not loopback: admin plane without admin.tls must "
       "listen on loopback when tls: is set"},
      {withAdmin("127.0.0.1:9100", "10.0.0.5:9201") + tls,
       "shards[0].admin: address 10.0.0.5:9201 is not loopback"},
      {withAdmin("127.0.0.1:9100", "[::]:9201") + tls, "shards[0].admin: address [::]:9201"},
      {withAdmin("moe-router.moe.svc:9100", "127.0.0.1:9201") + tls,
       "router.admin: address moe-router.moe.svc:9100 is not loopback"},
      {withAdmin("0.0.0.0:9100", "10.0.0.5:9201") + tls + adminTls, nullptr},  // admin.tls set
      {withAdmin("0.0.0.0:9100", "10.0.0.5:9201"), nullptr},                   // no tls: at all
  };
  for (const auto& c : cases) {
    auto r = parse(c.yaml);
    if (c.error == nullptr) {
      EXPECT_TRUE(r.isOk()) << c.yaml << "\n" << r.error();
    } else {
      ASSERT_FALSE(r.isOk()) << c.yaml;
      EXPECT_TRUE(contains(r.error(), c.error)) << r.error();
    }
  }
}

TEST(ConfigParse, IsLoopbackAddress) {
  const struct {
    const char* address;
    bool loopback;
  } cases[] = {
      {"127.0.0.1:9100", true},  {"127.255.0.1:1", true},        {"localhost:9100", true},
      {"[::1]:9100", true},      {"[::ffff:127.0.0.1]:1", true}, {"0.0.0.0:9100", false},
      {":9100", false},          {"[::]:9100", false},           {"10.1.2.3:9100", false},
      {"128.0.0.1:9100", false}, {"localhost.evil:1", false},    {"[::2]:9100", false},
      {"router:9100", false},
  };
  for (const auto& c : cases) {
    EXPECT_EQ(isLoopbackAddress(c.address), c.loopback) << c.address;
  }
}

}  // namespace
}  // namespace moe
