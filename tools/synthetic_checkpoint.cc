// Synthetic checkpoints in each supported family's HuggingFace layout (Mixtral, Qwen2/3-MoE, OLMoE,
// DeepSeek-V2/V3, MoE++, Yuan 2.0-M32) for tests, benchmarks and the default demo model: the same
// files a HuggingFace download has (config.json, model.safetensors or shards + index.json), filled
// with deterministic pseudo-random weights so runs on different machines see identical bytes.
#include "tools/synthetic_checkpoint.h"

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/checkpoint.h"
#include "common/safetensors.h"

namespace moe {
namespace {

using nlohmann::json;
namespace fs = std::filesystem;

// Elements are stored with memcpy in host order; safetensors is little-endian.
static_assert(std::endian::native == std::endian::little, "synthetic writer assumes little-endian");

// Yuan's router weights, times 1/sqrt(H): q and k entries with a std near 1.3 (q_i·k_j spreads by
// ~1.7), values near 2.
constexpr float kYuanQueryKeyScale = 2.25f;
constexpr float kYuanValueScale = 3.5f;

// Refuse absurd specs instead of overflowing or exhausting memory part-way through a write.
constexpr uint64_t kMaxTensorBytes = 1ull << 40;

// splitmix64's output function: a strong 64-bit mixer, so hashing a counter gives a counter-based
// PRNG where element i of a tensor is computable without generating elements 0..i-1.
constexpr uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

uint64_t fnv1a(const std::string& s) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (char c : s) {
    h ^= static_cast<unsigned char>(c);
    h *= 0x100000001b3ull;
  }
  return h;
}

struct TensorSpec {
  std::string name;
  std::vector<uint64_t> shape;
  float scale;  // values are uniform in [-scale, scale)
};

// Fills `out` with element i = f(key, i); `store` converts one float into the target dtype. A
// template parameter rather than std::function so the per-element call inlines.
template <typename Store>
void fillUniform(uint64_t key, float scale, uint64_t numel, Store store) {
  constexpr float kTwoToMinus23 = 1.0f / 8388608.0f;
  for (uint64_t i = 0; i < numel; ++i) {
    const uint64_t bits = mix64(key + (i + 1) * 0x9e3779b97f4a7c15ull);
    // The top 24 bits give an exact float in [0, 2); shifting by 1 gives [-1, 1).
    const float unit = static_cast<float>(bits >> 40) * kTwoToMinus23 - 1.0f;
    store(i, unit * scale);
  }
}

std::vector<std::byte> generate(const TensorSpec& t, uint64_t seed, DType dtype) {
  uint64_t numel = 1;
  for (uint64_t d : t.shape) numel *= d;
  std::vector<std::byte> bytes(numel * dtypeSize(dtype));
  std::byte* out = bytes.data();
  // Keyed by seed and name, so a tensor's values do not depend on which file or order it lands in.
  const uint64_t key = mix64(seed ^ mix64(fnv1a(t.name)));
  switch (dtype) {
    case DType::kF32:
      fillUniform(key, t.scale, numel,
                  [out](uint64_t i, float v) { std::memcpy(out + 4 * i, &v, 4); });
      break;
    case DType::kBF16:
      fillUniform(key, t.scale, numel, [out](uint64_t i, float v) {
        const uint16_t h = floatToBf16(v);
        std::memcpy(out + 2 * i, &h, 2);
      });
      break;
    case DType::kF16:
      fillUniform(key, t.scale, numel, [out](uint64_t i, float v) {
        const uint16_t h = floatToF16(v);
        std::memcpy(out + 2 * i, &h, 2);
      });
      break;
    default:  // f64/FP8: not offered by the generator (moe-make-checkpoint --dtype)
      break;
  }
  return bytes;
}

const char* torchDTypeName(DType t) {
  switch (t) {
    case DType::kF32:
      return "float32";
    case DType::kBF16:
      return "bfloat16";
    case DType::kF16:
      return "float16";
    default:
      break;
  }
  return "?";
}

// Writes via a temporary name and rename, like SafetensorsWriter, so readers never see half a file.
Status writeTextFile(const fs::path& path, const std::string& text) {
  const std::string tmp = path.string() + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) return Status::error(tmp + ": cannot create: " + std::strerror(errno));
    out << text;
    out.close();
    if (!out) return Status::error(tmp + ": write failed: " + std::strerror(errno));
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) return Status::error(path.string() + ": cannot rename from " + tmp + ": " + ec.message());
  return Status::ok();
}

