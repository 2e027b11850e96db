// moe-make-checkpoint: writes a synthetic checkpoint (config.json + safetensors) in one of the
// supported families' HuggingFace layouts so the cluster can be run and benchmarked without
// downloading a real model.
#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/checkpoint.h"
#include "tools/synthetic_checkpoint.h"

namespace {

constexpr int kUsageExit = 2;

void printUsage(std::FILE* to) {
  const moe::SyntheticModelSpec d;
  std::fprintf(
      to,
      "usage: moe-make-checkpoint --out DIR [--model-type T] [--hidden N] [--intermediate N]\n"
      "                           [--experts N] [--top-k N] [--layers N] [--seed N]\n"
      "                           [--dtype f32|bf16|f16] [--files N]\n"
      "  family options (ignored where the family has no such key):\n"
      "                           [--norm-topk-prob[=true|false]] [--shared-intermediate N]\n"
      "                           [--decoder-sparse-step N] [--mlp-only-layers 0,2]\n"
      "                           [--first-k-dense N] [--n-group N] [--topk-group N]\n"
      "                           [--routed-scaling F]\n"
      "  MoE++ options:           [--moe-expert-interval N] [--moe-single-layer-gate]\n"
      "                           [--moe-mixtral-gating] [--moe-feature-no-mul-topk]\n"
      "                           [--moe-logits-norm]\n"
      "  any family:              [--noise-weights]\n"
      "Writes DIR/config.json and the MoE weights of every MoE layer (gate, experts, shared\n"
      "expert, DeepSeek-V3 bias). --model-type: mixtral, qwen2_moe, qwen3_moe, olmoe,\n"
      "deepseek_v2, deepseek_v3, MoE++ (or moe_plus_plus), yuan. --intermediate is the routed\n"
      "expert width; DeepSeek writes n_shared_experts = --shared-intermediate / --intermediate.\n"
      "MoE++: --experts counts all N experts, the 4 zero-computation ones (2 constant, copy,\n"
      "zero) included, so it must be at least 5, and --top-k must be 2; it writes the two-layer\n"
      "gate unless --moe-single-layer-gate. Yuan writes its attention router (moe_config\n"
      "router_type attn_router). --noise-weights adds each MoE layer's w_noise.weight [E, H].\n"
      "Switches take no value, or =true|false.\n"
      "defaults: --model-type %s --hidden %u --intermediate %u --experts %u --top-k %u\n"
      "          --layers %u --seed %llu --dtype %s --files %u\n",
      d.modelType.c_str(), d.hiddenSize, d.intermediateSize, d.numExperts, d.topK, d.numLayers,
      static_cast<unsigned long long>(d.seed), std::string(moe::dtypeName(d.dtype)).c_str(),
      d.numFiles);
}

template <typename T>
std::optional<T> parseUnsigned(std::string_view s) {
  T v{};
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || end != s.data() + s.size() || s.empty()) return std::nullopt;
  return v;
}

std::optional<moe::DType> parseDType(std::string_view s) {
  if (s == "f32") return moe::DType::kF32;
  if (s == "bf16") return moe::DType::kBF16;
  if (s == "f16") return moe::DType::kF16;
  return std::nullopt;
}

// "0,2,5" → {0, 2, 5}; the empty string is the empty list.
std::optional<std::vector<uint32_t>> parseU32List(std::string_view s) {
  std::vector<uint32_t> out;
  while (!s.empty()) {
    const size_t comma = s.find(',');
    auto v = parseUnsigned<uint32_t>(s.substr(0, comma));
    if (!v) return std::nullopt;
    out.push_back(*v);
    if (comma == std::string_view::npos) break;
    s.remove_prefix(comma + 1);
    if (s.empty()) return std::nullopt;  // trailing comma
  }
  return out;
}

// A positive finite decimal such as 2.5 (std::from_chars for floats is all-or-nothing here too).
std::optional<float> parsePositiveFloat(std::string_view s) {
  float v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || end != s.data() + s.size() || s.empty() || !(v > 0.0f) ||
      !std::isfinite(v)) {
    return std::nullopt;
  }
  return v;
}

