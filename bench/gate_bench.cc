// moe-gate-bench: what each family's routing costs on the router, per batch, from one run on one
// machine. For every router network and option (linear softmax top-k on the backend's fast path,
// + noisy top-k, + capacity; DeepSeek-V3's grouped sigmoid rule; MoE++'s two-layer tanh gate with
// its gating residual and its zero-computation experts; Yuan's attention router) it times the
// router's own work for one MoE layer — gate network, selection, capacity, and MoE++'s router-side
// experts — on synthetic checkpoints of the same hidden size and expert count. Medians of
// --repeats runs, side by side with the plain linear gate. Not a test: no thresholds.
#include <sys/utsname.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "common/checkpoint.h"
#include "common/cli.h"
#include "common/config.h"
#include "kernels/backend.h"
#include "router_service/capacity.h"
#include "router_service/gate_network.h"
#include "router_service/gating.h"
#include "router_service/zero_compute_experts.h"
#include "tools/synthetic_checkpoint.h"

namespace {

using Clock = std::chrono::steady_clock;

struct Variant {
  std::string name;
  std::string modelType;
  moe::RoutingOptions routing;
  uint32_t extraExperts = 0;  // MoE++: the 4 zero-computation experts on top of the FFN ones
};

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

std::string machine() {
  std::ifstream in("/proc/cpuinfo");
  std::string line, cpu = "unknown CPU";
  while (std::getline(in, line)) {
    if (line.rfind("model name", 0) == 0) {
      cpu = line.substr(line.find(':') + 2);
      break;
    }
  }
  utsname u{};
  uname(&u);
  return cpu + ", " + std::to_string(std::thread::hardware_concurrency()) + " cores, " + u.sysname +
         " " + u.release;
}

}  // namespace

