// Checkpoint directory loading: config.json validation, single-file or sharded (index.json)
// safetensors layout, and fp32 loading of each supported family's MoE tensors with shapes checked
// against the config. Tensors are looked up lazily so a process touches only the experts it serves.
#include "common/checkpoint.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <limits>
#include <sstream>
#include <tuple>

#include <nlohmann/json.hpp>

namespace moe {
namespace {

using nlohmann::json;
namespace fs = std::filesystem;

constexpr const char* kSupportedModelTypes =
    "mixtral, qwen2_moe, qwen3_moe, olmoe, deepseek_v2, deepseek_v3, MoE++ (or moe_plus_plus), "
    "yuan";

// Reads and parses a JSON file; errors are prefixed with `path`.
Result<json> readJsonFile(const std::string& path) {
  std::error_code ec;
  if (!fs::exists(path, ec)) return makeError(path + ": missing");
  std::ifstream in(path, std::ios::binary);
  if (!in) return makeError(path + ": cannot open: " + std::strerror(errno));
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) return makeError(path + ": read failed");
  try {
    return json::parse(text.str());
  } catch (const json::parse_error& e) {
    return makeError(path + ": invalid JSON at byte " + std::to_string(e.byte) + ": " + e.what());
  } catch (const json::exception& e) {  // e.g. out_of_range for a number such as 1e400
    return makeError(path + ": invalid JSON: " + e.what());
  }
}

// True for a JSON integer in [minValue, UINT32_MAX]; floats such as 16.5 or 16.0 do not count.
bool isU32AtLeast(const json& v, uint64_t minValue) {
  if (v.is_number_unsigned()) {
    const uint64_t u = v.get<uint64_t>();
    return u >= minValue && u <= std::numeric_limits<uint32_t>::max();
  }
  return v.is_number_integer() && v.get<int64_t>() >= static_cast<int64_t>(minValue) &&
         v.get<int64_t>() <= std::numeric_limits<uint32_t>::max();
}

// Keys of a nested object (Yuan's moe_config) are passed by their dotted path so that errors name
// them in full ("moe_config.moe_top_k"); the lookup in `obj` uses the last component. HF config
// keys never contain dots themselves.
json::const_iterator findKey(const json& obj, const char* key) {
  const char* dot = std::strrchr(key, '.');
  return obj.find(dot ? dot + 1 : key);
}

// config.json integers must be positive and fit the uint32 fields of ModelConfig.
Result<uint32_t> positiveU32(const json& config, const std::string& path, const char* key) {
  auto it = findKey(config, key);
  if (it == config.end()) return makeError(path + ": key '" + key + "' missing");
  if (!isU32AtLeast(*it, 1)) {
    return makeError(path + ": key '" + key + "' must be a positive integer (got " + it->dump() +
                     ")");
  }
  return static_cast<uint32_t>(it->get<uint64_t>());
}

// Optional keys: HF configs write unset optionals as null, which means "use the default" just as
// an absent key does. `minValue` is 0 for counts that may be zero (e.g. n_shared_experts).
Result<uint32_t> optionalU32(const json& config, const std::string& path, const char* key,
                             uint32_t fallback, uint64_t minValue) {
  auto it = findKey(config, key);
  if (it == config.end() || it->is_null()) return fallback;
  if (!isU32AtLeast(*it, minValue)) {
    return makeError(path + ": key '" + key + "' must be a " +
                     (minValue > 0 ? "positive" : "non-negative") + " integer (got " + it->dump() +
                     ")");
  }
  return static_cast<uint32_t>(it->get<uint64_t>());
}

Result<bool> optionalBool(const json& config, const std::string& path, const char* key,
                          bool fallback) {
  auto it = findKey(config, key);
  if (it == config.end() || it->is_null()) return fallback;
  if (!it->is_boolean()) {
    return makeError(path + ": key '" + key + "' must be true or false (got " + it->dump() + ")");
  }
  return it->get<bool>();
}

Result<std::string> optionalChoice(const json& config, const std::string& path, const char* key,
                                   const std::string& fallback,
                                   std::initializer_list<const char*> allowed) {
  auto it = findKey(config, key);
  if (it == config.end() || it->is_null()) return fallback;
  std::string joined;
  for (const char* a : allowed) {
    if (it->is_string() && it->get_ref<const std::string&>() == a) return std::string(a);
    joined += (joined.empty() ? "" : ", ") + std::string(a);
  }
  return makeError(path + ": key '" + key + "' must be one of " + joined + " (got " + it->dump() +
                   ")");
}

Result<float> optionalPositiveFloat(const json& config, const std::string& path, const char* key,
                                    float fallback) {
  auto it = findKey(config, key);
  if (it == config.end() || it->is_null()) return fallback;
  // Finite as a float too: 1e300 is a valid JSON double but would become +inf here.
  if (!it->is_number() || !(it->get<double>() > 0.0) ||
      !(it->get<double>() <= std::numeric_limits<float>::max())) {
    return makeError(path + ": key '" + key + "' must be a positive number (got " + it->dump() +
                     ")");
  }
  return static_cast<float>(it->get<double>());
}

Result<std::vector<uint32_t>> optionalLayerList(const json& config, const std::string& path,
                                                const char* key) {
  auto it = findKey(config, key);
  if (it == config.end() || it->is_null()) return std::vector<uint32_t>{};
  std::vector<uint32_t> out;
  if (it->is_array()) {
    for (const json& v : *it) {
      if (!isU32AtLeast(v, 0)) break;
      out.push_back(static_cast<uint32_t>(v.get<uint64_t>()));
    }
    if (out.size() == it->size()) return out;
  }
  return makeError(path + ": key '" + key + "' must be a list of non-negative layer indices (got " +
                   it->dump() + ")");
}

// The config.json key holding the routed-expert count, for reading it and for error messages.
const char* expertsKeyOf(ModelFamily f) {
  switch (f) {
    case ModelFamily::kMixtral:
      return "num_local_experts";
    case ModelFamily::kDeepseekV2:
    case ModelFamily::kDeepseekV3:
      return "n_routed_experts";
    case ModelFamily::kYuan:
      return "moe_config.moe_num_experts";
    default:
      return "num_experts";
  }
}

// The experts key as `config` spells it: transformers 5 writes num_local_experts for families
// (Qwen3-MoE, …) whose configs map num_experts to it (attribute_map), older versions num_experts.
const char* expertsKeyIn(const json& config, ModelFamily f) {
  const char* key = expertsKeyOf(f);
  if (!config.contains(key) && config.contains("num_local_experts")) return "num_local_experts";
  return key;
}

// Stores a parsed value or passes its error on, keeping the per-key reads below one line each.
template <typename T>
Status assign(T& dest, Result<T> r) {
  if (!r) return r.status();
  dest = std::move(r).value();
  return Status::ok();
}

struct U32Field {
  const char* key;
  uint32_t* dest;
};

Status readPositiveFields(const json& obj, const std::string& path,
                          std::initializer_list<U32Field> fields) {
  for (U32Field fld : fields) {
    if (Status s = assign(*fld.dest, positiveU32(obj, path, fld.key)); !s) return s;
  }
  return Status::ok();
}

Status checkTopK(const std::string& path, const ModelConfig& c, const char* topKKey) {
  if (c.topK >= 1 && c.topK <= c.numExperts) return Status::ok();
  return Status::error(path + ": " + topKKey + " " + std::to_string(c.topK) +
                       " must be between 1 and " + expertsKeyOf(c.family) + " (" +
                       std::to_string(c.numExperts) + ")");
}

// MoE++ (configuration_moe_plus_plus.py) writes num_experts as a list with one count per expert
// group; the model builds every MoE layer from element 0. A plain integer is accepted as well.
Result<uint32_t> moePlusPlusExperts(const json& config, const std::string& path) {
  auto it = config.find("num_experts");
  if (it == config.end()) return makeError(path + ": key 'num_experts' missing");
  const json& v = it->is_array() && !it->empty() ? it->front() : *it;
  if (!isU32AtLeast(v, 1)) {
    return makeError(path + ": key 'num_experts' must be a positive integer or a list starting " +
                     "with one (got " + it->dump() + ")");
  }
  const uint32_t n = static_cast<uint32_t>(v.get<uint64_t>());
  if (n <= kMoePlusPlusZeroComputeExperts) {
    return makeError(path + ": key 'num_experts' is " + std::to_string(n) +
                     ": MoE++ needs at least 5 experts (at least one FFN expert plus the 4 " +
                     "zero-computation experts)");
  }
  return n;
}

Status parseMoePlusPlus(const json& config, const std::string& path, ModelConfig& c) {
  if (Status s = readPositiveFields(config, path,
                                    {{"hidden_size", &c.hiddenSize},
                                     {"intermediate_size", &c.intermediateSize},
                                     {"num_hidden_layers", &c.numLayers}});
      !s)
    return s;
  if (Status s = assign(c.numExperts, moePlusPlusExperts(config, path)); !s) return s;
  // The reference hard-codes top-2 (MOE_TOP_K); a config asking for anything else is not MoE++.
  if (Status s = assign(c.topK, optionalU32(config, path, "num_experts_per_tok", 2, 1)); !s)
    return s;
  if (c.topK != 2) {
    return Status::error(path + ": key 'num_experts_per_tok' is " + std::to_string(c.topK) +
                         ": MoE++ routes every token to exactly 2 experts (MOE_TOP_K)");
  }
  uint32_t interval = 1;
  bool twoLayerGate = true;
  if (Status s = assign(interval, optionalU32(config, path, "moe_expert_interval", 1, 1)); !s)
    return s;
  if (Status s = assign(twoLayerGate, optionalBool(config, path, "moe_2layer_gate", true)); !s)
    return s;
  for (auto [key, dest] : {std::pair{"moe_use_mixtral_gating", &c.moeMixtralGating},
                           std::pair{"moe_use_logits_norm", &c.moeLogitsNorm},
                           std::pair{"moe_feature_no_mul_topk", &c.moeFeatureNoMulTopk}}) {
    if (Status s = assign(*dest, optionalBool(config, path, key, false)); !s) return s;
  }
  if (Status s =
          assign(c.moeGateNormStd, optionalPositiveFloat(config, path, "moe_gate_norm_std", 1.0f));
      !s)
    return s;
  c.gateKind = twoLayerGate ? GateKind::kTwoLayerTanh : GateKind::kLinear;
  c.gatingResidual = true;  // every MoE++ gate has its gate_map
  c.normTopkProb = true;
  // MoE++ decoder layer: sparse iff moe_expert_interval == 1 or (layer + 1) % interval == 0.
  for (uint32_t l = 0; l < c.numLayers; ++l) {
    if (interval == 1 || (l + 1) % interval == 0) c.moeLayers.push_back(l);
  }
  return Status::ok();
}

// Yuan 2.0-M32 (configuration_yuan.py): the MoE settings live in the moe_config object.
Status parseYuan(const json& config, const std::string& path, ModelConfig& c) {
  if (Status s = readPositiveFields(
          config, path, {{"hidden_size", &c.hiddenSize}, {"num_hidden_layers", &c.numLayers}});
      !s)
    return s;
  bool useMoe = false;
  if (Status s = assign(useMoe, optionalBool(config, path, "use_moe", false)); !s) return s;
  if (!useMoe) {
    return Status::error(path + ": key 'use_moe' is false or missing: this yuan model is a dense " +
                         "model, not a MoE model");
  }
  auto mc = config.find("moe_config");
  if (mc == config.end()) return Status::error(path + ": key 'moe_config' missing");
  if (!mc->is_object()) {
    return Status::error(path + ": key 'moe_config' must be a JSON object (got " + mc->dump() +
                         ")");
  }
  if (Status s = readPositiveFields(*mc, path,
                                    {{"moe_config.moe_num_experts", &c.numExperts},
                                     {"moe_config.moe_top_k", &c.topK},
                                     {"moe_config.ffn_hidden_size", &c.intermediateSize}});
      !s)
    return s;
  if (Status s = checkTopK(path, c, "moe_config.moe_top_k"); !s) return s;
  auto rt = mc->find("router_type");
  if (rt == mc->end() || *rt != "attn_router") {
    return Status::error(path + ": key 'moe_config.router_type' must be \"attn_router\" (got " +
                         (rt == mc->end() ? std::string("nothing") : rt->dump()) +
                         "): only Yuan's attention router is supported");
  }
  c.gateKind = GateKind::kAttention;
  c.normTopkProb = true;
  for (uint32_t l = 0; l < c.numLayers; ++l) c.moeLayers.push_back(l);
  return Status::ok();
}

// Reads the fields common to all families plus the family's own; field names and defaults follow
// each family's HuggingFace configuration_*.py and the MoE-layer rule in its modeling_*.py.
Status parseFamilyFields(const json& config, const std::string& path, ModelConfig& c) {
  const ModelFamily f = c.family;
  if (f == ModelFamily::kMoePlusPlus) return parseMoePlusPlus(config, path, c);
  if (f == ModelFamily::kYuan) return parseYuan(config, path, c);
  const bool qwen = isQwenFamily(f);
  const bool deepseek = isDeepseekFamily(f);
  // Mixtral and OLMoE name a routed expert's width intermediate_size; Qwen and DeepSeek use
  // intermediate_size for their dense layers and moe_intermediate_size for the experts.
  const char* interKey = (qwen || deepseek) ? "moe_intermediate_size" : "intermediate_size";
  if (Status s = readPositiveFields(config, path,
                                    {{"hidden_size", &c.hiddenSize},
                                     {interKey, &c.intermediateSize},
                                     {expertsKeyIn(config, f), &c.numExperts},
                                     {"num_experts_per_tok", &c.topK},
                                     {"num_hidden_layers", &c.numLayers}});
      !s)
    return s;
  if (Status s = checkTopK(path, c, "num_experts_per_tok"); !s) return s;

  if (f == ModelFamily::kMixtral) {
    c.normTopkProb = true;  // MixtralSparseMoeBlock always renormalizes; there is no key
    for (uint32_t l = 0; l < c.numLayers; ++l) c.moeLayers.push_back(l);
  } else if (f == ModelFamily::kOlmoe) {
    if (Status s = assign(c.normTopkProb, optionalBool(config, path, "norm_topk_prob", false)); !s)
      return s;
    for (uint32_t l = 0; l < c.numLayers; ++l) c.moeLayers.push_back(l);
  } else if (qwen) {
    if (Status s = assign(c.normTopkProb, optionalBool(config, path, "norm_topk_prob", false)); !s)
      return s;
    if (f == ModelFamily::kQwen2Moe) {
      if (Status s = assign(c.sharedIntermediateSize,
                            optionalU32(config, path, "shared_expert_intermediate_size", 0, 0));
          !s)
        return s;
      // Qwen2MoeSparseMoeBlock always pairs the shared expert with its sigmoid gate.
      c.sharedExpertGated = c.sharedIntermediateSize > 0;
    }
    uint32_t step = 1;
    std::vector<uint32_t> mlpOnly;
    if (Status s = assign(step, optionalU32(config, path, "decoder_sparse_step", 1, 1)); !s)
      return s;
    if (Status s = assign(mlpOnly, optionalLayerList(config, path, "mlp_only_layers")); !s)
      return s;
    // Qwen2MoeDecoderLayer: sparse iff not in mlp_only_layers and (layer + 1) % step == 0.
    for (uint32_t l = 0; l < c.numLayers; ++l) {
      if (std::find(mlpOnly.begin(), mlpOnly.end(), l) == mlpOnly.end() && (l + 1) % step == 0) {
        c.moeLayers.push_back(l);
      }
    }
  } else {  // DeepSeek-V2/V3
    const bool v3 = f == ModelFamily::kDeepseekV3;
    uint32_t nShared = 0, firstDense = 0, freq = 1;
    if (Status s = assign(nShared, optionalU32(config, path, "n_shared_experts", 0, 0)); !s)
      return s;
    const uint64_t sharedWidth = uint64_t{nShared} * c.intermediateSize;
    if (sharedWidth > std::numeric_limits<uint32_t>::max()) {
      return Status::error(path + ": n_shared_experts × moe_intermediate_size is too large");
    }
    c.sharedIntermediateSize = static_cast<uint32_t>(sharedWidth);
    c.sharedExpertGated = false;
    if (Status s = assign(firstDense, optionalU32(config, path, "first_k_dense_replace", 0, 0)); !s)
      return s;
    if (Status s = assign(freq, optionalU32(config, path, "moe_layer_freq", 1, 1)); !s) return s;
    if (Status s = assign(c.nGroup, optionalU32(config, path, "n_group", 1, 1)); !s) return s;
    if (Status s = assign(c.topkGroup, optionalU32(config, path, "topk_group", 1, 1)); !s) return s;
    if (Status s = assign(c.routedScalingFactor,
                          optionalPositiveFloat(config, path, "routed_scaling_factor", 1.0f));
        !s)
      return s;
    if (Status s = assign(c.scoringFunc,
                          optionalChoice(config, path, "scoring_func", v3 ? "sigmoid" : "softmax",
                                         {"softmax", "sigmoid"}));
        !s)
      return s;
    if (Status s = assign(c.topkMethod,
                          optionalChoice(config, path, "topk_method", v3 ? "noaux_tc" : "greedy",
                                         {"greedy", "group_limited_greedy", "noaux_tc"}));
        !s)
      return s;
    if (Status s = assign(c.normTopkProb, optionalBool(config, path, "norm_topk_prob", v3)); !s)
      return s;
    c.hasScoreCorrectionBias = v3;
    if (c.numExperts % c.nGroup != 0) {
      return Status::error(path + ": n_group " + std::to_string(c.nGroup) +
                           " must divide n_routed_experts (" + std::to_string(c.numExperts) + ")");
    }
    if (c.topkGroup > c.nGroup) {
      return Status::error(path + ": topk_group " + std::to_string(c.topkGroup) +
                           " must be at most n_group (" + std::to_string(c.nGroup) + ")");
    }
    if (c.topkMethod != "greedy") {
      // Group-limited selection picks k experts from topk_group groups only.
      const uint32_t reachable = c.topkGroup * (c.numExperts / c.nGroup);
      if (c.topK > reachable) {
        return Status::error(path + ": num_experts_per_tok " + std::to_string(c.topK) +
                             " exceeds the " + std::to_string(reachable) +
                             " experts in topk_group (" + std::to_string(c.topkGroup) +
                             ") of n_group (" + std::to_string(c.nGroup) + ") groups");
      }
    }
    if (c.topkMethod == "noaux_tc" && c.numExperts / c.nGroup < 2) {
      // V3 scores a group by the sum of its top-2 experts, so a group needs two.
      return Status::error(path +
                           ": topk_method noaux_tc needs at least 2 experts per group "
                           "(n_routed_experts " +
                           std::to_string(c.numExperts) + " / n_group " + std::to_string(c.nGroup) +
                           ")");
    }
    // DeepseekV2DecoderLayer: sparse iff layer >= first_k_dense_replace and
    // layer % moe_layer_freq == 0.
    for (uint32_t l = firstDense; l < c.numLayers; ++l) {
      if (l % freq == 0) c.moeLayers.push_back(l);
    }
  }
  return Status::ok();
}

Result<ModelConfig> parseConfig(const std::string& path) {
  auto parsed = readJsonFile(path);
  if (!parsed) return makeError(parsed.status());
  const json& config = parsed.value();
  if (!config.is_object()) return makeError(path + ": top level is not a JSON object");

  ModelConfig c;
  auto mt = config.find("model_type");
  if (mt == config.end()) return makeError(path + ": key 'model_type' missing");
  if (!mt->is_string()) return makeError(path + ": key 'model_type' must be a string");
  c.modelType = mt->get<std::string>();
  static const std::map<std::string, ModelFamily, std::less<>> kFamilies = {
      {"mixtral", ModelFamily::kMixtral},
      {"qwen2_moe", ModelFamily::kQwen2Moe},
      {"qwen3_moe", ModelFamily::kQwen3Moe},
      {"olmoe", ModelFamily::kOlmoe},
      {"deepseek_v2", ModelFamily::kDeepseekV2},
      {"deepseek_v3", ModelFamily::kDeepseekV3},
      {"MoE++", ModelFamily::kMoePlusPlus},
      {"moe_plus_plus", ModelFamily::kMoePlusPlus},
      {"yuan", ModelFamily::kYuan}};
  auto fam = kFamilies.find(c.modelType);
  if (fam == kFamilies.end()) {
    return makeError(path + ": model_type '" + c.modelType +
                     "' is not supported (supported: " + kSupportedModelTypes + ")");
  }
  c.family = fam->second;
  if (Status s = parseFamilyFields(config, path, c); !s) return makeError(s);
  if (c.moeLayers.empty()) {
    return makeError(path + ": no MoE layers among the " + std::to_string(c.numLayers) +
                     " layers (check decoder_sparse_step / mlp_only_layers / "
                     "first_k_dense_replace / moe_layer_freq / moe_expert_interval)");
  }
  // MoE++'s zero-computation experts (N > 4 checked above) are not FFNs on shards.
  c.numFfnExperts =
      c.numExperts - (c.family == ModelFamily::kMoePlusPlus ? kMoePlusPlusZeroComputeExperts : 0);
  return c;
}

// Shard names come from a downloaded file; keep them inside the checkpoint directory.
bool isSafeShardName(const std::string& name) {
  if (name.empty()) return false;
  fs::path p(name);
  if (p.is_absolute()) return false;
  for (const auto& part : p) {
    if (part == "..") return false;
  }
  return true;
}

// The MoE block's module path: Mixtral's MixtralSparseMoeBlock sits at block_sparse_moe, MoE++'s
// at mlp.moe, the other families' sparse blocks replace the decoder layer's mlp.
std::string moePrefix(const ModelConfig& c, uint32_t layer) {
  const char* block = c.family == ModelFamily::kMixtral       ? ".block_sparse_moe."
                      : c.family == ModelFamily::kMoePlusPlus ? ".mlp.moe."
                                                              : ".mlp.";
  return "model.layers." + std::to_string(layer) + block;
}

Status checkMoeLayer(const ModelConfig& config, const std::string& dir, uint32_t layer) {
  const auto& layers = config.moeLayers;
  if (std::find(layers.begin(), layers.end(), layer) != layers.end()) return Status::ok();
  if (layer >= config.numLayers) {
    return Status::error("layer " + std::to_string(layer) + " is not a MoE layer of " + dir + " (" +
                         std::to_string(layers.size()) + " MoE layers of " +
                         std::to_string(config.numLayers) + ")");
  }
  std::string list;
  for (uint32_t l : layers) list += (list.empty() ? "" : ", ") + std::to_string(l);
  return Status::error(dir + ": layer " + std::to_string(layer) +
                       " is a dense layer of this model (MoE layers: " + list + ")");
}

// For tensors only some models have: `lacking` says what this model has instead ("has no gate_map
// (...)"), then the layer must be a MoE layer.
Status checkHas(const ModelConfig& config, const std::string& dir, uint32_t layer, bool has,
                const std::string& lacking) {
  if (!has) return Status::error(dir + ": model_type '" + config.modelType + "' " + lacking);
  return checkMoeLayer(config, dir, layer);
}

const char* expertKindName(ExpertKind k) {
  switch (k) {
    case ExpertKind::kFfn:
      return "an FFN";
    case ExpertKind::kConstant:
      return "a constant";
    case ExpertKind::kCopy:
      return "the copy";
    case ExpertKind::kZero:
      return "the zero";
  }
  return "?";
}

Status checkExpertId(const ModelConfig& config, const std::string& dir, uint32_t expert) {
  if (expert < config.numExperts) return Status::ok();
  return Status::error("expert " + std::to_string(expert) + " out of range: " + dir + " has " +
                       std::to_string(config.numExperts) + " experts (" +
                       expertsKeyOf(config.family) + ")");
}

// MoE++ and Yuan store an expert's gate and up projections as one [2I, H] matrix whose output the
// reference chunks in two: rows [0, I) go through silu (w1), rows [I, 2I) are the linear half (w3).
Result<ExpertTensors> loadFusedFfn(const Checkpoint& ckpt, const std::string& fusedName,
                                   const std::string& downName) {
  const uint64_t h = ckpt.config().hiddenSize;
  const uint64_t inter = ckpt.config().intermediateSize;
  auto fused = ckpt.loadF32(fusedName, {2 * inter, h});
  if (!fused) return makeError(fused.status());
  auto down = ckpt.loadF32(downName, {h, inter});
  if (!down) return makeError(down.status());
  const std::vector<float>& both = fused.value();
  const auto half = both.begin() + static_cast<std::ptrdiff_t>(inter * h);
  ExpertTensors t;
  t.w1.assign(both.begin(), half);
  t.w3.assign(half, both.end());
  t.w2 = std::move(down).value();
  return t;
}

// Loads gate_proj/up_proj/down_proj (or Mixtral's w1/w3/w2) under `prefix` with width `inter`.
Result<ExpertTensors> loadFfn(const Checkpoint& ckpt, const std::string& prefix, uint64_t inter) {
  const bool mixtral = ckpt.config().family == ModelFamily::kMixtral;
  const uint64_t h = ckpt.config().hiddenSize;
  ExpertTensors t;
  for (auto [suffix, dest, shape] : {std::tuple{mixtral ? "w1.weight" : "gate_proj.weight", &t.w1,
                                                std::vector<uint64_t>{inter, h}},
                                     std::tuple{mixtral ? "w3.weight" : "up_proj.weight", &t.w3,
                                                std::vector<uint64_t>{inter, h}},
                                     std::tuple{mixtral ? "w2.weight" : "down_proj.weight", &t.w2,
                                                std::vector<uint64_t>{h, inter}}}) {
    auto loaded = ckpt.loadF32(prefix + suffix, shape);
    if (!loaded) return makeError(loaded.status());
    *dest = std::move(loaded).value();
  }
  return t;
}

}  // namespace