// A MoE layer's parameter count as Checkpoint::open reads the written config back.
uint64_t paramsPerMoeLayer(const moe::ModelConfig& c, bool noiseWeights) {
  const uint64_t h = c.hiddenSize;
  const uint64_t e = c.numExperts;
  uint64_t n = uint64_t{c.numFfnExperts} * 3 * h * c.intermediateSize;  // fused or not
  switch (c.gateKind) {
    case moe::GateKind::kLinear:
      n += e * h;
      break;
    case moe::GateKind::kTwoLayerTanh:
      n += 8 * e * h + e * 8 * e;
      break;
    case moe::GateKind::kAttention:
      n += 3 * e * h;  // query, key, value
      break;
  }
  if (c.gatingResidual) n += e * e;                                      // MoE++ gate_map
  if (c.family == moe::ModelFamily::kMoePlusPlus) n += 2 * (2 * h + h);  // constant experts
  n += 3 * h * c.sharedIntermediateSize;
  if (c.sharedExpertGated) n += h;
  if (c.hasScoreCorrectionBias) n += e;
  if (noiseWeights) n += e * h;
  return n;
}

int usageError(const std::string& problem) {
  std::fprintf(stderr, "moe-make-checkpoint: %s\n", problem.c_str());
  printUsage(stderr);
  return kUsageExit;
}

}  // namespace

