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

// A whole file as text; errors are prefixed with `path`.
Result<std::string> readTextFile(const std::string& path) {
  std::error_code ec;
  if (!fs::exists(path, ec)) return makeError(path + ": missing");
  std::ifstream in(path, std::ios::binary);
  if (!in) return makeError(path + ": cannot open: " + std::strerror(errno));
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) return makeError(path + ": read failed");
  return text.str();
}

// Reads and parses a JSON file; errors are prefixed with `path`.
Result<json> readJsonFile(const std::string& path) {
  auto text = readTextFile(path);
  if (!text) return makeError(text.code(), text.error());
  try {
    return json::parse(text.value());
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

// Keys of a nested object (Yuan's moe_config, DBRX's ffn_config) are dotted paths, so errors name
// them in full ("moe_config.moe_top_k"); HF config keys never contain dots themselves. nullptr
// when absent (or when a step on the path is not an object).
const json* findKey(const json& obj, const std::string& key) {
  const json* at = &obj;
  size_t from = 0;
  while (true) {
    const size_t dot = key.find('.', from);
    if (!at->is_object()) return nullptr;
    auto it = at->find(key.substr(from, dot == std::string::npos ? std::string::npos : dot - from));
    if (it == at->end()) return nullptr;
    at = &*it;
    if (dot == std::string::npos) return at;
    from = dot + 1;
  }
}

// config.json integers must be positive and fit the uint32 fields of ModelConfig.
Result<uint32_t> positiveU32(const json& config, const std::string& path, const std::string& key) {
  const json* it = findKey(config, key);
  if (!it) return makeError(path + ": key '" + key + "' missing");
  if (!isU32AtLeast(*it, 1)) {
    return makeError(path + ": key '" + key + "' must be a positive integer (got " + it->dump() +
                     ")");
  }
  return static_cast<uint32_t>(it->get<uint64_t>());
}

// Optional keys: HF configs write unset optionals as null, which means "use the default" just as
// an absent key does. `minValue` is 0 for counts that may be zero (e.g. n_shared_experts).
Result<uint32_t> optionalU32(const json& config, const std::string& path, const std::string& key,
                             uint32_t fallback, uint64_t minValue) {
  const json* it = findKey(config, key);
  if (!it || it->is_null()) return fallback;
  if (!isU32AtLeast(*it, minValue)) {
    return makeError(path + ": key '" + key + "' must be a " +
                     (minValue > 0 ? "positive" : "non-negative") + " integer (got " + it->dump() +
                     ")");
  }
  return static_cast<uint32_t>(it->get<uint64_t>());
}

Result<bool> optionalBool(const json& config, const std::string& path, const std::string& key,
                          bool fallback) {
  const json* it = findKey(config, key);
  if (!it || it->is_null()) return fallback;
  if (!it->is_boolean()) {
    return makeError(path + ": key '" + key + "' must be true or false (got " + it->dump() + ")");
  }
  return it->get<bool>();
}

Result<std::string> optionalChoice(const json& config, const std::string& path,
                                   const std::string& key, const std::string& fallback,
                                   std::initializer_list<const char*> allowed) {
  const json* it = findKey(config, key);
  if (!it || it->is_null()) return fallback;
  std::string joined;
  for (const char* a : allowed) {
    if (it->is_string() && it->get_ref<const std::string&>() == a) return std::string(a);
    joined += (joined.empty() ? "" : ", ") + std::string(a);
  }
  return makeError(path + ": key '" + key + "' must be one of " + joined + " (got " + it->dump() +
                   ")");
}

Result<float> optionalPositiveFloat(const json& config, const std::string& path,
                                    const std::string& key, float fallback) {
  const json* it = findKey(config, key);
  if (!it || it->is_null()) return fallback;
  // Finite as a float too: 1e300 is a valid JSON double but would become +inf here.
  if (!it->is_number() || !(it->get<double>() > 0.0) ||
      !(it->get<double>() <= std::numeric_limits<float>::max())) {
    return makeError(path + ": key '" + key + "' must be a positive number (got " + it->dump() +
                     ")");
  }
  return static_cast<float>(it->get<double>());
}

Result<std::vector<uint32_t>> optionalLayerList(const json& config, const std::string& path,
                                                const std::string& key) {
  const json* it = findKey(config, key);
  if (!it || it->is_null()) return std::vector<uint32_t>{};
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

// Stores a parsed value or passes its error on, keeping the per-key reads below one line each.
template <typename T>
Status assign(T& dest, Result<T> r) {
  if (!r) return r.status();
  dest = std::move(r).value();
  return Status::ok();
}

// The value of the first of `keys` the config has (null counts as absent), nullptr when none.
// Two aliases present with different values contradict each other: an error naming both.
Result<const json*> aliased(const json& config, const std::string& path, const FamilySpec& f,
                            const std::vector<std::string>& keys) {
  const json* found = nullptr;
  std::string foundKey;
  for (const std::string& k : keys) {
    const json* v = findKey(config, k);
    if (!v || v->is_null()) continue;
    if (!found) {
      found = v;
      foundKey = k;
    } else if (*v != *found) {
      return makeError(path + ": keys '" + foundKey + "' (" + found->dump() + ") and '" + k +
                       "' (" + v->dump() + ") contradict each other (" + f.name +
                       " reads them as one quantity)");
    }
  }
  return found;
}

// "(Mixtral)" or "(DeepSeek-V3; also read as 'num_local_experts', 'num_experts')": which family
// wanted the key, and its aliases.
std::string keyContext(const FamilySpec& f, const std::vector<std::string>& keys) {
  std::string out = "(" + f.name;
  for (size_t i = 1; i < keys.size(); ++i) {
    out += (i == 1 ? "; also read as '" : ", '") + keys[i] + "'";
  }
  return out + ")";
}

// A required positive integer under any of its aliases; `keyUsed` receives the one read.
Result<uint32_t> requiredU32(const json& config, const std::string& path, const FamilySpec& f,
                             const std::vector<std::string>& keys, std::string* keyUsed = nullptr) {
  auto v = aliased(config, path, f, keys);
  if (!v) return makeError(v.status());
  if (!v.value()) {
    return makeError(path + ": key '" + keys.front() + "' missing " + keyContext(f, keys));
  }
  for (const std::string& k : keys) {
    if (findKey(config, k) == v.value()) {
      if (keyUsed) *keyUsed = k;
      return positiveU32(config, path, k);
    }
  }
  return makeError(path + ": internal: alias lookup lost its key");  // not reached
}

// The first of `keys` the config sets (null counts as absent), or keys.front() when none does, so
// an optional reader of the result falls back to its default; contradicting aliases are an error.
Result<std::string> optionalAlias(const json& config, const std::string& path, const FamilySpec& f,
                                  const std::vector<std::string>& keys) {
  auto v = aliased(config, path, f, keys);
  if (!v) return makeError(v.status());
  for (const std::string& k : keys) {
    if (v.value() && findKey(config, k) == v.value()) return k;
  }
  return keys.front();
}

Status checkTopK(const std::string& path, const ModelConfig& c, const std::string& topKKey,
                 const std::string& expertsKey) {
  if (c.topK >= 1 && c.topK <= c.numExperts) return Status::ok();
  return Status::error(path + ": " + topKKey + " " + std::to_string(c.topK) +
                       " must be between 1 and " + expertsKey + " (" +
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
  for (auto [key, dest] : {std::pair{"hidden_size", &c.hiddenSize},
                           std::pair{"intermediate_size", &c.intermediateSize},
                           std::pair{"num_hidden_layers", &c.numLayers}}) {
    if (Status s = assign(*dest, positiveU32(config, path, key)); !s) return s;
  }
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
  c.routing = moePlusPlusRecipe(c);
  // MoE++ decoder layer: sparse iff moe_expert_interval == 1 or (layer + 1) % interval == 0.
  for (uint32_t l = 0; l < c.numLayers; ++l) {
    if (interval == 1 || (l + 1) % interval == 0) c.moeLayers.push_back(l);
  }
  return Status::ok();
}

// Yuan 2.0-M32 (configuration_yuan.py): the MoE settings live in the moe_config object.
Status parseYuan(const json& config, const std::string& path, ModelConfig& c) {
  for (auto [key, dest] :
       {std::pair{"hidden_size", &c.hiddenSize}, std::pair{"num_hidden_layers", &c.numLayers}}) {
    if (Status s = assign(*dest, positiveU32(config, path, key)); !s) return s;
  }
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
  for (auto [key, dest] : {std::pair{"moe_config.moe_num_experts", &c.numExperts},
                           std::pair{"moe_config.moe_top_k", &c.topK},
                           std::pair{"moe_config.ffn_hidden_size", &c.intermediateSize}}) {
    if (Status s = assign(*dest, positiveU32(config, path, key)); !s) return s;
  }
  if (Status s = checkTopK(path, c, "moe_config.moe_top_k", "moe_config.moe_num_experts"); !s)
    return s;
  auto rt = mc->find("router_type");
  if (rt == mc->end() || *rt != "attn_router") {
    return Status::error(path + ": key 'moe_config.router_type' must be \"attn_router\" (got " +
                         (rt == mc->end() ? std::string("nothing") : rt->dump()) +
                         "): only Yuan's attention router is supported");
  }
  c.gateKind = GateKind::kAttention;
  c.routing = softmaxTopkRecipe(true);  // YuanSparseMoeBlock always divides by the sum
  for (uint32_t l = 0; l < c.numLayers; ++l) c.moeLayers.push_back(l);
  return Status::ok();
}

// ERNIE's moe_layer_end_index: a layer index, or -1 for the last layer.
Result<int64_t> optionalLayerIndex(const json& config, const std::string& path,
                                   const std::string& key, int64_t fallback) {
  const json* it = findKey(config, key);
  if (!it || it->is_null()) return fallback;
  if (!it->is_number_integer() || it->get<int64_t>() < -1) {
    return makeError(path + ": key '" + key + "' must be a layer index or -1 (got " + it->dump() +
                     ")");
  }
  return it->get<int64_t>();
}

// mlp_layer_types: "dense" or "sparse" per layer; absent (or null), layers [firstSparse, L) are
// sparse, as the family's config class fills it in.
Status readLayerTypes(const json& config, const std::string& path, const FamilySpec& f,
                      uint32_t firstSparse, ModelConfig& c) {
  const uint32_t L = c.numLayers;
  const json* types = findKey(config, "mlp_layer_types");
  if (!types || types->is_null()) {
    for (uint32_t l = firstSparse; l < L; ++l) c.moeLayers.push_back(l);
    return Status::ok();
  }
  if (!types->is_array() || types->size() != L) {
    return Status::error(path + ": key 'mlp_layer_types' must list \"dense\" or \"sparse\" for " +
                         "each of the " + std::to_string(L) + " layers (" + f.name + "; got " +
                         types->dump() + ")");
  }
  for (uint32_t l = 0; l < L; ++l) {
    const json& v = (*types)[l];
    if (v != "dense" && v != "sparse") {
      return Status::error(path + ": key 'mlp_layer_types' entry " + std::to_string(l) +
                           " must be \"dense\" or \"sparse\" (" + f.name + "; got " + v.dump() +
                           ")");
    }
    if (v == "sparse") c.moeLayers.push_back(l);
  }
  return Status::ok();
}

// The family's MoE-layer rule (its DecoderLayer's condition for a sparse block).
Status readMoeLayers(const json& config, const std::string& path, const FamilySpec& f,
                     ModelConfig& c) {
  const uint32_t L = c.numLayers;
  switch (f.layerRule) {
    case LayerRule::kAll:
    case LayerRule::kMoePlusPlusInterval:  // parseMoePlusPlus
      for (uint32_t l = 0; l < L; ++l) c.moeLayers.push_back(l);
      break;
    case LayerRule::kSparseStep: {
      uint32_t step = 1;
      std::vector<uint32_t> mlpOnly;
      if (Status s = assign(step, optionalU32(config, path, "decoder_sparse_step", 1, 1)); !s)
        return s;
      if (Status s = assign(mlpOnly, optionalLayerList(config, path, "mlp_only_layers")); !s)
        return s;
      if (const json* v = findKey(config, "mlp_only_layers"); !v || v->is_null())
        mlpOnly = f.mlpOnlyLayersDefault;
      // Qwen2MoeDecoderLayer: sparse iff not in mlp_only_layers and (layer + 1) % step == 0.
      for (uint32_t l = 0; l < L; ++l) {
        if (std::find(mlpOnly.begin(), mlpOnly.end(), l) == mlpOnly.end() && (l + 1) % step == 0)
          c.moeLayers.push_back(l);
      }
      break;
    }
    case LayerRule::kFirstKDense: {
      uint32_t firstDense = 0, freq = 1;
      if (Status s = assign(firstDense, optionalU32(config, path, "first_k_dense_replace",
                                                    f.firstKDenseDefault, 0));
          !s)
        return s;
      if (Status s = assign(freq, optionalU32(config, path, "moe_layer_freq", 1, 1)); !s) return s;
      // DeepseekV2DecoderLayer: sparse iff layer >= first_k_dense_replace and
      // layer % moe_layer_freq == 0.
      for (uint32_t l = firstDense; l < L; ++l) {
        if (l % freq == 0) c.moeLayers.push_back(l);
      }
      break;
    }
    case LayerRule::kErnieRange: {
      uint32_t interval = 1, start = 1;
      int64_t end = -1;
      if (Status s = assign(interval, optionalU32(config, path, "moe_layer_interval", 1, 1)); !s)
        return s;
      if (Status s = assign(start, optionalU32(config, path, "moe_layer_start_index", 1, 0)); !s)
        return s;
      if (Status s = assign(end, optionalLayerIndex(config, path, "moe_layer_end_index", -1)); !s)
        return s;
      if (end == -1) end = static_cast<int64_t>(L) - 1;
      for (uint32_t l = 0; l < L; ++l) {
        if ((l + 1) % interval == 0 && l >= start && l <= end) c.moeLayers.push_back(l);
      }
      break;
    }
    case LayerRule::kPeriodOffset: {
      uint32_t period = 2, offset = 1;
      if (Status s = assign(period, optionalU32(config, path, "expert_layer_period", 2, 1)); !s)
        return s;
      if (Status s = assign(offset, optionalU32(config, path, "expert_layer_offset", 1, 0)); !s)
        return s;
      if (offset >= period) {
        return Status::error(path + ": key 'expert_layer_offset' (" + std::to_string(offset) +
                             ") must be smaller than 'expert_layer_period' (" +
                             std::to_string(period) + ") (" + f.name + ")");
      }
      // JambaConfig.layers_num_experts: num_experts where l % period == offset, else 1 (dense).
      if (c.numExperts > 1) {
        for (uint32_t l = 0; l < L; ++l) {
          if (l % period == offset) c.moeLayers.push_back(l);
        }
      }
      break;
    }
    case LayerRule::kLayerTypes: {
      // Glm4MoeLiteConfig / MiMoV2FlashConfig / HYV3Config: mlp_layer_types, default ["dense"] +
      // ["sparse"] * (L - 1); Cohere2MoeConfig: dense iff l < first_k_dense_replace (default 0).
      uint32_t dense = f.denseLayersDefault;
      if (!f.denseLayersKey.empty()) {
        if (Status s =
                assign(dense, optionalU32(config, path, f.denseLayersKey, f.denseLayersDefault, 0));
            !s)
          return s;
      }
      return readLayerTypes(config, path, f, dense, c);
    }
    case LayerRule::kLayerTypesOrAll:  // MellumConfig: ["sparse"] * L
      return readLayerTypes(config, path, f, 0, c);
    case LayerRule::kLayerTypesOrFirstKDense: {
      // DeepseekV32Config / GlmMoeDsaConfig / ExaoneMoeConfig / KimiLinearConfig: the first
      // first_k_dense_replace layers dense.
      uint32_t firstDense = 0;
      if (Status s = assign(firstDense, optionalU32(config, path, "first_k_dense_replace",
                                                    f.firstKDenseDefault, 0));
          !s)
        return s;
      return readLayerTypes(config, path, f, firstDense, c);
    }
    case LayerRule::kBlockTypes: {
      // NemotronHConfig: layers_block_type (attribute_map: layer_types), else the legacy
      // hybrid_override_pattern (M mamba, E moe, * attention, - mlp), else the default
      // [linear_attention, moe, full_attention, mlp]; legacy names mamba / attention are remapped
      // (remap_legacy_layer_types). Its length is the layer count; num_hidden_layers is ignored.
      auto given = aliased(config, path, f, {"layers_block_type", "layer_types"});
      if (!given) return given.status();
      std::vector<std::string> types;
      std::string key = "layers_block_type";
      if (given.value()) {
        if (findKey(config, key) != given.value()) key = "layer_types";
        if (!given.value()->is_array()) {
          return Status::error(path + ": key '" + key + "' must be a list of layer types (got " +
                               given.value()->dump() + ") (" + f.name + ")");
        }
        for (const json& v : *given.value()) {
          if (!v.is_string()) {
            return Status::error(path + ": key '" + key + "' entries must be strings (got " +
                                 v.dump() + ") (" + f.name + ")");
          }
          types.push_back(v.get<std::string>());
        }
      } else if (const json* p = findKey(config, "hybrid_override_pattern"); p && !p->is_null()) {
        key = "hybrid_override_pattern";
        if (!p->is_string()) {
          return Status::error(path + ": key '" + key +
                               "' must be a string of M, E, * and - (got " + p->dump() + ") (" +
                               f.name + ")");
        }
        for (char ch : p->get<std::string>()) {
          const char* t = ch == 'M'   ? "linear_attention"
                          : ch == 'E' ? "moe"
                          : ch == '*' ? "full_attention"
                          : ch == '-' ? "mlp"
                                      : nullptr;
          if (!t) {
            return Status::error(path + ": key '" + key + "' has '" + std::string(1, ch) +
                                 "'; only M, E, * and - name layer types (" + f.name + ")");
          }
          types.push_back(t);
        }
      } else {
        types = {"linear_attention", "moe", "full_attention", "mlp"};
      }
      if (types.empty()) {
        return Status::error(path + ": key '" + key + "' lists no layers (" + f.name + ")");
      }
      for (size_t l = 0; l < types.size(); ++l) {
        std::string& t = types[l];
        if (t == "mamba") t = "linear_attention";
        if (t == "attention") t = "full_attention";
        if (t != "linear_attention" && t != "full_attention" && t != "moe" && t != "mlp") {
          return Status::error(path + ": key '" + key + "' entry " + std::to_string(l) + " is \"" +
                               t + "\"; the layer types are full_attention, linear_attention, " +
                               "moe and mlp (" + f.name + ")");
        }
        if (t == "moe") c.moeLayers.push_back(static_cast<uint32_t>(l));
      }
      if (types.size() > std::numeric_limits<uint32_t>::max()) {
        return Status::error(path + ": key '" + key + "' is too long");
      }
      c.numLayers = static_cast<uint32_t>(types.size());
      break;
    }
    case LayerRule::kListOrInterleave: {
      std::vector<uint32_t> listed;
      if (Status s = assign(listed, optionalLayerList(config, path, "moe_layers")); !s) return s;
      const json* given = findKey(config, "moe_layers");
      if (given && !given->is_null()) {
        for (uint32_t l : listed) {
          if (l >= L) {
            return Status::error(path + ": key 'moe_layers' lists layer " + std::to_string(l) +
                                 " but num_hidden_layers is " + std::to_string(L));
          }
        }
        std::sort(listed.begin(), listed.end());
        listed.erase(std::unique(listed.begin(), listed.end()), listed.end());
        c.moeLayers = listed;
      } else {
        uint32_t step = 1;
        if (Status s = assign(step, optionalU32(config, path, "interleave_moe_layer_step", 1, 1));
            !s)
          return s;
        // Llama4TextConfig: list(range(step - 1, num_hidden_layers, step)).
        for (uint32_t l = step - 1; l < L; l += step) c.moeLayers.push_back(l);
      }
      break;
    }
    case LayerRule::kFirstNDense: {
      // Lfm2MoeDecoderLayer / AfmoeDecoderLayer: sparse iff layer >= num_dense_layers.
      uint32_t dense = f.denseLayersDefault;
      if (Status s =
              assign(dense, optionalU32(config, path, f.denseLayersKey, f.denseLayersDefault, 0));
          !s)
        return s;
      for (uint32_t l = dense; l < L; ++l) c.moeLayers.push_back(l);
      break;
    }
  }
  return Status::ok();
}

// DeepSeek-V2/V3-style routing keys (also GLM-4-MoE, dots1).
Status readDeepseekRouting(const json& config, const std::string& path, const FamilySpec& f,
                           ModelConfig& c) {
  // kSoftmaxGroupsRenormScaled is V3's grouped top-k on softmax scores, with fixed choices.
  const bool mistral = f.routing == RoutingPiece::kSoftmaxGroupsRenormScaled;
  const bool v3 = f.routing == RoutingPiece::kDeepseekV3 || mistral;
  uint32_t nGroup = 1, topkGroup = 1;
  float scale = 1.0f;
  std::string scoring, method, nGroupKey, topkGroupKey, normKey;
  bool norm = false;
  for (auto [keys, dest] :
       {std::pair{&f.nGroupKeys, &nGroupKey}, std::pair{&f.topkGroupKeys, &topkGroupKey},
        std::pair{&f.normKeys, &normKey}}) {
    if (Status s = assign(*dest, optionalAlias(config, path, f, *keys)); !s) return s;
  }
  if (Status s = assign(nGroup, optionalU32(config, path, nGroupKey, f.nGroupDefault, 1)); !s)
    return s;
  if (Status s = assign(topkGroup, optionalU32(config, path, topkGroupKey, f.topkGroupDefault, 1));
      !s)
    return s;
  if (Status s = assign(
          scale, optionalPositiveFloat(config, path, "routed_scaling_factor", f.scaleDefault));
      !s)
    return s;
  if (mistral) {
    // MistralLarge4TextTopkRouter has no scoring_func / topk_method / norm_topk_prob keys.
    scoring = "softmax";
    method = "noaux_tc";
    norm = true;
  } else {
    if (Status s =
            assign(scoring, optionalChoice(config, path, "scoring_func", v3 ? "sigmoid" : "softmax",
                                           {"softmax", "sigmoid"}));
        !s)
      return s;
    if (Status s =
            assign(method, optionalChoice(config, path, "topk_method", v3 ? "noaux_tc" : "greedy",
                                          {"greedy", "group_limited_greedy", "noaux_tc"}));
        !s)
      return s;
    if (Status s = assign(norm, optionalBool(config, path, normKey, f.renormalizeDefault)); !s)
      return s;
  }
  if (c.numExperts % nGroup != 0) {
    return Status::error(path + ": " + nGroupKey + " " + std::to_string(nGroup) + " must divide " +
                         f.expertsKeys.front() + " (" + std::to_string(c.numExperts) + ")");
  }
  if (topkGroup > nGroup) {
    return Status::error(path + ": " + topkGroupKey + " " + std::to_string(topkGroup) +
                         " must be at most " + nGroupKey + " (" + std::to_string(nGroup) + ")");
  }
  if (method != "greedy") {
    // Group-limited selection picks k experts from topk_group groups only.
    const uint32_t reachable = topkGroup * (c.numExperts / nGroup);
    if (c.topK > reachable) {
      return Status::error(path + ": " + f.topKKeys.front() + " " + std::to_string(c.topK) +
                           " exceeds the " + std::to_string(reachable) + " experts in " +
                           topkGroupKey + " (" + std::to_string(topkGroup) + ") of " + nGroupKey +
                           " (" + std::to_string(nGroup) + ") groups");
    }
  }
  if (method == "noaux_tc" && c.numExperts / nGroup < 2) {
    // V3 scores a group by the sum of its top-2 experts, so a group needs two.
    return Status::error(path + ": topk_method noaux_tc needs at least 2 experts per group (" +
                         f.expertsKeys.front() + " " + std::to_string(c.numExperts) + " / " +
                         nGroupKey + " " + std::to_string(nGroup) + ")");
  }
  if (!v3) {
    // DeepseekV2TopkRouter: softmax; group_limited_greedy (group max) or greedy; norm_topk_prob
    // is read (and validated) but transformers 5 does not use it.
    c.routing = deepseekV2Recipe(scale, method == "group_limited_greedy", nGroup, topkGroup);
    return Status::ok();
  }
  c.routing = deepseekV3Recipe(scoring == "sigmoid", norm, scale, nGroup, topkGroup);
  if (mistral) {
    c.routing.choiceBias = false;
    c.routing.groupMask = 0.0f;  // masked_fill(~score_mask, 0.0)
    return Status::ok();
  }
  if (method == "greedy") {
    c.routing.groups = RoutingRecipe::Groups::kNone;
  } else if (method == "group_limited_greedy") {
    c.routing.groups = RoutingRecipe::Groups::kMax;
  }
  return Status::ok();
}

// PhiMoE (PhimoeTopKRouter): sparsemixer always picks exactly 2 experts — transformers passes
// num_experts_per_tok to it but never reads it — so any other top-k would be served as something
// else than the config says: refused. router_jitter_noise (PhimoeConfig default 0.01) is the
// eval-mode mask threshold; a negative one would mask even the chosen expert (NaN weights).
Status readSparseMixer(const json& config, const std::string& path, const FamilySpec& f,
                       ModelConfig& c) {
  if (c.topK != 2) {
    return Status::error(path + ": key 'num_experts_per_tok' is " + std::to_string(c.topK) +
                         " but " + f.name +
                         "'s sparsemixer routing always picks 2 experts (transformers ignores "
                         "any other value); set it to 2");
  }
  c.routing = RoutingRecipe{};
  c.routing.scoring = RoutingRecipe::Scoring::kSparseMixer;
  c.routing.normalize = RoutingRecipe::Normalize::kNone;
  c.routing.jitterEps = 0.01f;
  const std::string key = "router_jitter_noise";
  const json* it = findKey(config, key);
  if (!it || it->is_null()) return Status::ok();
  if (!it->is_number() || !(it->get<double>() >= 0.0) ||
      !(it->get<double>() <= std::numeric_limits<float>::max())) {
    return Status::error(path + ": key '" + key + "' must be a non-negative number (got " +
                         it->dump() + ") (" + f.name + ")");
  }
  c.routing.jitterEps = static_cast<float>(it->get<double>());
  return Status::ok();
}

// Whether the chosen weights are renormalized: the row's Renormalize, norm_topk_prob for kKey.
// norm_topk_prob is read under every alias of the row (Kimi-Linear: moe_renormalize).
Result<bool> readRenormalize(const json& config, const std::string& path, const FamilySpec& f) {
  if (f.renormalize != Renormalize::kKey) return f.renormalize == Renormalize::kAlways;
  std::string key;
  if (Status s = assign(key, optionalAlias(config, path, f, f.normKeys)); !s) return makeError(s);
  return optionalBool(config, path, key, f.renormalizeDefault);
}

// A positive float under any of its aliases (absent or null: `fallback`).
Result<float> aliasedPositiveFloat(const json& config, const std::string& path, const FamilySpec& f,
                                   const std::vector<std::string>& keys, float fallback) {
  std::string key;
  if (Status s = assign(key, optionalAlias(config, path, f, keys)); !s) return makeError(s);
  return optionalPositiveFloat(config, path, key, fallback);
}

Status readRouting(const json& config, const std::string& path, const FamilySpec& f,
                   ModelConfig& c) {
  using R = RoutingRecipe;
  switch (f.routing) {
    case RoutingPiece::kSoftmaxTopk: {
      bool norm = false;
      if (Status s = assign(norm, readRenormalize(config, path, f)); !s) return s;
      c.routing = softmaxTopkRecipe(norm);
      return Status::ok();
    }
    case RoutingPiece::kDeepseekV2:
    case RoutingPiece::kDeepseekV3:
    case RoutingPiece::kSoftmaxGroupsRenormScaled:
      return readDeepseekRouting(config, path, f, c);
    case RoutingPiece::kSigmoidBiasChoice:
      c.routing = R{};
      c.routing.scoring = R::Scoring::kSigmoid;
      c.routing.choiceBias = true;
      return Status::ok();
    case RoutingPiece::kErnie: {
      c.routing = R{};
      c.routing.choiceBias = true;
      return assign(c.routing.normMin, optionalPositiveFloat(config, path, "moe_norm_min", 1e-12f));
    }
    case RoutingPiece::kDbrx: {
      c.routing = R{};
      const std::string key = "ffn_config.moe_normalize_expert_weights";
      const json* p = findKey(config, key);
      if (p && p->is_null()) {  // DbrxFFN: None means no normalization
        c.routing.normalize = R::Normalize::kNone;
        return Status::ok();
      }
      c.routing.normalize = R::Normalize::kPNorm;
      return assign(c.routing.pNorm, optionalPositiveFloat(config, path, key, 1.0f));
    }
    case RoutingPiece::kSoftmaxOverTopLogits:
      c.routing = R{};
      c.routing.scoring = R::Scoring::kSoftmaxOverChosen;
      c.routing.chooseOnLogits = true;
      c.routing.normalize = R::Normalize::kNone;
      c.routing.routerBias = !f.routerBiasName.empty();
      return Status::ok();
    case RoutingPiece::kSigmoidTopLogits:
      c.routing = R{};
      c.routing.scoring = R::Scoring::kSigmoid;
      c.routing.chooseOnLogits = true;
      c.routing.normalize = R::Normalize::kNone;
      return Status::ok();
    case RoutingPiece::kMoePlusPlus:
      return Status::ok();  // parseMoePlusPlus
    case RoutingPiece::kSparseMixer:
      return readSparseMixer(config, path, f, c);
    case RoutingPiece::kSigmoidBiasScaled: {
      // Lfm2MoeTopKRouter, AfmoeTokenChoiceRouter, HYV3TopKRouter.
      c.routing = R{};
      c.routing.scoring = R::Scoring::kSigmoid;
      c.routing.choiceBias = !f.noChoiceBias;
      if (!f.choiceBiasKey.empty()) {
        if (Status s =
                assign(c.routing.choiceBias, optionalBool(config, path, f.choiceBiasKey, true));
            !s)
          return s;
      }
      bool norm = false;
      if (Status s = assign(norm, readRenormalize(config, path, f)); !s) return s;
      c.routing.normalize = norm ? R::Normalize::kSum : R::Normalize::kNone;
      c.routing.normEps = f.normEps;
      if (!f.logitSoftcapKey.empty()) {
        // LagunaTopKRouter: tanh softcap only when > 0.0.
        const json* it = findKey(config, f.logitSoftcapKey);
        if (it && !it->is_null()) {
          if (!it->is_number() || !(it->get<double>() >= 0.0) ||
              !(it->get<double>() <= std::numeric_limits<float>::max())) {
            return Status::error(path + ": key '" + f.logitSoftcapKey +
                                 "' must be a non-negative number (got " + it->dump() + ") (" +
                                 f.name + ")");
          }
          c.routing.logitSoftcap = static_cast<float>(it->get<double>());
        }
      }
      if (f.scaleKeys.empty()) {  // Flint: no scale key; the weights are not scaled
        c.routing.scale = f.scaleDefault;
        return Status::ok();
      }
      return assign(c.routing.scale,
                    aliasedPositiveFloat(config, path, f, f.scaleKeys, f.scaleDefault));
    }
    case RoutingPiece::kTopLogitsSelectionFn: {
      // Cohere2MoeTopKRouter: topk(router_logits), then softmax over the k, or σ renormalized
      // (no eps) iff norm_topk_prob.
      std::string fn;
      if (Status s = assign(fn, optionalChoice(config, path, "expert_selection_fn", "softmax",
                                               {"softmax", "sigmoid"}));
          !s)
        return s;
      bool norm = false;
      if (Status s = assign(norm, readRenormalize(config, path, f)); !s) return s;
      c.routing = R{};
      c.routing.chooseOnLogits = true;
      c.routing.scoring = fn == "softmax" ? R::Scoring::kSoftmaxOverChosen : R::Scoring::kSigmoid;
      c.routing.normalize = fn == "sigmoid" && norm ? R::Normalize::kSum : R::Normalize::kNone;
      return Status::ok();
    }
    case RoutingPiece::kSoftmaxBiasChoiceScaled: {
      // LongcatFlashTopkRouter: softmax(f32 logits over E + Z), top-k of p + bias, p gathered,
      // × routed_scaling_factor; classifier bias iff router_bias (getattr default False).
      c.routing = R{};
      c.routing.choiceBias = true;
      c.routing.normalize = R::Normalize::kNone;
      if (Status s = assign(c.routing.routerBias, optionalBool(config, path, "router_bias", false));
          !s)
        return s;
      return assign(c.routing.scale,
                    optionalPositiveFloat(config, path, "routed_scaling_factor", 1.0f));
    }
  }
  return Status::ok();
}

Status readShared(const json& config, const std::string& path, const FamilySpec& f,
                  ModelConfig& c) {
  uint32_t v = 0;
  switch (f.shared) {
    case SharedKind::kNone:
      return Status::ok();
    case SharedKind::kGated:
    case SharedKind::kWidth: {
      std::string key;
      if (Status s = assign(key, optionalAlias(config, path, f, f.sharedKeys)); !s) return s;
      if (Status s = assign(v, optionalU32(config, path, key, f.sharedDefault, 0)); !s) return s;
      c.sharedIntermediateSize = v;
      // Qwen2MoeSparseMoeBlock always pairs the shared expert with its sigmoid gate.
      c.sharedExpertGated = f.shared == SharedKind::kGated && v > 0;
      return Status::ok();
    }
    case SharedKind::kTimesRouted: {
      std::string key;
      if (Status s = assign(key, optionalAlias(config, path, f, f.sharedKeys)); !s) return s;
      if (Status s = assign(v, optionalU32(config, path, key, f.sharedDefault, 0)); !s) return s;
      const uint64_t width = uint64_t{v} * c.intermediateSize;
      if (width > std::numeric_limits<uint32_t>::max()) {
        return Status::error(path + ": " + key + " × " + f.intermediateKeys.front() +
                             " is too large");
      }
      c.sharedIntermediateSize = static_cast<uint32_t>(width);
      return Status::ok();
    }
    case SharedKind::kAlwaysRoutedWidth:
      c.sharedIntermediateSize = c.intermediateSize;
      return Status::ok();
    case SharedKind::kRequiredWidth:
      return assign(c.sharedIntermediateSize, requiredU32(config, path, f, f.sharedKeys));
  }
  return Status::ok();
}

// A transformers family: every quantity through the table's keys.
Status parseTableFamily(const json& config, const std::string& path, const FamilySpec& f,
                        ModelConfig& c) {
  for (const PinnedKey& p : f.pinnedKeys) {
    const json* v = findKey(config, p.key);
    const json want = json::parse(p.json, nullptr, /*allow_exceptions=*/false);
    if (!v || v->is_null() || (*v == want) != p.refuseThisValue) continue;
    return Status::error(path + ": key '" + p.key + "' is " + v->dump() + ", but " + f.name +
                         (p.refuseThisValue ? " is not served with it: "
                                            : " is served only with " + want.dump() + ": ") +
                         p.why);
  }
  for (const std::string& key : f.siluActKeys) {
    // ACT2FN[key] in the family's experts: SwiGLU is served only with SiLU.
    const json* v = findKey(config, key);
    if (!v || v->is_null() || *v == "silu" || *v == "swish") continue;
    return Status::error(path + ": key '" + key + "' is " + v->dump() + ", but " + f.name +
                         " experts are served as SwiGLU with SiLU only (\"silu\" or \"swish\")");
  }
  std::string expertsKey, topKKey;
  if (Status s = assign(c.hiddenSize, requiredU32(config, path, f, f.hiddenKeys)); !s) return s;
  if (Status s = assign(c.intermediateSize, requiredU32(config, path, f, f.intermediateKeys)); !s)
    return s;
  if (Status s = assign(c.numExperts, requiredU32(config, path, f, f.expertsKeys, &expertsKey)); !s)
    return s;
  if (Status s = assign(c.topK, requiredU32(config, path, f, f.topKKeys, &topKKey)); !s) return s;
  if (!f.layersKeys.empty()) {  // else the layer rule counts them (NemotronH)
    if (Status s = assign(c.numLayers, requiredU32(config, path, f, f.layersKeys)); !s) return s;
  }
  if (!f.twiceLayersKey.empty()) {
    // LongcatFlashConfig.num_hidden_layers is 2 × num_layers (transformers 4 writes both).
    uint32_t twice = 0;
    if (Status s = assign(twice, optionalU32(config, path, f.twiceLayersKey, 0, 0)); !s) return s;
    if (twice != 0 && uint64_t{twice} != 2 * uint64_t{c.numLayers}) {
      return Status::error(path + ": key '" + f.twiceLayersKey + "' (" + std::to_string(twice) +
                           ") must be twice '" + f.layersKeys.front() + "' (" +
                           std::to_string(c.numLayers) + "): " + f.name +
                           " decoder layers hold two attention sublayers each");
    }
  }
  if (!f.zeroExpertsKey.empty()) {
    // LongCat-Flash: the router scores E FFN experts + Z identity experts.
    uint32_t zero = 0;
    if (Status s = assign(zero, optionalU32(config, path, f.zeroExpertsKey, 0, 0)); !s) return s;
    const uint64_t all = uint64_t{c.numExperts} + zero;
    if (all > std::numeric_limits<uint32_t>::max()) {
      return Status::error(path + ": " + expertsKey + " + " + f.zeroExpertsKey + " is too large");
    }
    c.numFfnExperts = c.numExperts;
    c.numExperts = static_cast<uint32_t>(all);
    c.identityZeroExperts = zero > 0;
    expertsKey += " + " + f.zeroExpertsKey;
  }
  if (Status s = checkTopK(path, c, topKKey, expertsKey); !s) return s;
  if (Status s = readMoeLayers(config, path, f, c); !s) return s;
  if (Status s = readRouting(config, path, f, c); !s) return s;
  if (Status s = readShared(config, path, f, c); !s) return s;
  if (!f.sharedCombineKey.empty()) {
    // Cohere2MoeSparseMoeBlock: "sum" adds the shared expert, "average" halves the sum.
    std::string how;
    if (Status s = assign(how, optionalChoice(config, path, f.sharedCombineKey,
                                              f.sharedCombineDefault, {"sum", "average"}));
        !s)
      return s;
    c.sharedCombine = how == "average" ? SharedCombine::kAverage : SharedCombine::kSum;
  }
  if (f.clampedSwiglu) {
    c.expertActivation = ExpertActivation::kClampedSwiglu;
    if (Status s =
            assign(c.swigluAlpha, optionalPositiveFloat(config, path, "swiglu_alpha", 1.702f));
        !s)
      return s;
    if (Status s = assign(c.swigluLimit, optionalPositiveFloat(config, path, "swiglu_limit", 7.0f));
        !s)
      return s;
  }
  if (f.relu2Experts) {
    // NemotronHExperts / NemotronHMLP: down(act(up(x))) with act = ACT2FN[mlp_hidden_act]; only
    // relu2 is implemented; mlp_bias gives the shared MLP biases and moe_latent_size wraps the
    // experts in fc1/fc2 latent projections, neither of which is implemented.
    std::string act;
    if (Status s = assign(act, optionalChoice(config, path, "mlp_hidden_act", "relu2", {"relu2"}));
        !s)
      return s;
    bool mlpBias = false;
    if (Status s = assign(mlpBias, optionalBool(config, path, "mlp_bias", false)); !s) return s;
    if (mlpBias) {
      return Status::error(path + ": key 'mlp_bias' is true: " + f.name +
                           " MLP biases (shared expert, latent projections) are not supported");
    }
    if (const json* latent = findKey(config, "moe_latent_size"); latent && !latent->is_null()) {
      return Status::error(path + ": key 'moe_latent_size' is " + latent->dump() + ": " + f.name +
                           " latent expert projections (fc1_latent_proj / fc2_latent_proj) are "
                           "not supported");
    }
    c.expertActivation = ExpertActivation::kRelu2;
    c.sharedActivation = ExpertActivation::kRelu2;
  }
  c.expertBias = f.expertBias;
  c.weightOnInput = f.weightOnInput;
  return Status::ok();
}

// quantization_config.quant_method, "" when the model is not quantized. transformers itself
// refuses a quantization_config without a quant_method, so this does too.
Result<std::string> readQuantMethod(const json& config, const std::string& path) {
  const json* q = findKey(config, "quantization_config");
  if (!q || q->is_null()) return std::string();
  if (!q->is_object()) {
    return makeError(path + ": key 'quantization_config' must be a JSON object (got " + q->dump() +
                     ")");
  }
  const json* m = findKey(config, "quantization_config.quant_method");
  if (!m) return makeError(path + ": key 'quantization_config.quant_method' missing");
  if (!m->is_string() || m->get_ref<const std::string&>().empty()) {
    return makeError(path + ": key 'quantization_config.quant_method' must be a non-empty string " +
                     "(got " + m->dump() + ")");
  }
  return m->get<std::string>();
}

}  // namespace

RoutingRecipe moePlusPlusRecipe(const ModelConfig& m) {
  RoutingRecipe r;
  if (m.moeMixtralGating) {
    r.scoring = RoutingRecipe::Scoring::kSoftmaxOverChosen;
    r.chooseOnLogits = true;
    r.normalize = RoutingRecipe::Normalize::kNone;
  } else {
    r.zeroWeightExpert = m.numExperts - 1;
  }
  if (m.moeLogitsNorm) r.logitsNormStd = m.moeGateNormStd;
  return r;
}

Result<ModelConfig> parseModelConfig(const std::string& text, const std::string& path) {
  json parsed;
  try {
    parsed = json::parse(text);
  } catch (const json::parse_error& e) {
    return makeError(path + ": invalid JSON at byte " + std::to_string(e.byte) + ": " + e.what());
  } catch (const json::exception& e) {  // e.g. out_of_range for a number such as 1e400
    return makeError(path + ": invalid JSON: " + e.what());
  }
  if (!parsed.is_object()) return makeError(path + ": top level is not a JSON object");

  ModelConfig c;
  auto mt = parsed.find("model_type");
  if (mt == parsed.end()) return makeError(path + ": key 'model_type' missing");
  if (!mt->is_string()) return makeError(path + ": key 'model_type' must be a string");
  c.modelType = mt->get<std::string>();
  // A vision-language wrapper: the text model's config (nested, with its own model_type) is read
  // through the text model's row; errors name the nested object's path.
  const json* textConfig = &parsed;
  std::string where = path;
  if (const WrapperSpec* w = findWrapper(c.modelType)) {
    c.wrapperType = c.modelType;
    for (const std::string& key : w->configPath) {
      auto it = textConfig->find(key);
      if (it == textConfig->end() || !it->is_object()) {
        return makeError(where + ": key '" + key + "' " +
                         (it == textConfig->end() ? "missing" : "must be a JSON object") +
                         " (the text model's config of this " + w->name + " model, model_type '" +
                         c.wrapperType + "')");
      }
      textConfig = &*it;
      where += (where == path ? ": " : ".") + key;
    }
    auto tmt = textConfig->find("model_type");
    if (tmt == textConfig->end() || !tmt->is_string()) {
      return makeError(where + ": key 'model_type' missing or not a string (the text model of " +
                       "model_type '" + c.wrapperType + "')");
    }
    c.modelType = tmt->get<std::string>();
  }
  const json& config = *textConfig;
  const FamilySpec* f = findFamily(c.modelType);
  if (!f) {
    return makeError(where + ": model_type '" + c.modelType +
                     "' is not supported (supported: " + supportedModelTypes() +
                     "; vision-language wrappers: " + supportedWrapperTypes() + ")");
  }
  c.familyName = f->name;
  Status s = f->gate == GateKindSpec::kMoePlusPlus     ? parseMoePlusPlus(config, where, c)
             : f->gate == GateKindSpec::kYuanAttention ? parseYuan(config, where, c)
                                                       : parseTableFamily(config, where, *f, c);
  if (!s) return makeError(s);
  // quantization_config sits at the top of a wrapper's config.json (the whole model's).
  if (Status q = assign(c.quantMethod, readQuantMethod(parsed, path)); !q) return makeError(q);
  if (c.moeLayers.empty()) {
    return makeError(path + ": no MoE layers among the " + std::to_string(c.numLayers) +
                     " layers of this " + f->name +
                     " model (check decoder_sparse_step / mlp_only_layers / "
                     "first_k_dense_replace / moe_layer_freq / moe_expert_interval / "
                     "moe_layer_start_index / expert_layer_period / moe_layers / "
                     "mlp_layer_types / num_dense_layers)");
  }
  // MoE++'s zero-computation experts (N > 4 checked above) are not FFNs on shards.
  // LongCat-Flash's identity experts are counted in parseTableFamily.
  if (c.numFfnExperts == 0) {
    c.numFfnExperts =
        c.numExperts - (f->gate == GateKindSpec::kMoePlusPlus ? kMoePlusPlusZeroComputeExperts : 0);
  }
  return c;
}

namespace {

Result<ModelConfig> parseConfig(const std::string& path) {
  auto text = readTextFile(path);
  if (!text) return makeError(text.code(), text.error());
  return parseModelConfig(text.value(), path);
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

// u8 tensors are quantized bytes (MXFP4 blocks and scales), read only through loadMxfp4; as a
// weight they are an error naming the tensor, its dtype and the quant_method.
Status checkNotRawBytes(const std::string& name, DType dtype, const std::string& quantMethod) {
  if (dtype != DType::kU8) return Status::ok();
  return Status::error("tensor " + name + ": dtype " + std::string(dtypeName(dtype)) +
                       " (quantized bytes, quantization_config.quant_method " +
                       (quantMethod.empty() ? std::string("absent") : "'" + quantMethod + "'") +
                       ") cannot be dequantized as a weight: the only quantized layout read is " +
                       "gpt_oss MXFP4, experts.gate_up_proj_blocks/_scales and " +
                       "experts.down_proj_blocks/_scales");
}

Status checkExpertId(const ModelConfig& config, const std::string& dir, uint32_t expert) {
  if (expert < config.numExperts) return Status::ok();
  return Status::error("expert " + std::to_string(expert) + " out of range: " + dir + " has " +
                       std::to_string(config.numExperts) + " experts (" +
                       findFamily(config.modelType)->expertsKeys.front() + ")");
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
  ckpt->spec_ = findFamily(ckpt->config_.modelType);

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
  // The first of the family's layer roots any tensor lives under (NemotronH saves backbone.layers.,
  // transformers 5 keeps model.layers. in memory); the table's own when none does.
  auto holdsTensors = [&](const std::string& root) {
    auto it = ckpt->tensorFile_.lower_bound(root);
    return it != ckpt->tensorFile_.end() && it->first.starts_with(root);
  };
  // A vision-language wrapper's roots (model.language_model.layers.) come first.
  std::vector<std::string> roots;
  if (const WrapperSpec* w = findWrapper(ckpt->config_.wrapperType)) roots = w->layerRoots;
  roots.push_back(ckpt->spec_->layerRoot);
  roots.insert(roots.end(), ckpt->spec_->altLayerRoots.begin(), ckpt->spec_->altLayerRoots.end());
  ckpt->layerRoot_ = roots.front();
  for (const std::string& r : roots) {
    if (!holdsTensors(r)) continue;
    ckpt->layerRoot_ = r;
    break;
  }
  return ckpt;
}

DType Checkpoint::expertsDType() const {
  for (const auto& file : files_) {
    for (const TensorInfo& t : file->tensors()) {
      const bool expertTensor = t.name.find(".experts.") != std::string::npos ||
                                t.name.find(".input_linear.") != std::string::npos;
      if (expertTensor && !t.name.ends_with("_scale_inv") && !t.name.ends_with("_bias")) {
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
  // Quantized bytes first: their shape is the packed one, so a shape error would mislead.
  if (Status s = checkNotRawBytes(name, info->dtype, config_.quantMethod); !s) return makeError(s);
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
  const std::string block = blockPrefix(layer);
  std::string name = block + spec_->routerNames.front();
  for (const std::string& r : spec_->routerNames) {
    if (has(block + r)) name = block + r;
  }
  return loadF32(name, {config_.numExperts, config_.hiddenSize});
}

const TensorInfo* Checkpoint::info(const std::string& name) const {
  auto it = tensorFile_.find(name);
  return it == tensorFile_.end() ? nullptr : it->second->find(name);
}

std::string Checkpoint::layerPrefix(uint32_t layer) const {
  return layerRoot_ + std::to_string(layer) + ".";
}

std::string Checkpoint::blockPrefix(uint32_t layer) const {
  const std::string root = layerPrefix(layer);
  for (const std::string& b : spec_->blocks) {
    for (const std::string& r : spec_->routerNames) {
      if (has(root + b + r)) return root + b;
    }
  }
  return root + spec_->blocks.front();
}

Result<std::vector<float>> Checkpoint::loadSlice(const std::string& name,
                                                 const std::vector<uint64_t>& shape, uint64_t first,
                                                 uint64_t count) const {
  const TensorInfo* t = info(name);
  if (!t) return makeError("tensor " + name + " missing from " + dir_);
  if (Status s = checkNotRawBytes(name, t->dtype, config_.quantMethod); !s) return makeError(s);
  if (t->shape != shape) {
    return makeError("tensor " + name + ": shape " + formatShape(shape) +
                     " expected from config.json, file " + tensorFile_.find(name)->second->path() +
                     " has " + formatShape(t->shape));
  }
  if (has(name + "_scale_inv")) {
    return makeError("tensor " + name + ": block-scaled " + std::string(dtypeName(t->dtype)) +
                     " is supported for per-expert 2-D weights only, not in a fused layout");
  }
  const uint64_t rowElems = t->numel() / shape.front();
  const size_t esz = dtypeSize(t->dtype);
  std::span<const std::byte> all = tensorFile_.find(name)->second->bytes(*t);
  std::vector<float> out(count * rowElems);
  convertToF32(t->dtype, all.subspan(first * rowElems * esz, count * rowElems * esz), out);
  return out;
}

Result<std::vector<float>> Checkpoint::loadMxfp4(const std::string& name, uint64_t rows,
                                                 uint64_t cols, uint32_t expert) const {
  const uint64_t E = config_.numExperts;
  const std::string blocksName = name + "_blocks", scalesName = name + "_scales";
  if (cols % kMxfp4BlockValues != 0) {
    return makeError("tensor " + blocksName + ": MXFP4 packs 32 values per scale, but its rows " +
                     "are " + std::to_string(cols) + " wide (from config.json), not a multiple " +
                     "of 32");
  }
  const uint64_t groups = cols / kMxfp4BlockValues;
  // transformers asserts blocks.shape[:-1] == scales.shape; here both are checked against the
  // config, so an error names the shape expected.
  const struct {
    const std::string& name;
    std::vector<uint64_t> shape;
  } parts[] = {{blocksName, {E, rows, groups, kMxfp4BlockValues / 2}},
               {scalesName, {E, rows, groups}}};
  std::span<const std::byte> bytes[2];
  for (size_t i = 0; i < 2; ++i) {
    const TensorInfo* t = info(parts[i].name);
    if (!t) {
      return makeError("tensor " + parts[i].name + " missing from " + dir_ + " (MXFP4 " + name +
                       " needs both _blocks and _scales)");
    }
    if (t->dtype != DType::kU8) {
      return makeError("tensor " + parts[i].name + ": dtype " + std::string(dtypeName(t->dtype)) +
                       " cannot be dequantized as MXFP4 (u8 expected)");
    }
    if (t->shape != parts[i].shape) {
      return makeError("tensor " + parts[i].name + ": MXFP4 shape " + formatShape(parts[i].shape) +
                       " expected from config.json, file " +
                       tensorFile_.find(parts[i].name)->second->path() + " has " +
                       formatShape(t->shape));
    }
    const uint64_t perExpert = t->numel() / E;
    bytes[i] =
        tensorFile_.find(parts[i].name)->second->bytes(*t).subspan(expert * perExpert, perExpert);
  }
  std::vector<float> out(rows * cols);
  dequantizeMxfp4(bytes[0], bytes[1], out);
  return out;
}

Result<ExpertTensors> Checkpoint::loadFfn(const std::string& prefix, const PerExpertNames& names,
                                          uint64_t inter) const {
  const uint64_t h = config_.hiddenSize;
  ExpertTensors t;
  if (std::string(names.gate).empty()) {
    // A non-gated FFN (NemotronH): up [I, H] and down only; w1 stays empty.
    auto up = loadF32(prefix + names.up + ".weight", {inter, h});
    if (!up) return makeError(up.status());
    t.w3 = std::move(up).value();
  } else if (std::string(names.up).empty()) {
    // One [2I, H] gate|up matrix (MoE++, Yuan, Granite's shared_mlp.input_linear): the reference
    // chunks its output in two, rows [0, I) through silu (w1), rows [I, 2I) the linear half (w3).
    auto fused = loadF32(prefix + names.gate + ".weight", {2 * inter, h});
    if (!fused) return makeError(fused.status());
    const auto half = fused.value().begin() + static_cast<std::ptrdiff_t>(inter * h);
    t.w1.assign(fused.value().begin(), half);
    t.w3.assign(half, fused.value().end());
  } else {
    for (auto [suffix, dest] : {std::pair{names.gate, &t.w1}, std::pair{names.up, &t.w3}}) {
      auto loaded = loadF32(prefix + suffix + ".weight", {inter, h});
      if (!loaded) return makeError(loaded.status());
      *dest = std::move(loaded).value();
    }
  }
  auto down = loadF32(prefix + names.down + ".weight", {h, inter});
  if (!down) return makeError(down.status());
  t.w2 = std::move(down).value();
  return t;
}

namespace {

// [R, C] → [C, R].
std::vector<float> transposed(const std::vector<float>& m, uint64_t rows, uint64_t cols) {
  std::vector<float> out(m.size());
  for (uint64_t r = 0; r < rows; ++r) {
    for (uint64_t c = 0; c < cols; ++c) out[c * rows + r] = m[r * cols + c];
  }
  return out;
}

// Splits one expert's gate|up projection, given as [2I, H] rows (linear-weight orientation), into
// the gate half (w1) and the linear half (w3), concatenated ([0, I) | [I, 2I)) or interleaved
// (even rows | odd rows).
void splitHalves(const std::vector<float>& both, uint64_t inter, uint64_t h, FusedHalves halves,
                 std::vector<float>& gate, std::vector<float>& up) {
  gate.resize(inter * h);
  up.resize(inter * h);
  for (uint64_t i = 0; i < inter; ++i) {
    const uint64_t g = halves == FusedHalves::kConcat ? i : 2 * i;
    const uint64_t u = halves == FusedHalves::kConcat ? inter + i : 2 * i + 1;
    std::copy_n(both.begin() + static_cast<std::ptrdiff_t>(g * h), h,
                gate.begin() + static_cast<std::ptrdiff_t>(i * h));
    std::copy_n(both.begin() + static_cast<std::ptrdiff_t>(u * h), h,
                up.begin() + static_cast<std::ptrdiff_t>(i * h));
  }
}

}  // namespace

Result<ExpertTensors> Checkpoint::fusedExpert(const std::string& block, uint32_t expert) const {
  const uint64_t E = config_.numFfnExperts, h = config_.hiddenSize,
                 inter = config_.intermediateSize;
  // LongCat-Flash's gate_up_proj holds a (never used) row block for each identity expert too.
  const uint64_t gateUpE = spec_->zeroExpertsKey.empty() ? E : uint64_t{config_.numExperts};
  const FamilySpec& f = *spec_;
  ExpertTensors t;
  if (f.fused == FusedKind::kUp) {
    // NemotronHExperts (non-gated): up_proj [E, I, H], down_proj [E, H, I].
    auto up = loadSlice(block + "experts.up_proj", {E, inter, h}, expert, 1);
    if (!up) return makeError(up.status());
    auto dn = loadSlice(block + "experts.down_proj", {E, h, inter}, expert, 1);
    if (!dn) return makeError(dn.status());
    t.w3 = std::move(up).value();
    t.w2 = std::move(dn).value();
    return t;
  }
  // Aria saves the pair as experts.fc1.weight / experts.fc2.weight (transformers 5 renames them
  // at load); either spelling holds the same layout.
  const bool saved = !f.savedGateUpName.empty() && has(block + f.savedGateUpName);
  const std::string gateUp = block + (saved ? f.savedGateUpName : "experts.gate_up_proj");
  const std::string down = block + (saved ? f.savedDownName : "experts.down_proj");
  const bool mxfp4 = !has(gateUp) && has(gateUp + "_blocks");
  if (mxfp4 || has(gateUp) || f.fused == FusedKind::kGateUp) {
    if (mxfp4) {
      // MXFP4 (gpt-oss on the hub): transformers dequantizes the blocks to [E, 2I, H] / [E, H, I]
      // and transposes them into its x @ W parameters [E, H, 2I] / [E, I, H]; the slices read
      // here are the former, already in linear-weight orientation.
      if (f.orientation != FusedOrientation::kInOut) {
        return makeError("tensor " + gateUp + "_blocks: MXFP4 experts are read for the x @ W " +
                         "layout ([E, H, 2I], gpt_oss) only; " + f.name + " stores [E, 2I, H]");
      }
      if (!config_.quantMethod.empty() && config_.quantMethod != "mxfp4") {
        return makeError("tensor " + gateUp + "_blocks: *_blocks/*_scales are read as MXFP4 " +
                         "for quantization_config.quant_method mxfp4 only, not '" +
                         config_.quantMethod + "'");
      }
      auto gu = loadMxfp4(gateUp, 2 * inter, h, expert);
      if (!gu) return makeError(gu.status());
      auto dn = loadMxfp4(down, h, inter, expert);
      if (!dn) return makeError(dn.status());
      splitHalves(gu.value(), inter, h, f.halves, t.w1, t.w3);
      t.w2 = std::move(dn).value();
    } else {
      // transformers 5: [E, 2I, H] + down [E, H, I], or (x @ W) [E, H, 2I] + down [E, I, H].
      const bool inOut = f.orientation == FusedOrientation::kInOut;
      auto gu = loadSlice(gateUp,
                          inOut ? std::vector<uint64_t>{gateUpE, h, 2 * inter}
                                : std::vector<uint64_t>{gateUpE, 2 * inter, h},
                          expert, 1);
      if (!gu) return makeError(gu.status());
      auto dn = loadSlice(
          down, inOut ? std::vector<uint64_t>{E, inter, h} : std::vector<uint64_t>{E, h, inter},
          expert, 1);
      if (!dn) return makeError(dn.status());
      const std::vector<float> rows = inOut ? transposed(gu.value(), h, 2 * inter) : gu.value();
      splitHalves(rows, inter, h, f.halves, t.w1, t.w3);
      t.w2 = inOut ? transposed(dn.value(), inter, h) : std::move(dn).value();
    }
    if (config_.expertBias) {
      auto gb = loadSlice(gateUp + "_bias", {E, 2 * inter}, expert, 1);
      if (!gb) return makeError(gb.status());
      auto db = loadSlice(down + "_bias", {E, h}, expert, 1);
      if (!db) return makeError(db.status());
      splitHalves(gb.value(), inter, 1, f.halves, t.b1, t.b3);
      t.b2 = std::move(db).value();
    }
    return t;
  }
  if (f.fused == FusedKind::kGranite) {
    auto gu = loadSlice(block + "input_linear.weight", {E, 2 * inter, h}, expert, 1);
    if (!gu) return makeError(gu.status());
    auto dn = loadSlice(block + "output_linear.weight", {E, h, inter}, expert, 1);
    if (!dn) return makeError(dn.status());
    splitHalves(gu.value(), inter, h, FusedHalves::kConcat, t.w1, t.w3);
    t.w2 = std::move(dn).value();
    return t;
  }
  // DBRX: w1, v1, w2 each [E·I, H]; expert e owns rows [e·I, (e+1)·I); down = w2ᵀ.
  for (auto [name, dest] :
       {std::pair{"w1", &t.w1}, std::pair{"v1", &t.w3}, std::pair{"w2", &t.w2}}) {
    auto m =
        loadSlice(block + "experts.mlp." + name, {E * inter, h}, uint64_t{expert} * inter, inter);
    if (!m) return makeError(m.status());
    *dest = std::move(m).value();
  }
  t.w2 = transposed(t.w2, inter, h);
  return t;
}

Result<ExpertTensors> Checkpoint::expert(uint32_t layer, uint32_t expert) const {
  if (Status s = checkMoeLayer(config_, dir_, layer); !s) return makeError(s);
  if (Status s = checkExpertId(config_, dir_, expert); !s) return makeError(s);
  const ExpertKind kind = config_.expertKind(expert);
  if (kind != ExpertKind::kFfn) {
    return makeError(
        "expert " + std::to_string(expert) + " of " + dir_ + " is " +
        (config_.identityZeroExperts
             ? std::string("an identity expert (") + spec_->zeroExpertsKey + ")"
             : std::string(expertKindName(kind)) + " expert, a MoE++ zero-computation expert") +
        ", not an FFN (FFN experts are 0.." + std::to_string(config_.numFfnExperts - 1) + ")");
  }
  const std::string block = blockPrefix(layer);
  const std::string prefix = block + spec_->expertsDir + std::to_string(expert) + ".";
  auto load = [&]() -> Result<ExpertTensors> {
    // Per-expert tensors when the header has them, else the family's fused layout.
    for (const PerExpertNames& names : spec_->perExpert) {
      const char* first = std::string(names.gate).empty() ? names.up : names.gate;
      if (has(prefix + first + ".weight")) {
        return loadFfn(prefix, names, config_.intermediateSize);
      }
    }
    if (spec_->fused != FusedKind::kNone) return fusedExpert(block, expert);
    return loadFfn(prefix, spec_->perExpert.front(), config_.intermediateSize);  // names it
  };
  auto loaded = load();
  // A quantization the loader does not know stores its experts under other names or dtypes:
  // the error names the tensor (above) and the method.
  const std::string& method = config_.quantMethod;
  if (!loaded && !method.empty() && method != "mxfp4" && method != "fp8") {
    return makeError(loaded.code(), loaded.error() + " (quantization_config.quant_method '" +
                                        method +
                                        "' cannot be dequantized: only mxfp4 and fp8 are)");
  }
  return loaded;
}

Result<TwoLayerGateTensors> Checkpoint::twoLayerGate(uint32_t layer) const {
  if (Status s = checkHas(config_, dir_, layer, config_.gateKind == GateKind::kTwoLayerTanh,
                          spec_->gate == GateKindSpec::kMoePlusPlus
                              ? "has no two-layer gate (moe_2layer_gate is false)"
                              : "has no two-layer gate (only MoE++ has one)");
      !s)
    return makeError(s);
  const uint64_t n = config_.numExperts;
  const std::string prefix = blockPrefix(layer) + "gate.wg.";
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
  return loadF32(blockPrefix(layer) + "gate.gate_map.weight",
                 {config_.numExperts, config_.numExperts});
}

Result<ConstantExpertTensors> Checkpoint::constantExpert(uint32_t layer, uint32_t expert) const {
  const bool moepp = spec_->gate == GateKindSpec::kMoePlusPlus;
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
  const std::string prefix = blockPrefix(layer) + "experts.experts." + std::to_string(expert) + ".";
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
    auto w = loadF32(blockPrefix(layer) + "gate." + part + ".weight",
                     {config_.numExperts, config_.hiddenSize});
    if (!w) return makeError(w.status());
    qkv.insert(qkv.end(), w.value().begin(), w.value().end());
  }
  return qkv;
}

Result<std::vector<float>> Checkpoint::noiseWeight(uint32_t layer) const {
  if (Status s = checkMoeLayer(config_, dir_, layer); !s) return makeError(s);
  return loadF32(blockPrefix(layer) + "w_noise.weight", {config_.numExperts, config_.hiddenSize});
}

Result<ExpertTensors> Checkpoint::sharedExpert(uint32_t layer) const {
  const std::string why = spec_->shared == SharedKind::kNone ? std::string("the family has none")
                          : spec_->sharedKeys.empty()        ? std::string("none in this config")
                                                             : spec_->sharedKeys.front() + " is 0";
  if (Status s = checkHas(config_, dir_, layer, config_.sharedIntermediateSize > 0,
                          "has no shared expert here (" + why + ")");
      !s)
    return makeError(s);
  // The first prefix whose gate (or fused gate|up) tensor exists; else the main one, whose
  // missing tensor the error names.
  std::string prefix = layerPrefix(layer) + spec_->sharedPrefix;
  for (const std::string& alias : spec_->sharedPrefixAliases) {
    const std::string candidate = layerPrefix(layer) + alias;
    if (!has(prefix + spec_->sharedNames.gate + ".weight") &&
        has(candidate + spec_->sharedNames.gate + ".weight"))
      prefix = candidate;
  }
  return loadFfn(prefix, spec_->sharedNames, config_.sharedIntermediateSize);
}

Result<std::vector<float>> Checkpoint::sharedExpertGate(uint32_t layer) const {
  if (Status s = checkHas(config_, dir_, layer, config_.sharedExpertGated,
                          "has no shared_expert_gate (only the Qwen2-MoE-style blocks with a "
                          "shared expert gate it)");
      !s)
    return makeError(s);
  return loadF32(layerPrefix(layer) + spec_->sharedGateName, {1, config_.hiddenSize});
}

Result<std::vector<float>> Checkpoint::scoreCorrectionBias(uint32_t layer) const {
  if (Status s = checkHas(config_, dir_, layer, config_.routing.choiceBias,
                          "has no e_score_correction_bias (only deepseek_v3-style routers "
                          "(the table's kDeepseekV3 rows), minimax_m2 and ernie4_5_moe use one)");
      !s)
    return makeError(s);
  const std::string block = blockPrefix(layer);
  std::string name = block + spec_->choiceBiasNames.front();
  for (const std::string& n : spec_->choiceBiasNames) {
    if (has(block + n)) name = block + n;
  }
  // ERNIE keeps it as moe_statics [1, E] (one expert group); the others as [E].
  const TensorInfo* t = info(name);
  if (t && t->shape.size() == 2 && t->shape[0] == 1) return loadF32(name, {1, config_.numExperts});
  return loadF32(name, {config_.numExperts});
}

Result<std::vector<float>> Checkpoint::routerBias(uint32_t layer) const {
  if (Status s = checkHas(config_, dir_, layer, config_.routing.routerBias,
                          "has no router bias (only gpt-oss's router has one)");
      !s)
    return makeError(s);
  return loadF32(blockPrefix(layer) + spec_->routerBiasName, {config_.numExperts});
}

}  // namespace moe