std::string shardName(uint32_t index, uint32_t count) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "model-%05u-of-%05u.safetensors", index + 1, count);
  return buf;
}

// The families the generator writes (its own list: the loader reads them through the family
// table, common/model_families.h, which this file does not share so that a table error shows).
enum class ModelFamily {
  kMixtral,
  kQwen2Moe,
  kQwen3Moe,
  kOlmoe,
  kDeepseekV2,
  kDeepseekV3,
  kMoePlusPlus,
  kYuan
};

bool isQwenFamily(ModelFamily f) {
  return f == ModelFamily::kQwen2Moe || f == ModelFamily::kQwen3Moe;
}
bool isDeepseekFamily(ModelFamily f) {
  return f == ModelFamily::kDeepseekV2 || f == ModelFamily::kDeepseekV3;
}

// What a model_type implies for the generator: its config.json keys and tensor layout.
struct Family {
  ModelFamily id;
  const char* architecture;
};

bool lookupFamily(const std::string& modelType, Family& out) {
  static const std::map<std::string, Family, std::less<>> kFamilies = {
      {"mixtral", {ModelFamily::kMixtral, "MixtralForCausalLM"}},
      {"qwen2_moe", {ModelFamily::kQwen2Moe, "Qwen2MoeForCausalLM"}},
      {"qwen3_moe", {ModelFamily::kQwen3Moe, "Qwen3MoeForCausalLM"}},
      {"olmoe", {ModelFamily::kOlmoe, "OlmoeForCausalLM"}},
      {"deepseek_v2", {ModelFamily::kDeepseekV2, "DeepseekV2ForCausalLM"}},
      {"deepseek_v3", {ModelFamily::kDeepseekV3, "DeepseekV3ForCausalLM"}},
      {"MoE++", {ModelFamily::kMoePlusPlus, "MoEPlusPlusForCausalLM"}},
      {"moe_plus_plus", {ModelFamily::kMoePlusPlus, "MoEPlusPlusForCausalLM"}},
      {"yuan", {ModelFamily::kYuan, "YuanForCausalLM"}},
  };
  auto it = kFamilies.find(modelType);
  if (it == kFamilies.end()) return false;
  out = it->second;
  return true;
}

// The same MoE-layer rules Checkpoint::open applies to the config.json written here (HF's
// Qwen2MoeDecoderLayer / DeepseekV2DecoderLayer / MoE++'s moe_expert_interval); moe_layer_freq is
// always written as 1.
std::vector<uint32_t> moeLayersOf(const SyntheticModelSpec& s, ModelFamily f) {
  std::vector<uint32_t> layers;
  for (uint32_t l = 0; l < s.numLayers; ++l) {
    bool moe = true;
    if (isQwenFamily(f)) {
      const auto& only = s.mlpOnlyLayers;
      moe = std::find(only.begin(), only.end(), l) == only.end() &&
            (l + 1) % s.decoderSparseStep == 0;
    } else if (isDeepseekFamily(f)) {
      moe = l >= s.firstKDenseReplace;
    } else if (f == ModelFamily::kMoePlusPlus) {
      moe = s.moeExpertInterval == 1 || (l + 1) % s.moeExpertInterval == 0;
    }
    if (moe) layers.push_back(l);
  }
  return layers;
}