Result<std::unique_ptr<Checkpoint>> Checkpoint::open(const std::string& dir) {
  const fs::path root(dir);
  auto config = parseConfig((root / "config.json").string());
  if (!config) return makeError(config.status());

  // The private constructor rules out make_unique; the pointer is owned from the first moment.
  std::unique_ptr<Checkpoint> ckpt(new Checkpoint());
  ckpt->dir_ = dir;
  ckpt->config_ = std::move(config).value();

  const std::string indexPath = (root / "model.safetensors.index.json").string();
  const std::string singlePath = (root / "model.safetensors").string();
  std::error_code ec;
  if (fs::exists(indexPath, ec)) {
    auto parsed = readJsonFile(indexPath);
    if (!parsed) return makeError(parsed.status());
    const json& index = parsed.value();
    auto wm = index.is_object() ? index.find("weight_map") : index.end();
    if (!index.is_object() || wm == index.end() || !wm->is_object()) {
      return makeError(indexPath + ": 'weight_map' missing or not a JSON object");
    }
    // Each shard is opened (and mapped) once however many tensors it holds.
    std::map<std::string, const SafetensorsFile*> opened;
    for (const auto& [tensor, fileName] : wm->items()) {
      if (!fileName.is_string() || !isSafeShardName(fileName.get<std::string>())) {
        return makeError(indexPath + ": weight_map entry for " + tensor +
                         " must be a file name inside the checkpoint directory (got " +
                         fileName.dump() + ")");
      }
      const std::string& name = fileName.get_ref<const std::string&>();
      auto it = opened.find(name);
      if (it == opened.end()) {
        auto file = SafetensorsFile::open((root / name).string());
        if (!file) return makeError(file.status());
        ckpt->files_.push_back(std::move(file).value());
        it = opened.emplace(name, ckpt->files_.back().get()).first;
      }
      if (!it->second->find(tensor)) {
        return makeError(indexPath + ": tensor " + tensor +
                         " is listed in weight_map but missing from " + it->second->path());
      }
      ckpt->tensorFile_.emplace(tensor, it->second);
    }
  } else if (fs::exists(singlePath, ec)) {
    auto file = SafetensorsFile::open(singlePath);
    if (!file) return makeError(file.status());
    ckpt->files_.push_back(std::move(file).value());
    for (const TensorInfo& t : ckpt->files_.back()->tensors()) {
      ckpt->tensorFile_.emplace(t.name, ckpt->files_.back().get());
    }
  } else {
    return makeError(dir +
                     ": no weights: neither model.safetensors nor model.safetensors.index.json");
  }
  return ckpt;
}

