// moe-make-checkpoint: writes a synthetic Mixtral-layout checkpoint (config.json + safetensors) so
// the cluster can be run and benchmarked without downloading a real model.
#include <charconv>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <optional>
#include <string>
#include <string_view>

#include "common/checkpoint.h"

namespace {

constexpr int kUsageExit = 2;

void printUsage(std::FILE* to) {
  const moe::SyntheticModelSpec d;
  std::fprintf(
      to,
      "usage: moe-make-checkpoint --out DIR [--hidden N] [--intermediate N] [--experts N]\n"
      "                           [--top-k N] [--layers N] [--seed N] [--dtype f32|bf16|f16]\n"
      "                           [--files N]\n"
      "Writes DIR/config.json and Mixtral MoE weights (gate + experts of every layer).\n"
      "defaults: --hidden %u --intermediate %u --experts %u --top-k %u --layers %u --seed %llu\n"
      "          --dtype %s --files %u\n",
      d.hiddenSize, d.intermediateSize, d.numExperts, d.topK, d.numLayers,
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

int usageError(const std::string& problem) {
  std::fprintf(stderr, "moe-make-checkpoint: %s\n", problem.c_str());
  printUsage(stderr);
  return kUsageExit;
}

}  // namespace

int main(int argc, char** argv) {
  moe::SyntheticModelSpec spec;
  std::string out;
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

  moe::Status s = moe::writeSyntheticCheckpoint(spec, out);
  if (!s) {
    std::fprintf(stderr, "moe-make-checkpoint: %s\n", s.message().c_str());
    return 1;
  }

  const uint64_t h = spec.hiddenSize;
  const uint64_t params =
      uint64_t{spec.numLayers} * spec.numExperts * (h + 3 * h * spec.intermediateSize);
  const uint64_t bytes = params * moe::dtypeSize(spec.dtype);
  std::printf(
      "wrote %s: mixtral hidden=%u intermediate=%u experts=%u top-k=%u layers=%u seed=%llu %s, "
      "%u file%s, %llu params, %.1f MiB of weights (%llu bytes)\n",
      out.c_str(), spec.hiddenSize, spec.intermediateSize, spec.numExperts, spec.topK,
      spec.numLayers, static_cast<unsigned long long>(spec.seed),
      std::string(moe::dtypeName(spec.dtype)).c_str(), spec.numFiles, spec.numFiles == 1 ? "" : "s",
      static_cast<unsigned long long>(params), static_cast<double>(bytes) / (1 << 20),
      static_cast<unsigned long long>(bytes));
  return 0;
}