int main(int argc, char** argv) {
  moe::SyntheticModelSpec spec;
  std::string out;
  bool singleLayerGate = false;
  // Boolean switches: "--flag" alone means true; "--flag=false" is accepted too.
  const std::pair<std::string_view, bool*> switches[] = {
      {"--norm-topk-prob", &spec.normTopkProb},
      {"--moe-single-layer-gate", &singleLayerGate},
      {"--moe-mixtral-gating", &spec.moeMixtralGating},
      {"--moe-feature-no-mul-topk", &spec.moeFeatureNoMulTopk},
      {"--moe-logits-norm", &spec.moeLogitsNorm},
      {"--noise-weights", &spec.noiseWeights},
  };
  auto findSwitch = [&](std::string_view flag) -> bool* {
    for (const auto& [name, dest] : switches) {
      if (name == flag) return dest;
    }
    return nullptr;
  };
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      printUsage(stdout);
      return 0;
    }
    // Accept both "--flag value" and "--flag=value".
    std::string_view flag = arg;
    std::optional<std::string_view> value;
    if (auto eq = arg.find('='); arg.starts_with("--") && eq != std::string_view::npos) {
      flag = arg.substr(0, eq);
      value = arg.substr(eq + 1);
    } else if (findSwitch(flag)) {
      value = "true";  // a switch: it never takes the next argument as its value
    } else if (i + 1 < argc) {
      value = argv[i + 1];
      ++i;
    }
    if (!value) return usageError("flag " + std::string(flag) + " needs a value");

    auto setU32 = [&](uint32_t& dest) {
      auto v = parseUnsigned<uint32_t>(*value);
      if (!v) return false;
      dest = *v;
      return true;
    };
    bool ok = true;
    if (flag == "--out") {
      out = std::string(*value);
      ok = !out.empty();
    } else if (flag == "--hidden") {
      ok = setU32(spec.hiddenSize);
    } else if (flag == "--intermediate") {
      ok = setU32(spec.intermediateSize);
    } else if (flag == "--experts") {
      ok = setU32(spec.numExperts);
    } else if (flag == "--top-k") {
      ok = setU32(spec.topK);
    } else if (flag == "--layers") {
      ok = setU32(spec.numLayers);
    } else if (flag == "--files") {
      ok = setU32(spec.numFiles);
    } else if (flag == "--seed") {
      auto v = parseUnsigned<uint64_t>(*value);
      ok = v.has_value();
      if (ok) spec.seed = *v;
    } else if (flag == "--model-type") {
      spec.modelType = std::string(*value);
      // Checked here too so a typo is a usage error (status 2) like any other bad value.
      ok = spec.modelType == "mixtral" || spec.modelType == "qwen2_moe" ||
           spec.modelType == "qwen3_moe" || spec.modelType == "olmoe" ||
           spec.modelType == "deepseek_v2" || spec.modelType == "deepseek_v3" ||
           spec.modelType == "MoE++" || spec.modelType == "moe_plus_plus" ||
           spec.modelType == "yuan";
    } else if (bool* dest = findSwitch(flag)) {
      ok = *value == "true" || *value == "false";
      *dest = *value == "true";
    } else if (flag == "--moe-expert-interval") {
      ok = setU32(spec.moeExpertInterval) && spec.moeExpertInterval > 0;
    } else if (flag == "--shared-intermediate") {
      ok = setU32(spec.sharedIntermediateSize);
    } else if (flag == "--decoder-sparse-step") {
      ok = setU32(spec.decoderSparseStep) && spec.decoderSparseStep > 0;
    } else if (flag == "--mlp-only-layers") {
      auto v = parseU32List(*value);
      ok = v.has_value();
      if (ok) spec.mlpOnlyLayers = *v;
    } else if (flag == "--first-k-dense") {
      ok = setU32(spec.firstKDenseReplace);
    } else if (flag == "--n-group") {
      ok = setU32(spec.nGroup) && spec.nGroup > 0;
    } else if (flag == "--topk-group") {
      ok = setU32(spec.topkGroup) && spec.topkGroup > 0;
    } else if (flag == "--routed-scaling") {
      auto v = parsePositiveFloat(*value);
      ok = v.has_value();
      if (ok) spec.routedScalingFactor = *v;
    } else if (flag == "--dtype") {
      auto v = parseDType(*value);
      ok = v.has_value();
      if (ok) spec.dtype = *v;
    } else {
      return usageError("unknown flag " + std::string(flag));
    }
    if (!ok) return usageError("bad value '" + std::string(*value) + "' for " + std::string(flag));
  }
  if (out.empty()) return usageError("--out DIR is required");
  if (spec.hiddenSize == 0 || spec.intermediateSize == 0 || spec.numExperts == 0 ||
      spec.numLayers == 0 || spec.numFiles == 0 || spec.topK == 0 || spec.topK > spec.numExperts) {
    return usageError("sizes must be positive and --top-k at most --experts");
  }
  spec.moeTwoLayerGate = !singleLayerGate;
  if ((spec.modelType == "MoE++" || spec.modelType == "moe_plus_plus") &&
      (spec.topK != 2 || spec.numExperts < 5)) {
    return usageError(
        "MoE++ needs --top-k 2 and --experts at least 5 (the last 4 experts are "
        "its zero-computation experts)");
  }

  moe::Status s = moe::writeSyntheticCheckpoint(spec, out);
  if (!s) {
    std::fprintf(stderr, "moe-make-checkpoint: %s\n", s.message().c_str());
    return 1;
  }

  // Count what was written by reading it back: this also checks that Checkpoint::open accepts the
  // output, and the per-family tensor set (dense layers, shared experts, biases) is counted once.
  auto ckpt = moe::Checkpoint::open(out);
  if (!ckpt) {
    std::fprintf(stderr, "moe-make-checkpoint: wrote %s but cannot read it back: %s\n", out.c_str(),
                 ckpt.error().c_str());
    return 1;
  }
  const moe::ModelConfig& c = ckpt.value()->config();
  const uint64_t params = uint64_t{c.moeLayers.size()} * paramsPerMoeLayer(c, spec.noiseWeights);
  const uint64_t bytes = params * moe::dtypeSize(spec.dtype);
  std::printf(
      "wrote %s: %s hidden=%u intermediate=%u experts=%u top-k=%u layers=%u (%zu MoE) "
      "shared=%u seed=%llu %s, %u file%s, %llu params, %.1f MiB of weights (%llu bytes)\n",
      out.c_str(), c.modelType.c_str(), c.hiddenSize, c.intermediateSize, c.numExperts, c.topK,
      c.numLayers, c.moeLayers.size(), c.sharedIntermediateSize,
      static_cast<unsigned long long>(spec.seed), std::string(moe::dtypeName(spec.dtype)).c_str(),
      spec.numFiles, spec.numFiles == 1 ? "" : "s", static_cast<unsigned long long>(params),
      static_cast<double>(bytes) / (1 << 20), static_cast<unsigned long long>(bytes));
  return 0;
}