DType Checkpoint::expertsDType() const {
  for (const auto& file : files_) {
    for (const TensorInfo& t : file->tensors()) {
      if (t.name.find(".experts.") != std::string::npos && !t.name.ends_with("_scale_inv")) {
        return t.dtype;
      }
    }
  }
  return DType::kF32;
}

Result<std::vector<float>> Checkpoint::loadF32(const std::string& name,
                                               const std::vector<uint64_t>& expectedShape) const {
  auto it = tensorFile_.find(name);
  if (it == tensorFile_.end()) return makeError("tensor " + name + " missing from " + dir_);
  const SafetensorsFile& file = *it->second;
  const TensorInfo* info = file.find(name);
  if (!info) return makeError("tensor " + name + " missing from " + file.path());  // not reached
  if (info->shape != expectedShape) {
    return makeError("tensor " + name + ": shape " + formatShape(expectedShape) +
                     " expected from config.json, file " + file.path() + " has " +
                     formatShape(info->shape));
  }
  std::vector<float> out(info->numel());
  convertToF32(info->dtype, file.bytes(*info), out);
  if (info->dtype == DType::kF8E4M3 || info->dtype == DType::kF8E5M2) {
    if (Status s = applyBlockScales(name, *info, out); !s) return makeError(s);
  }
  return out;
}

