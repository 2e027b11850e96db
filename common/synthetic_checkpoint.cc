// Synthetic checkpoints in each supported family's HuggingFace layout (Mixtral, Qwen2/3-MoE, OLMoE,
// DeepSeek-V2/V3) for tests, benchmarks and the default demo model: the same
// files a HuggingFace download has (config.json, model.safetensors or shards + index.json), filled
// with deterministic pseudo-random weights so runs on different machines see identical bytes.
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
  };
  auto it = kFamilies.find(modelType);
  if (it == kFamilies.end()) return false;
  out = it->second;
  return true;
}

// The same MoE-layer rules Checkpoint::open applies to the config.json written here (HF's
// Qwen2MoeDecoderLayer / DeepseekV2DecoderLayer); moe_layer_freq is always written as 1.
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
  }
  return c;
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
  const uint64_t biggest = static_cast<uint64_t>(s.hiddenSize) *
                           std::max<uint64_t>(s.intermediateSize, s.numExperts) *
                           dtypeSize(s.dtype);
  if (biggest > kMaxTensorBytes) {
    return Status::error("synthetic checkpoint: a " + std::to_string(biggest) +
                         "-byte tensor is too large to generate");
  }
  return Status::ok();
}

}  // namespace

// Only the MoE tensors of the MoE layers are written (router gate, its V3 bias, experts, shared
// expert): the cluster serves MoE blocks only, and attention/embedding/dense-MLP weights would
// multiply the size for nothing it reads.
Status writeSyntheticCheckpoint(const SyntheticModelSpec& spec, const std::string& dir) {
  Family fam{};
  if (!lookupFamily(spec.modelType, fam)) {
    return Status::error("synthetic checkpoint: model_type '" + spec.modelType +
                         "' is not supported (supported: mixtral, qwen2_moe, qwen3_moe, olmoe, "
                         "deepseek_v2, deepseek_v3)");
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

  // A unit is what stays together in one shard: a layer's gate (and bias), one expert's three
  // matrices, or the shared expert with its gate.
  std::vector<std::vector<TensorSpec>> units;
  for (uint32_t l : moeLayersOf(spec, fam.id)) {
    const std::string prefix =
        "model.layers." + std::to_string(l) + (mixtral ? ".block_sparse_moe." : ".mlp.");
    std::vector<TensorSpec> gate = {{prefix + "gate.weight", {spec.numExperts, h}, gateScale}};
    if (fam.id == ModelFamily::kDeepseekV3) {
      // ±0.05 against sigmoid scores spread over roughly (0.2, 0.8): it changes the top-2 of
      // about a third of tokens on a tiny model, so a router that ignores the bias is caught
      // while the scores still dominate most choices.
      gate.push_back({prefix + "gate.e_score_correction_bias", {spec.numExperts}, 0.05f});
    }
    units.push_back(std::move(gate));
    for (uint32_t e = 0; e < spec.numExperts; ++e) {
      const std::string ep = prefix + "experts." + std::to_string(e) + ".";
      units.push_back(
          mixtral ? ffn(ep, inter, "w1.weight", "w3.weight", "w2.weight")
                  : ffn(ep, inter, "gate_proj.weight", "up_proj.weight", "down_proj.weight"));
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