// Family-specific spec checks, so the generator never writes a config.json open() would reject.
Status validateFamily(const SyntheticModelSpec& s, ModelFamily f) {
  if (isQwenFamily(f) && s.decoderSparseStep == 0) {
    return Status::error("synthetic checkpoint: decoder_sparse_step must be > 0");
  }
  if (f == ModelFamily::kMoePlusPlus) {
    if (s.topK != 2) {
      return Status::error("synthetic checkpoint: MoE++ top-k must be 2 (MOE_TOP_K), not " +
                           std::to_string(s.topK));
    }
    if (s.numExperts <= kMoePlusPlusZeroComputeExperts) {
      return Status::error("synthetic checkpoint: MoE++ needs at least 5 experts (" +
                           std::to_string(s.numExperts) +
                           " given): one FFN expert plus the 4 zero-computation experts");
    }
    if (s.moeExpertInterval == 0) {
      return Status::error("synthetic checkpoint: moe_expert_interval must be > 0");
    }
  }
  if (isDeepseekFamily(f)) {
    if (s.sharedIntermediateSize % s.intermediateSize != 0) {
      return Status::error("synthetic checkpoint: DeepSeek shared width " +
                           std::to_string(s.sharedIntermediateSize) +
                           " must be a multiple of the expert width " +
                           std::to_string(s.intermediateSize) + " (n_shared_experts × it)");
    }
    if (s.nGroup == 0 || s.numExperts % s.nGroup != 0) {
      return Status::error("synthetic checkpoint: n_group " + std::to_string(s.nGroup) +
                           " must divide the number of experts (" + std::to_string(s.numExperts) +
                           ")");
    }
    if (s.topkGroup == 0 || s.topkGroup > s.nGroup) {
      return Status::error("synthetic checkpoint: topk_group " + std::to_string(s.topkGroup) +
                           " must be between 1 and n_group (" + std::to_string(s.nGroup) + ")");
    }
    if (!(s.routedScalingFactor > 0.0f) || !std::isfinite(s.routedScalingFactor)) {
      return Status::error("synthetic checkpoint: routed_scaling_factor must be positive");
    }
  }
  if (moeLayersOf(s, f).empty()) {
    return Status::error("synthetic checkpoint: the spec leaves no MoE layer among " +
                         std::to_string(s.numLayers));
  }
  return Status::ok();
}

// DeepSeek-V2 uses group-limited selection only when there are groups to limit; V3 always uses
// its bias-corrected "noaux_tc" method.
const char* deepseekTopkMethod(const SyntheticModelSpec& s, ModelFamily f) {
  if (f == ModelFamily::kDeepseekV3) return "noaux_tc";
  return s.nGroup > 1 ? "group_limited_greedy" : "greedy";
}