// DeepSeek-V3 FP8 weights: `<name>_scale_inv` [ceil(R/128), ceil(C/128)] holds one factor per
// 128×128 block of the [R, C] weight; the value is fp8 × factor. An FP8 tensor without one is
// taken as unscaled.
Status Checkpoint::applyBlockScales(const std::string& name, const TensorInfo& info,
                                    std::vector<float>& values) const {
  constexpr uint64_t kBlock = 128;
  const std::string scaleName = name + "_scale_inv";
  if (tensorFile_.find(scaleName) == tensorFile_.end()) return Status::ok();
  if (info.shape.size() != 2) {
    return Status::error("tensor " + name + ": " + std::string(dtypeName(info.dtype)) +
                         " with block scales must be 2-D, has shape " + formatShape(info.shape));
  }
  const uint64_t rows = info.shape[0], cols = info.shape[1];
  const uint64_t br = (rows + kBlock - 1) / kBlock, bc = (cols + kBlock - 1) / kBlock;
  auto scale = loadF32(scaleName, {br, bc});
  if (!scale) return Status::error(scale.error() + " (the 128x128 block scales of " + name + ")");
  const std::vector<float>& s = scale.value();
  for (uint64_t r = 0; r < rows; ++r) {
    for (uint64_t c = 0; c < cols; ++c) values[r * cols + c] *= s[(r / kBlock) * bc + c / kBlock];
  }
  return Status::ok();
}

