// Synthetic Mixtral-layout checkpoints for tests, benchmarks and the default demo model: the same
// files a HuggingFace download has (config.json, model.safetensors or shards + index.json), filled
// with deterministic pseudo-random weights so runs on different machines see identical bytes.
#include <bit>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
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

// Only the MoE tensors are written (router gate + experts of every layer): the cluster serves MoE
// blocks only, and attention/embedding weights would multiply the size for nothing it reads.
Status writeSyntheticCheckpoint(const SyntheticModelSpec& spec, const std::string& dir) {
  const uint64_t h = spec.hiddenSize;
  const uint64_t inter = spec.intermediateSize;

  // A unit is what stays together in one shard: a layer's gate, or one expert's three matrices.
  std::vector<std::vector<TensorSpec>> units;
  for (uint32_t l = 0; l < spec.numLayers; ++l) {
    const std::string prefix = "model.layers." + std::to_string(l) + ".block_sparse_moe.";
    // Gate scale 2/sqrt(H): router logits then have a standard deviation near 1 for unit-scale
    // inputs, so the softmax is far from uniform and top-k picks differ between tokens.
    units.push_back(
        {{prefix + "gate.weight", {spec.numExperts, h}, 2.0f / std::sqrt(static_cast<float>(h))}});
    for (uint32_t e = 0; e < spec.numExperts; ++e) {
      const std::string ep = prefix + "experts." + std::to_string(e) + ".";
      // Fan-in scaling keeps activations O(1) through w1/w3 and back through w2.
      const float inScale = 1.0f / std::sqrt(static_cast<float>(h));
      const float outScale = 1.0f / std::sqrt(static_cast<float>(inter));
      units.push_back({{ep + "w1.weight", {inter, h}, inScale},
                       {ep + "w3.weight", {inter, h}, inScale},
                       {ep + "w2.weight", {h, inter}, outScale}});
    }
  }
  if (Status s = validate(spec, units.size()); !s) return s;

  const fs::path root(dir);
  std::error_code ec;
  fs::create_directories(root, ec);
  if (ec) return Status::error(dir + ": cannot create directory: " + ec.message());

  json config = {
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