// config.json with the family's own key names (HF configuration_*.py); keys the cluster does not
// read (attention, vocabulary) are filled with the family's usual values so the file looks like a
// download. The dense-layer width intermediate_size is 4× the expert width, as in Qwen1.5-MoE.
json familyConfig(const SyntheticModelSpec& spec, const Family& fam) {
  if (fam.id == ModelFamily::kMixtral) {
    // Unchanged from the Mixtral-only generator so existing synthetic models keep their bytes.
    return {
        {"architectures", {"MixtralForCausalLM"}},
        {"model_type", "mixtral"},
        {"hidden_size", spec.hiddenSize},
        {"intermediate_size", spec.intermediateSize},
        {"num_local_experts", spec.numExperts},
        {"num_experts_per_tok", spec.topK},
        {"num_hidden_layers", spec.numLayers},
        {"num_attention_heads", 32},
        {"num_key_value_heads", 8},
        {"vocab_size", 32000},
        {"max_position_embeddings", 32768},
        {"hidden_act", "silu"},
        {"rms_norm_eps", 1e-5},
        {"rope_theta", 1e6},
        {"router_aux_loss_coef", 0.02},
        {"output_router_logits", false},
        {"tie_word_embeddings", false},
        {"torch_dtype", torchDTypeName(spec.dtype)},
    };
  }
  json c = {
      {"architectures", {fam.architecture}}, {"model_type", spec.modelType},
      {"hidden_size", spec.hiddenSize},      {"num_experts_per_tok", spec.topK},
      {"num_hidden_layers", spec.numLayers}, {"hidden_act", "silu"},
      {"tie_word_embeddings", false},        {"torch_dtype", torchDTypeName(spec.dtype)},
  };
  const uint64_t denseWidth = 4ull * spec.intermediateSize;
  switch (fam.id) {
    case ModelFamily::kMixtral:
      break;  // returned above
    case ModelFamily::kQwen2Moe:
    case ModelFamily::kQwen3Moe:
      c["intermediate_size"] = denseWidth;
      c["moe_intermediate_size"] = spec.intermediateSize;
      c["num_experts"] = spec.numExperts;
      c["norm_topk_prob"] = spec.normTopkProb;
      c["decoder_sparse_step"] = spec.decoderSparseStep;
      c["mlp_only_layers"] = spec.mlpOnlyLayers;
      if (fam.id == ModelFamily::kQwen2Moe) {
        c["shared_expert_intermediate_size"] = spec.sharedIntermediateSize;
      } else {
        c["head_dim"] = 128;
      }
      c["num_attention_heads"] = 16;
      c["num_key_value_heads"] = fam.id == ModelFamily::kQwen2Moe ? 16 : 4;
      c["vocab_size"] = 151936;
      c["max_position_embeddings"] = 32768;
      c["rms_norm_eps"] = 1e-6;
      c["rope_theta"] = 1e6;
      c["router_aux_loss_coef"] = 0.001;
      c["output_router_logits"] = false;
      break;
    case ModelFamily::kOlmoe:
      c["intermediate_size"] = spec.intermediateSize;
      c["num_experts"] = spec.numExperts;
      c["norm_topk_prob"] = spec.normTopkProb;
      c["num_attention_heads"] = 16;
      c["num_key_value_heads"] = 16;
      c["vocab_size"] = 50304;
      c["max_position_embeddings"] = 4096;
      c["rms_norm_eps"] = 1e-5;
      c["rope_theta"] = 10000.0;
      c["clip_qkv"] = nullptr;
      c["router_aux_loss_coef"] = 0.01;
      c["output_router_logits"] = false;
      break;
    case ModelFamily::kDeepseekV2:
    case ModelFamily::kDeepseekV3:
      c["intermediate_size"] = denseWidth;
      c["moe_intermediate_size"] = spec.intermediateSize;
      c["n_routed_experts"] = spec.numExperts;
      c["n_shared_experts"] = spec.sharedIntermediateSize / spec.intermediateSize;
      c["first_k_dense_replace"] = spec.firstKDenseReplace;
      c["moe_layer_freq"] = 1;
      c["n_group"] = spec.nGroup;
      c["topk_group"] = spec.topkGroup;
      c["routed_scaling_factor"] = spec.routedScalingFactor;
      c["scoring_func"] = fam.id == ModelFamily::kDeepseekV3 ? "sigmoid" : "softmax";
      c["topk_method"] = deepseekTopkMethod(spec, fam.id);
      c["norm_topk_prob"] = spec.normTopkProb;
      c["num_attention_heads"] = 16;
      c["num_key_value_heads"] = 16;
      c["kv_lora_rank"] = 512;
      c["q_lora_rank"] = fam.id == ModelFamily::kDeepseekV3 ? json(1536) : json(nullptr);
      c["qk_nope_head_dim"] = 128;
      c["qk_rope_head_dim"] = 64;
      c["v_head_dim"] = 128;
      c["vocab_size"] = fam.id == ModelFamily::kDeepseekV3 ? 129280 : 102400;
      c["max_position_embeddings"] = 4096;
      c["rms_norm_eps"] = 1e-6;
      c["rope_theta"] = 10000.0;
      c["aux_loss_alpha"] = 0.001;
      break;
    case ModelFamily::kMoePlusPlus:
      c.erase("num_experts_per_tok");  // the reference fixes top-2 and has no such key
      c["intermediate_size"] = spec.intermediateSize;
      c["num_experts"] = json::array({spec.numExperts});  // a list in MoE++'s own configs
      c["moe_expert_interval"] = spec.moeExpertInterval;
      c["moe_2layer_gate"] = spec.moeTwoLayerGate;
      c["moe_use_mixtral_gating"] = spec.moeMixtralGating;
      c["moe_use_logits_norm"] = spec.moeLogitsNorm;
      c["moe_gate_norm_std"] = 1.0;
      c["moe_feature_no_mul_topk"] = spec.moeFeatureNoMulTopk;
      c["num_attention_heads"] = 32;
      c["num_key_value_heads"] = 32;
      c["vocab_size"] = 32000;
      c["max_position_embeddings"] = 4096;
      c["rms_norm_eps"] = 1e-6;
      c["rope_theta"] = 10000.0;
      break;
    case ModelFamily::kYuan:
      c.erase("num_experts_per_tok");  // Yuan keeps top-k in moe_config
      c["use_moe"] = true;
      c["moe_config"] = {
          {"moe_num_experts", spec.numExperts},
          {"moe_top_k", spec.topK},
          {"ffn_hidden_size", spec.intermediateSize},
          {"router_type", "attn_router"},
          {"gated_linear_unit", true},
      };
      c["intermediate_size"] = spec.intermediateSize;
      c["num_attention_heads"] = 16;
      c["vocab_size"] = 135040;
      c["max_position_embeddings"] = 4096;
      c["rms_norm_eps"] = 1e-6;
      break;
  }
  return c;
}