Result<std::vector<float>> Checkpoint::gateWeight(uint32_t layer) const {
  const GateKind kind = config_.gateKind;
  if (Status s = checkHas(config_, dir_, layer, kind == GateKind::kLinear,
                          kind == GateKind::kAttention
                              ? "has an attention router, not a linear gate"
                              : "has a two-layer gate, not a linear gate (moe_2layer_gate)");
      !s)
    return makeError(s);
  // MoE++'s single-layer gate is the nn.Linear "wg" inside its gate module.
  return loadF32(
      moePrefix(config_, layer) +
          (config_.family == ModelFamily::kMoePlusPlus ? "gate.wg.weight" : "gate.weight"),
      {config_.numExperts, config_.hiddenSize});
}

Result<ExpertTensors> Checkpoint::expert(uint32_t layer, uint32_t expert) const {
  if (Status s = checkMoeLayer(config_, dir_, layer); !s) return makeError(s);
  if (Status s = checkExpertId(config_, dir_, expert); !s) return makeError(s);
  const ExpertKind kind = config_.expertKind(expert);
  if (kind != ExpertKind::kFfn) {
    return makeError("expert " + std::to_string(expert) + " of " + dir_ + " is " +
                     expertKindName(kind) +
                     " expert, a MoE++ zero-computation expert, not an FFN " +
                     "(FFN experts are 0.." + std::to_string(config_.numFfnExperts - 1) + ")");
  }
  const std::string id = std::to_string(expert);
  const std::string prefix = moePrefix(config_, layer);
  switch (config_.family) {
    case ModelFamily::kMoePlusPlus:
      return loadFusedFfn(*this, prefix + "experts.experts." + id + ".up_proj.weight",
                          prefix + "experts.experts." + id + ".down_proj.weight");
    case ModelFamily::kYuan:
      return loadFusedFfn(*this, prefix + "experts." + id + ".w1.weight",
                          prefix + "experts." + id + ".w2.weight");
    default:
      return loadFfn(*this, prefix + "experts." + id + ".", config_.intermediateSize);
  }
}