int main(int argc, char** argv) {
  uint32_t hidden = 2048, experts = 64, topK = 2;
  std::vector<uint32_t> batches = {1, 64, 1024};
  int repeats = 7;
  CLI::App app{
      "What each family's routing costs on the router, per batch: gate network, selection,\n"
      "capacity and MoE++'s router-side experts, on synthetic checkpoints. Not a test.",
      "moe-gate-bench"};
  moe::cli::setUp(app);
  app.add_option("--hidden", hidden, "Hidden size")->transform(moe::cli::unsignedInteger(1, 65536));
  app.add_option("--experts", experts, "Experts per layer (MoE++ gets 4 more)")
      ->transform(moe::cli::unsignedInteger(2, 4096));
  std::string batchList = "1,64,1024";
  app.add_option("--batches", batchList, "Batch sizes")
      ->transform(moe::cli::unsignedList(1, 1 << 20, /*allowEmpty=*/false));
  app.add_option("--repeats", repeats, "Runs per measurement (medians are reported)")
      ->transform(moe::cli::integer(1, 1000));
  if (auto status = moe::cli::parse(app, argc, argv)) return *status;
  batches.clear();
  for (uint64_t b : moe::cli::splitUnsignedList(batchList))
    batches.push_back(static_cast<uint32_t>(b));
  moe::RoutingOptions noisy, capped;
  noisy.noisyTopk = true;
  noisy.noiseSeed = 1;
  capped.capacityFactor = 1.0;
  const std::vector<Variant> variants = {
      {"mixtral: linear, softmax top-k (backend op)", "mixtral", {}},
      {"mixtral + noisy top-k", "mixtral", noisy},
      {"mixtral + capacity 1.0", "mixtral", capped},
      {"deepseek_v3: grouped sigmoid + bias", "deepseek_v3", {}},
      {"MoE++: two-layer gate, residual, zero-compute",
       "MoE++",
       {},
       moe::kMoePlusPlusZeroComputeExperts},
      {"yuan: attention router", "yuan", {}},
  };

  const auto dir = std::filesystem::temp_directory_path() / "moe-gate-bench";
  auto backend = moe::kernels::createBackend(moe::kernels::BackendKind::kBlas).value();
  std::mt19937_64 rng(5);
  std::normal_distribution<float> normal;
  // times[variant][batch] in seconds
  std::vector<std::vector<double>> times(variants.size());
  for (size_t v = 0; v < variants.size(); ++v) {
    const Variant& var = variants[v];
    moe::SyntheticModelSpec spec;
    spec.modelType = var.modelType;
    spec.hiddenSize = hidden;
    spec.intermediateSize = 16;  // the experts are not timed here; keep the file small
    spec.numExperts = experts + var.extraExperts;
    spec.topK = topK;
    spec.numLayers = 1;
    spec.dtype = moe::DType::kF32;
    spec.normTopkProb = true;
    spec.noiseWeights = var.routing.noisyTopk;
    if (var.modelType == "deepseek_v3") {
      spec.nGroup = 8;
      spec.topkGroup = 4;
      spec.routedScalingFactor = 2.5f;
    }
    const std::string path = (dir / std::to_string(v)).string();
    std::filesystem::remove_all(path);
    if (auto s = moe::writeSyntheticCheckpoint(spec, path); !s) {
      std::cerr << "moe-gate-bench: " << s.message() << "\n";
      return 1;
    }
    auto ckpt = moe::Checkpoint::open(path);
    if (!ckpt) {
      std::cerr << "moe-gate-bench: " << ckpt.error() << "\n";
      return 1;
    }
    const moe::ModelConfig& m = ckpt.value()->config();
    auto gate = moe::router::GateNetwork::load(*ckpt.value(), 0, var.routing);
    if (!gate) {
      std::cerr << "moe-gate-bench: " << gate.error() << "\n";
      return 1;
    }
    std::vector<float> bias;
    if (m.routing.choiceBias) bias = ckpt.value()->scoreCorrectionBias(0).value();
    std::unique_ptr<moe::router::ZeroComputeExperts> zero;
    if (m.numFfnExperts < m.numExperts)
      zero = moe::router::ZeroComputeExperts::load(*ckpt.value(), 0).value();
    for (uint32_t T : batches) {
      std::vector<float> x(size_t{T} * hidden), prev, out(size_t{T} * hidden);
      for (float& f : x) f = normal(rng);
      if (gate.value()->hasResidual()) {
        prev.resize(size_t{T} * m.numExperts);
        for (float& f : prev) f = normal(rng);
      }
      moe::router::GateInputs inputs;
      inputs.prevLogits = prev;
      if (var.routing.noisyTopk) inputs.noiseSeed = var.routing.noiseSeed;
      std::vector<double> runs;
      for (int r = 0; r < repeats + 1; ++r) {  // the first run warms up, not counted
        const auto t0 = Clock::now();
        auto routed =
            moe::router::routeTokens(*backend, *gate.value(), x, T, m, bias, inputs).value();
        moe::router::applyCapacity(routed.decision, var.routing, m.numExperts, m.numFfnExperts);
        if (zero) zero->accumulate(routed.decision, x, m.expertInputScale(), out);
        if (r > 0) runs.push_back(std::chrono::duration<double>(Clock::now() - t0).count());
      }
      times[v].push_back(median(runs));
    }
    std::filesystem::remove_all(path);
  }

  std::printf(
      "moe-gate-bench — the router's work for one MoE layer (gate network, selection, "
      "capacity, MoE++ router-side experts), BLAS backend\nmachine: %s\nhidden %u, %u FFN "
      "experts, top-%u; medians of %d runs; ratio = time / the mixtral linear gate's\n\n",
      machine().c_str(), hidden, experts, topK, repeats);
  std::printf("| routing |");
  for (uint32_t T : batches) std::printf(" T=%u µs | ratio |", T);
  std::printf("\n|---|");
  for (size_t i = 0; i < batches.size(); ++i) std::printf("---:|---:|");
  std::printf("\n");
  for (size_t v = 0; v < variants.size(); ++v) {
    std::printf("| %s |", variants[v].name.c_str());
    for (size_t b = 0; b < batches.size(); ++b)
      std::printf(" %.1f | %.2f |", times[v][b] * 1e6, times[v][b] / times[0][b]);
    std::printf("\n");
  }
  return 0;
}
