// Checkpoint directory loading: config.json validation, single-file or sharded (index.json)
// safetensors layout, and fp32 loading of the Mixtral MoE tensors with shapes checked against the
// config. Tensors are looked up lazily so a process touches only the experts it serves.
#include "common/checkpoint.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>
#include <tuple>

#include <nlohmann/json.hpp>

namespace moe {
namespace {

using nlohmann::json;
namespace fs = std::filesystem;

constexpr const char* kSupportedModelTypes = "mixtral";

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
  }
}

// config.json integers must be positive and fit the uint32 fields of ModelConfig.
Result<uint32_t> positiveU32(const json& config, const std::string& path, const char* key) {
  auto it = config.find(key);
  if (it == config.end()) return makeError(path + ": key '" + key + "' missing");
  const bool isPositiveInt = (it->is_number_unsigned() && it->get<uint64_t>() > 0) ||
                             (it->is_number_integer() && it->get<int64_t>() > 0);
  if (!isPositiveInt || it->get<uint64_t>() > std::numeric_limits<uint32_t>::max()) {
    return makeError(path + ": key '" + key + "' must be a positive integer (got " + it->dump() +
                     ")");
  }
  return static_cast<uint32_t>(it->get<uint64_t>());
}

Result<ModelConfig> parseConfig(const std::string& path) {
  auto parsed = readJsonFile(path);
  if (!parsed) return makeError(parsed.error());
  const json& config = parsed.value();
  if (!config.is_object()) return makeError(path + ": top level is not a JSON object");

  ModelConfig c;
  auto mt = config.find("model_type");
  if (mt == config.end()) return makeError(path + ": key 'model_type' missing");
  if (!mt->is_string()) return makeError(path + ": key 'model_type' must be a string");
  c.modelType = mt->get<std::string>();
  if (c.modelType != "mixtral") {
    return makeError(path + ": model_type '" + c.modelType +
                     "' is not supported (supported: " + kSupportedModelTypes + ")");
  }

  struct Field {
    const char* key;
    uint32_t* dest;
  };
  for (Field f :
       {Field{"hidden_size", &c.hiddenSize}, Field{"intermediate_size", &c.intermediateSize},
        Field{"num_local_experts", &c.numExperts}, Field{"num_experts_per_tok", &c.topK},
        Field{"num_hidden_layers", &c.numLayers}}) {
    auto v = positiveU32(config, path, f.key);
    if (!v) return makeError(v.error());
    *f.dest = v.value();
  }
  if (c.topK < 1 || c.topK > c.numExperts) {
    return makeError(path + ": num_experts_per_tok " + std::to_string(c.topK) +
                     " must be between 1 and num_local_experts (" + std::to_string(c.numExperts) +
                     ")");
  }
  // Every Mixtral decoder layer has a sparse MoE block; other families (e.g. interleaved dense and
  // MoE layers) will fill this list differently.
  for (uint32_t l = 0; l < c.numLayers; ++l) c.moeLayers.push_back(l);
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

std::string layerPrefix(uint32_t layer) {
  return "model.layers." + std::to_string(layer) + ".block_sparse_moe.";
}

Status checkMoeLayer(const ModelConfig& config, const std::string& dir, uint32_t layer) {
  const auto& layers = config.moeLayers;
  if (std::find(layers.begin(), layers.end(), layer) != layers.end()) return Status::ok();
  return Status::error("layer " + std::to_string(layer) + " is not a MoE layer of " + dir + " (" +
                       std::to_string(layers.size()) + " MoE layers of " +
                       std::to_string(config.numLayers) + ")");
}

}  // namespace

Result<std::unique_ptr<Checkpoint>> Checkpoint::open(const std::string& dir) {
  const fs::path root(dir);
  auto config = parseConfig((root / "config.json").string());
  if (!config) return makeError(config.error());

  // The private constructor rules out make_unique; the pointer is owned from the first moment.
  std::unique_ptr<Checkpoint> ckpt(new Checkpoint());
  ckpt->dir_ = dir;
  ckpt->config_ = std::move(config).value();

  const std::string indexPath = (root / "model.safetensors.index.json").string();
  const std::string singlePath = (root / "model.safetensors").string();
  std::error_code ec;
  if (fs::exists(indexPath, ec)) {
    auto parsed = readJsonFile(indexPath);
    if (!parsed) return makeError(parsed.error());
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
        if (!file) return makeError(file.error());
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
    if (!file) return makeError(file.error());
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
  return out;
}

Result<std::vector<float>> Checkpoint::gateWeight(uint32_t layer) const {
  if (Status s = checkMoeLayer(config_, dir_, layer); !s) return makeError(s.message());
  return loadF32(layerPrefix(layer) + "gate.weight", {config_.numExperts, config_.hiddenSize});
}

Result<ExpertTensors> Checkpoint::expert(uint32_t layer, uint32_t expert) const {
  if (Status s = checkMoeLayer(config_, dir_, layer); !s) return makeError(s.message());
  if (expert >= config_.numExperts) {
    return makeError("expert " + std::to_string(expert) + " out of range: " + dir_ + " has " +
                     std::to_string(config_.numExperts) + " experts (num_local_experts)");
  }
  const std::string prefix = layerPrefix(layer) + "experts." + std::to_string(expert) + ".";
  const uint64_t h = config_.hiddenSize;
  const uint64_t i = config_.intermediateSize;
  ExpertTensors t;
  for (auto [suffix, dest, shape] : {std::tuple{"w1.weight", &t.w1, std::vector<uint64_t>{i, h}},
                                     std::tuple{"w3.weight", &t.w3, std::vector<uint64_t>{i, h}},
                                     std::tuple{"w2.weight", &t.w2, std::vector<uint64_t>{h, i}}}) {
    auto loaded = loadF32(prefix + suffix, shape);
    if (!loaded) return makeError(loaded.error());
    *dest = std::move(loaded).value();
  }
  return t;
}

}  // namespace moe