// One MoE layer's router tensors under `prefix`. Every family's scales aim at logits that spread by
// O(1) across experts for unit-variance inputs, so the softmax is far from uniform and different
// tokens pick different experts.
std::vector<TensorSpec> gateTensors(const SyntheticModelSpec& spec, ModelFamily f,
                                    const std::string& prefix, float gateScale) {
  const uint64_t h = spec.hiddenSize;
  const uint64_t n = spec.numExperts;
  const float rootH = std::sqrt(static_cast<float>(h));
  switch (f) {
    case ModelFamily::kMoePlusPlus: {
      std::vector<TensorSpec> t;
      if (spec.moeTwoLayerGate) {
        // W1 at 1.5/sqrt(H) keeps tanh out of saturation (its outputs have a std near 0.6); W2 at
        // 3/sqrt(8N) brings the logits back to a std near 1.
        t.push_back({prefix + "gate.wg.0.weight", {8 * n, h}, 1.5f / rootH});
        t.push_back({prefix + "gate.wg.2.weight",
                     {n, 8 * n},
                     3.0f / std::sqrt(8.0f * static_cast<float>(n))});
      } else {
        t.push_back({prefix + "gate.wg.weight", {n, h}, gateScale});
      }
      // Wmap·l_prev at 1.2/sqrt(N) moves the logits by about 0.7 std, enough to change top-2
      // choices, while the map's spectral radius stays near 0.7 so logits do not grow with depth.
      t.push_back(
          {prefix + "gate.gate_map.weight", {n, n}, 1.2f / std::sqrt(static_cast<float>(n))});
      return t;
    }
    case ModelFamily::kYuan:
      // Each expert's logit is an attention-weighted mean of the values: q_i·k_j must spread by
      // O(1) or the attention is uniform and every expert gets the same logit, and the values
      // must spread wider than a linear gate's logits since averaging shrinks them.
      return {{prefix + "gate.query.weight", {n, h}, kYuanQueryKeyScale / rootH},
              {prefix + "gate.key.weight", {n, h}, kYuanQueryKeyScale / rootH},
              {prefix + "gate.value.weight", {n, h}, kYuanValueScale / rootH}};
    default: {
      std::vector<TensorSpec> t = {{prefix + "gate.weight", {n, h}, gateScale}};
      if (f == ModelFamily::kDeepseekV3) {
        // ±0.05 against sigmoid scores spread over roughly (0.2, 0.8): it changes the top-2 of
        // about a third of tokens on a tiny model, so a router that ignores the bias is caught
        // while the scores still dominate most choices.
        t.push_back({prefix + "gate.e_score_correction_bias", {n}, 0.05f});
      }
      return t;
    }
  }
}

Status validate(const SyntheticModelSpec& s, size_t numUnits) {
  if (s.hiddenSize == 0 || s.intermediateSize == 0 || s.numExperts == 0 || s.numLayers == 0) {
    return Status::error(
        "synthetic checkpoint: hidden, intermediate, experts and layers must be > 0");
  }
  if (s.topK < 1 || s.topK > s.numExperts) {
    return Status::error("synthetic checkpoint: top-k " + std::to_string(s.topK) +
                         " must be between 1 and the number of experts (" +
                         std::to_string(s.numExperts) + ")");
  }
  if (s.numFiles < 1 || s.numFiles > numUnits) {
    return Status::error("synthetic checkpoint: files " + std::to_string(s.numFiles) +
                         " must be between 1 and " + std::to_string(numUnits) +
                         " (one gate or expert per file at most)");
  }
  // Fused [2I, H] expert weights and MoE++'s [8N, H] gate are the widest tensors.
  const uint64_t biggest = static_cast<uint64_t>(s.hiddenSize) *
                           std::max<uint64_t>(2ull * s.intermediateSize, 8ull * s.numExperts) *
                           dtypeSize(s.dtype);
  if (biggest > kMaxTensorBytes) {
    return Status::error("synthetic checkpoint: a " + std::to_string(biggest) +
                         "-byte tensor is too large to generate");
  }
  return Status::ok();
}

}  // namespace