Result<TwoLayerGateTensors> Checkpoint::twoLayerGate(uint32_t layer) const {
  if (Status s = checkHas(config_, dir_, layer, config_.gateKind == GateKind::kTwoLayerTanh,
                          config_.family == ModelFamily::kMoePlusPlus
                              ? "has no two-layer gate (moe_2layer_gate is false)"
                              : "has no two-layer gate (only MoE++ has one)");
      !s)
    return makeError(s);
  const uint64_t n = config_.numExperts;
  const std::string prefix = moePrefix(config_, layer) + "gate.wg.";
  // The reference's wg is nn.Sequential(Linear(H, 8N), Tanh(), Linear(8N, N)): modules 0 and 2.
  auto w1 = loadF32(prefix + "0.weight", {8 * n, config_.hiddenSize});
  if (!w1) return makeError(w1.status());
  auto w2 = loadF32(prefix + "2.weight", {n, 8 * n});
  if (!w2) return makeError(w2.status());
  return TwoLayerGateTensors{std::move(w1).value(), std::move(w2).value()};
}

Result<std::vector<float>> Checkpoint::gateResidualMap(uint32_t layer) const {
  if (Status s = checkHas(config_, dir_, layer, config_.gatingResidual,
                          "has no gate.gate_map (only MoE++ has gating residuals)");
      !s)
    return makeError(s);
  return loadF32(moePrefix(config_, layer) + "gate.gate_map.weight",
                 {config_.numExperts, config_.numExperts});
}

