// moe-make-checkpoint: writes a synthetic checkpoint (config.json + safetensors) in one of the
// supported families' HuggingFace layouts so the cluster can be run and benchmarked without
// downloading a real model.
#include <cstdint>
#include <cstdio>
#include <new>
#include <string>
#include <vector>

#include "common/checkpoint.h"
#include "common/cli.h"
#include "tools/synthetic_checkpoint.h"

namespace {

constexpr const char* kFooter =
    "Writes DIR/config.json and the MoE weights of every MoE layer (gate, experts, shared\n"
    "expert, DeepSeek-V3 bias). --model-type: mixtral, qwen2_moe, qwen3_moe, olmoe,\n"
    "deepseek_v2, deepseek_v3, MoE++ (or moe_plus_plus), yuan. --intermediate is the routed\n"
    "expert width; DeepSeek writes n_shared_experts = --shared-intermediate / --intermediate.\n"
    "Family options are ignored where the family has no such key.\n"
    "MoE++: --experts counts all N experts, the 4 zero-computation ones (2 constant, copy,\n"
    "zero) included, so it must be at least 5, and --top-k must be 2; it writes the two-layer\n"
    "gate unless --moe-single-layer-gate. Yuan writes its attention router (moe_config\n"
    "router_type attn_router). --noise-weights adds each MoE layer's w_noise.weight [E, H].\n"
    "Switches take no value, or =true|false.";

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
  if (c.gatingResidual) n += e * e;                          // MoE++ gate_map
  if (c.numFfnExperts < c.numExperts) n += 2 * (2 * h + h);  // constant experts
  n += 3 * h * c.sharedIntermediateSize;
  if (c.sharedExpertGated) n += h;
  if (c.routing.choiceBias) n += e;
  if (noiseWeights) n += e * h;
  return n;
}

}  // namespace

int main(int argc, char** argv) {
  moe::SyntheticModelSpec spec;
  std::string out;
  bool singleLayerGate = false;
  CLI::App app{
      "Writes a synthetic checkpoint (config.json + safetensors) in one of the supported "
      "families' HuggingFace layouts.",
      "moe-make-checkpoint"};
  moe::cli::setUp(app);
  app.footer(kFooter);
  using moe::cli::unsignedInteger;
  app.add_option("--out", out, "Directory to write")->required()->transform(moe::cli::nonEmpty());
  app.add_option("--model-type", spec.modelType, "Model family (config.json model_type)")
      ->transform(moe::cli::oneOf({"mixtral", "qwen2_moe", "qwen3_moe", "olmoe", "deepseek_v2",
                                   "deepseek_v3", "MoE++", "moe_plus_plus", "yuan"}));
  // Bounds keep the weights writable: hidden × intermediate × experts stays what a disk holds.
  app.add_option("--hidden", spec.hiddenSize, "Hidden size")->transform(unsignedInteger(1, 65536));
  app.add_option("--intermediate", spec.intermediateSize, "Routed expert width")
      ->transform(unsignedInteger(1, 262144));
  app.add_option("--experts", spec.numExperts, "Experts per MoE layer")
      ->transform(unsignedInteger(1, 4096));
  app.add_option("--top-k", spec.topK, "Experts per token (at most --experts)")
      ->transform(unsignedInteger(1, 4096));
  app.add_option("--layers", spec.numLayers, "Decoder layers")->transform(unsignedInteger(1, 1024));
  app.add_option("--seed", spec.seed, "Weight seed")->transform(unsignedInteger(0));
  std::string dtype(moe::dtypeName(spec.dtype));
  app.add_option("--dtype", dtype, "Weight dtype")
      ->transform(moe::cli::oneOf({"f32", "bf16", "f16"}));
  app.add_option("--files", spec.numFiles, "Safetensors files (>1: sharded with an index)")
      ->transform(unsignedInteger(1, 1024));
  auto* family = "Family options";
  app.add_flag("--norm-topk-prob", spec.normTopkProb, "norm_topk_prob")->group(family);
  app.add_option("--shared-intermediate", spec.sharedIntermediateSize,
                 "Shared expert width (0: none)")
      ->transform(unsignedInteger(0, 1u << 20))
      ->group(family);
  app.add_option("--decoder-sparse-step", spec.decoderSparseStep, "Qwen decoder_sparse_step")
      ->transform(unsignedInteger(1, 1024))
      ->group(family);
  std::string mlpOnlyLayers;
  app.add_option("--mlp-only-layers", mlpOnlyLayers, "Qwen mlp_only_layers, e.g. 0,2")
      ->transform(moe::cli::unsignedList(0, UINT32_MAX, /*allowEmpty=*/true))
      ->group(family);
  app.add_option("--first-k-dense", spec.firstKDenseReplace, "DeepSeek first_k_dense_replace")
      ->transform(unsignedInteger(0, 1024))
      ->group(family);
  app.add_option("--n-group", spec.nGroup, "DeepSeek n_group")
      ->transform(unsignedInteger(1, 4096))
      ->group(family);
  app.add_option("--topk-group", spec.topkGroup, "DeepSeek topk_group")
      ->transform(unsignedInteger(1, 4096))
      ->group(family);
  app.add_option("--routed-scaling", spec.routedScalingFactor, "DeepSeek routed_scaling_factor")
      ->transform(moe::cli::number(0, 1e6, /*minExclusive=*/true))
      ->group(family);
  auto* moePlusPlus = "MoE++ options";
  app.add_option("--moe-expert-interval", spec.moeExpertInterval, "moe_expert_interval")
      ->transform(unsignedInteger(1, 1024))
      ->group(moePlusPlus);
  app.add_flag("--moe-single-layer-gate", singleLayerGate,
               "A one-layer gate (moe_2layer_gate false)")
      ->group(moePlusPlus);
  app.add_flag("--moe-mixtral-gating", spec.moeMixtralGating, "moe_use_mixtral_gating")
      ->group(moePlusPlus);
  app.add_flag("--moe-feature-no-mul-topk", spec.moeFeatureNoMulTopk, "moe_feature_no_mul_topk")
      ->group(moePlusPlus);
  app.add_flag("--moe-logits-norm", spec.moeLogitsNorm, "moe_use_logits_norm")->group(moePlusPlus);
  app.add_flag("--noise-weights", spec.noiseWeights,
               "Write each MoE layer's w_noise.weight [E, H] (noisy top-k), any family");
  if (auto status = moe::cli::parse(app, argc, argv)) return *status;
  spec.dtype = dtype == "f32"   ? moe::DType::kF32
               : dtype == "f16" ? moe::DType::kF16
                                : moe::DType::kBF16;
  spec.mlpOnlyLayers.clear();
  for (uint64_t layer : moe::cli::splitUnsignedList(mlpOnlyLayers))
    spec.mlpOnlyLayers.push_back(static_cast<uint32_t>(layer));
  if (spec.topK > spec.numExperts) return moe::cli::usageError(app, "--top-k: at most --experts");
  spec.moeTwoLayerGate = !singleLayerGate;
  if ((spec.modelType == "MoE++" || spec.modelType == "moe_plus_plus") &&
      (spec.topK != 2 || spec.numExperts < 5)) {
    return moe::cli::usageError(
        app,
        "MoE++ needs --top-k 2 and --experts at least 5 (the last 4 experts are its "
        "zero-computation experts)");
  }

  moe::Status s;
  try {
    s = moe::writeSyntheticCheckpoint(spec, out);
  } catch (const std::bad_alloc&) {  // sizes within the flags' bounds can still exceed memory
    s = moe::Status::error(moe::StatusCode::kResourceExhausted,
                           "not enough memory for weights of these sizes");
  }
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