// Only the MoE tensors of the MoE layers are written (router gate or MoE++/Yuan router tensors, V3
// bias, optional w_noise, experts, MoE++ constant experts, shared expert): the cluster serves MoE
// blocks only, and attention/embedding/dense-MLP weights would multiply the size for nothing it
// reads.
Status writeSyntheticCheckpoint(const SyntheticModelSpec& spec, const std::string& dir) {
  Family fam{};
  if (!lookupFamily(spec.modelType, fam)) {
    return Status::error("synthetic checkpoint: model_type '" + spec.modelType +
                         "' is not supported (supported: mixtral, qwen2_moe, qwen3_moe, olmoe, "
                         "deepseek_v2, deepseek_v3, MoE++ (or moe_plus_plus), yuan)");
  }
  const bool mixtral = fam.id == ModelFamily::kMixtral;
  const uint64_t h = spec.hiddenSize;
  const uint64_t inter = spec.intermediateSize;
  // Sizes first (the family rules divide by them); the file count is checked once units exist.
  if (Status s = validate(spec, std::numeric_limits<size_t>::max()); !s) return s;
  if (Status s = validateFamily(spec, fam.id); !s) return s;
  // Shared experts exist only where the family has them; the spec field is ignored elsewhere.
  const uint64_t shared = (fam.id == ModelFamily::kQwen2Moe || isDeepseekFamily(fam.id))
                              ? spec.sharedIntermediateSize
                              : 0;
  // Fan-in scaling keeps activations O(1) through w1/w3 and back through w2.
  const float inScale = 1.0f / std::sqrt(static_cast<float>(h));
  // Gate scale 2/sqrt(H): router logits then have a standard deviation near 1 for unit-scale
  // inputs, so the softmax is far from uniform and top-k picks differ between tokens.
  const float gateScale = 2.0f / std::sqrt(static_cast<float>(h));
  auto ffn = [&](const std::string& p, uint64_t width, const char* w1, const char* w3,
                 const char* w2) {
    const float outScale = 1.0f / std::sqrt(static_cast<float>(width));
    return std::vector<TensorSpec>{{p + w1, {width, h}, inScale},
                                   {p + w3, {width, h}, inScale},
                                   {p + w2, {h, width}, outScale}};
  };

  // MoE++ and Yuan fuse w1 and w3 into one [2I, H] matrix; its halves get the same scale.
  auto fusedFfn = [&](const std::string& p, const char* fused, const char* down) {
    return std::vector<TensorSpec>{
        {p + fused, {2 * inter, h}, inScale},
        {p + down, {h, inter}, 1.0f / std::sqrt(static_cast<float>(inter))}};
  };
  const uint32_t numFfnExperts =
      spec.numExperts - (fam.id == ModelFamily::kMoePlusPlus ? kMoePlusPlusZeroComputeExperts : 0);
  const char* block = mixtral                               ? ".block_sparse_moe."
                      : fam.id == ModelFamily::kMoePlusPlus ? ".mlp.moe."
                                                            : ".mlp.";

  // A unit is what stays together in one shard: a layer's router tensors, one expert's matrices,
  // or the shared expert with its gate.
  std::vector<std::vector<TensorSpec>> units;
  for (uint32_t l : moeLayersOf(spec, fam.id)) {
    const std::string prefix = "model.layers." + std::to_string(l) + block;
    std::vector<TensorSpec> gate = gateTensors(spec, fam.id, prefix, gateScale);
    // softplus(x·Wnoiseᵀ) near 0.7 ± 0.3: noise of the same order as the logit spread.
    if (spec.noiseWeights)
      gate.push_back({prefix + "w_noise.weight", {spec.numExperts, h}, inScale});
    units.push_back(std::move(gate));
    // MoE++ keeps its experts in a ModuleList "experts" inside its experts module.
    auto expertPrefix = [&](uint32_t e) {
      return prefix + (fam.id == ModelFamily::kMoePlusPlus ? "experts.experts." : "experts.") +
             std::to_string(e) + ".";
    };
    for (uint32_t e = 0; e < numFfnExperts; ++e) {
      const std::string ep = expertPrefix(e);
      if (fam.id == ModelFamily::kMoePlusPlus) {
        units.push_back(fusedFfn(ep, "up_proj.weight", "down_proj.weight"));
      } else if (fam.id == ModelFamily::kYuan) {
        units.push_back(fusedFfn(ep, "w1.weight", "w2.weight"));
      } else {
        units.push_back(
            mixtral ? ffn(ep, inter, "w1.weight", "w3.weight", "w2.weight")
                    : ffn(ep, inter, "gate_proj.weight", "up_proj.weight", "down_proj.weight"));
      }
    }
    if (fam.id == ModelFamily::kMoePlusPlus) {
      // The two constant experts follow the FFNs; the copy and zero experts have no weights.
      // Wc at 1/sqrt(H) on the k-scaled input gives softmax logits of std ~1; v is O(1) like x.
      for (uint32_t e = numFfnExperts; e < numFfnExperts + 2; ++e) {
        const std::string ep = expertPrefix(e);
        units.push_back({{ep + "wg.weight", {2, h}, inScale}, {ep + "constant", {h}, 1.0f}});
      }
    }
    if (shared > 0) {
      const bool qwen2 = fam.id == ModelFamily::kQwen2Moe;
      std::vector<TensorSpec> unit =
          ffn(prefix + (qwen2 ? "shared_expert." : "shared_experts."), shared, "gate_proj.weight",
              "up_proj.weight", "down_proj.weight");
      if (qwen2) unit.push_back({prefix + "shared_expert_gate.weight", {1, h}, gateScale});
      units.push_back(std::move(unit));
    }
  }
  if (Status s = validate(spec, units.size()); !s) return s;
  if (shared * h * dtypeSize(spec.dtype) > kMaxTensorBytes) {
    return Status::error("synthetic checkpoint: the shared expert is too large to generate");
  }

  const fs::path root(dir);
  std::error_code ec;
  fs::create_directories(root, ec);
  if (ec) return Status::error(dir + ": cannot create directory: " + ec.message());

  const json config = familyConfig(spec, fam);
  if (Status s = writeTextFile(root / "config.json", config.dump(2) + "\n"); !s) return s;

  // Checkpoint::open prefers index.json when present, so a stale file from the other layout in a
  // reused directory would silently shadow what is written now.
  fs::remove(root / (spec.numFiles == 1 ? "model.safetensors.index.json" : "model.safetensors"),
             ec);

  json weightMap = json::object();
  uint64_t totalBytes = 0;
  size_t unit = 0;
  for (uint32_t f = 0; f < spec.numFiles; ++f) {
    const std::string fileName =
        spec.numFiles == 1 ? "model.safetensors" : shardName(f, spec.numFiles);
    // Contiguous split, like HF's sharding: file f gets units [f*n/F, (f+1)*n/F).
    const size_t end = (f + 1) * units.size() / spec.numFiles;
    SafetensorsWriter writer;
    for (; unit < end; ++unit) {
      for (const TensorSpec& t : units[unit]) {
        std::vector<std::byte> bytes = generate(t, spec.seed, spec.dtype);
        totalBytes += bytes.size();
        weightMap[t.name] = fileName;
        writer.add(t.name, spec.dtype, t.shape, std::move(bytes));
      }
    }
    if (Status s = writer.write((root / fileName).string()); !s) return s;
  }

  if (spec.numFiles > 1) {
    json index = {{"metadata", {{"total_size", totalBytes}}}, {"weight_map", weightMap}};
    if (Status s = writeTextFile(root / "model.safetensors.index.json", index.dump(2) + "\n"); !s) {
      return s;
    }
  }
  return Status::ok();
}

}  // namespace moe