Result<ConstantExpertTensors> Checkpoint::constantExpert(uint32_t layer, uint32_t expert) const {
  const bool moepp = config_.family == ModelFamily::kMoePlusPlus;
  if (Status s = checkHas(config_, dir_, layer, moepp, "has no constant experts (only MoE++ does)");
      !s)
    return makeError(s);
  if (Status s = checkExpertId(config_, dir_, expert); !s) return makeError(s);
  const ExpertKind kind = config_.expertKind(expert);
  if (kind != ExpertKind::kConstant) {
    const uint32_t first = config_.numFfnExperts;
    return makeError("expert " + std::to_string(expert) + " of " + dir_ + " is " +
                     expertKindName(kind) + " expert, not a constant expert (those are " +
                     std::to_string(first) + " and " + std::to_string(first + 1) + ")");
  }
  const std::string prefix =
      moePrefix(config_, layer) + "experts.experts." + std::to_string(expert) + ".";
  auto wc = loadF32(prefix + "wg.weight", {2, config_.hiddenSize});
  if (!wc) return makeError(wc.status());
  auto v = loadF32(prefix + "constant", {config_.hiddenSize});
  if (!v) return makeError(v.status());
  return ConstantExpertTensors{std::move(wc).value(), std::move(v).value()};
}

Result<std::vector<float>> Checkpoint::attentionRouter(uint32_t layer) const {
  if (Status s = checkHas(config_, dir_, layer, config_.gateKind == GateKind::kAttention,
                          "has no attention router (only yuan has one)");
      !s)
    return makeError(s);
  std::vector<float> qkv;
  qkv.reserve(uint64_t{3} * config_.numExperts * config_.hiddenSize);
  for (const char* part : {"query", "key", "value"}) {
    auto w = loadF32(moePrefix(config_, layer) + "gate." + part + ".weight",
                     {config_.numExperts, config_.hiddenSize});
    if (!w) return makeError(w.status());
    qkv.insert(qkv.end(), w.value().begin(), w.value().end());
  }
  return qkv;
}

Result<std::vector<float>> Checkpoint::noiseWeight(uint32_t layer) const {
  if (Status s = checkMoeLayer(config_, dir_, layer); !s) return makeError(s);
  return loadF32(moePrefix(config_, layer) + "w_noise.weight",
                 {config_.numExperts, config_.hiddenSize});
}

Result<ExpertTensors> Checkpoint::sharedExpert(uint32_t layer) const {
  if (Status s = checkHas(
          config_, dir_, layer, config_.sharedIntermediateSize > 0,
          std::string("has no shared expert here (") +
              (config_.family == ModelFamily::kQwen2Moe ? "shared_expert_intermediate_size is 0"
               : isDeepseekFamily(config_.family)       ? "n_shared_experts is 0"
                                                        : "the family has none") +
              ")");
      !s)
    return makeError(s);
  // Qwen2-MoE has one module "shared_expert"; DeepSeek fuses its n_shared_experts into one MLP
  // named "shared_experts".
  const char* name =
      config_.family == ModelFamily::kQwen2Moe ? "shared_expert." : "shared_experts.";
  return loadFfn(*this, moePrefix(config_, layer) + name, config_.sharedIntermediateSize);
}

Result<std::vector<float>> Checkpoint::sharedExpertGate(uint32_t layer) const {
  if (Status s =
          checkHas(config_, dir_, layer, config_.sharedExpertGated,
                   "has no shared_expert_gate (only Qwen2-MoE with a shared expert gates it)");
      !s)
    return makeError(s);
  return loadF32(moePrefix(config_, layer) + "shared_expert_gate.weight", {1, config_.hiddenSize});
}

Result<std::vector<float>> Checkpoint::scoreCorrectionBias(uint32_t layer) const {
  if (Status s = checkHas(config_, dir_, layer, config_.hasScoreCorrectionBias,
                          "has no gate.e_score_correction_bias (only deepseek_v3 does)");
      !s)
    return makeError(s);
  return loadF32(moePrefix(config_, layer) + "gate.e_score_correction_bias", {config_.numExperts});
}

}  // namespace moe
