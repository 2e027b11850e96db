// moe-bench: the speed report of DESIGN §8, from one run on one machine. It starts the cluster of a
// YAML (router + shards on loopback, as moe-cluster does) and, per batch size, measures:
//   - the cluster: tokens/s and p50/p99 latency of Router.forward;
//   - the same layer in this process (BLAS backend, the --check computation): tokens/s;
//   - their ratio (the cost of being distributed);
// and the expert FFN kernel's GFLOP/s next to the dense GEMMs of the same total shape (the
// compute limit, bench/kernel_rate.h), batch-1 p50 next to the DRAM time of the bytes it reads;
// and the concurrency scenarios (bench/concurrency_scenario.h): C clients × B tokens each, with the
// ratio of 16×8 to 1×128 tokens/s (what batching across concurrent requests recovers); and the
// round-trip overhead of one forward of 1 token through moe::Client and through a raw Cap'n Proto
// request (the caller's time minus the router's own, p50/p99).
// Medians of --repeats runs; the machine and command go in the report. Not a test: no thresholds.
#include <kj/async-io.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <functional>
#include <iostream>
#include <numeric>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "bench/concurrency_scenario.h"
#include "bench/dram_bandwidth.h"
#include "bench/kernel_rate.h"
#include "client/client.h"
#include "client/reference/in_process_layer.h"
#include "common/checkpoint.h"
#include "common/cli.h"
#include "common/config.h"
#include "common/dtype.h"
#include "common/log.h"
#include "common/proto/moe.capnp.h"
#include "common/rpc_endpoint.h"
#include "common/rpc_tls.h"
#include "common/tensor_wire.h"
#include "deploy/local/local_cluster.h"
#include "kernels/backend.h"
#include "kernels/blas_backend.h"

namespace {

using Clock = std::chrono::steady_clock;

double seconds(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

double percentile(std::vector<double> v, double p) {
  std::sort(v.begin(), v.end());
  size_t idx = static_cast<size_t>(std::ceil(p / 100.0 * static_cast<double>(v.size())));
  return v[std::min(v.size() - 1, idx == 0 ? 0 : idx - 1)];
}

std::string cpuModel() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("model name", 0) == 0) return line.substr(line.find(':') + 2);
  }
  return "unknown CPU";
}

// tokens/s of 16x8 over 1x128 when both ran, else 0.
double concurrencyRatio(const std::vector<moe::bench::ConcurrencyResult>& results) {
  double many = 0, one = 0;
  for (const auto& r : results) {
    if (r.scenario.clients == 16 && r.scenario.batch == 8) many = r.tokensPerSecond;
    if (r.scenario.clients == 1 && r.scenario.batch == 128) one = r.tokensPerSecond;
  }
  return one > 0 ? many / one : 0;
}

void printConcurrency(const std::vector<moe::bench::ConcurrencyResult>& results) {
  if (results.empty()) return;
  std::printf(
      "\nconcurrent clients × tokens per request (medians of tokens/s; latency over every "
      "request)\n\n| clients × batch | tokens/s | p50 ms | p99 ms | errors |\n"
      "|---|---:|---:|---:|---:|\n");
  for (const auto& r : results) {
    std::printf("| %u × %u | %.1f | %.2f | %.2f | %llu |\n", r.scenario.clients, r.scenario.batch,
                r.tokensPerSecond, r.p50Ms, r.p99Ms, static_cast<unsigned long long>(r.errors));
  }
  if (const double ratio = concurrencyRatio(results); ratio > 0)
    std::printf("\n16 × 8 / 1 × 128 tokens/s: %.2f\n", ratio);
}

// One forward of 1 token, timed from the caller: the round trip, the router's own time for it
// (ForwardStats.totalMicros, receipt to reply) and their difference, the overhead of the client
// and the transport, in µs: p50 and p99 over the calls.
struct Overhead {
  double rttP50 = 0, rttP99 = 0, serverP50 = 0, overheadP50 = 0, overheadP99 = 0;
};

// `call` runs one forward and returns the router's microseconds for it.
Overhead measureOverhead(uint64_t calls, const std::function<uint64_t()>& call) {
  std::vector<double> rtt, server, overhead;
  for (uint64_t i = 0; i < calls + calls / 10; ++i) {  // the first tenth warms up, not counted
    const auto t0 = Clock::now();
    const uint64_t serverMicros = call();
    const double us = std::chrono::duration<double, std::micro>(Clock::now() - t0).count();
    if (i < calls / 10) continue;
    rtt.push_back(us);
    server.push_back(static_cast<double>(serverMicros));
    overhead.push_back(us - static_cast<double>(serverMicros));
  }
  return {percentile(rtt, 50), percentile(rtt, 99), percentile(server, 50),
          percentile(overhead, 50), percentile(overhead, 99)};
}

struct Row {
  uint32_t batch;
  double clusterTps, p50Ms, p99Ms, localTps;
};

}  // namespace

int main(int argc, char** argv) {
  std::string config = "deploy/local/default-cluster.yaml";
  std::vector<uint32_t> batches;  // from --batches
  int repeats = 5;
  bool json = false;
  std::string scenarioList = "1x128,16x8,64x1,1x1";
  uint64_t scenarioTokens = 2048;
  uint64_t overheadCalls = 2000;
  double dramGBps = 0;  // 0: measure
  int batch1Samples = 100;
  CLI::App app{
      "The speed report: starts the cluster of a YAML on loopback and, per batch size, compares\n"
      "Router.forward with the same layer computed in this process; then the expert kernel vs a\n"
      "plain GEMM (both in the experts' dtype, model.dtype), batch 1 vs the DRAM bound, and\n"
      "concurrent clients × tokens per request. Not a test: no thresholds.",
      "moe-bench"};
  moe::cli::setUp(app);
  app.add_option("--config", config, "Cluster YAML")->check(CLI::ExistingFile);
  std::string batchList = "1,8,64,256,1024";
  app.add_option("--batches", batchList, "Batch sizes to measure, or none")
      ->transform(CLI::Validator(
          [](std::string& v) {
            return v == "none" ? std::string()
                               : moe::cli::unsignedList(1, 1 << 20, /*allowEmpty=*/false)(v);
          },
          "LIST|none"));
  app.add_option("--concurrency", scenarioList, "Concurrency scenarios CLIENTSxBATCH,..., or none")
      ->transform(CLI::Validator(
          [](std::string& v) -> std::string {
            if (v == "none") return "";
            // Each item: CLIENTS in 1..4096, x, BATCH in 1..65536.
            std::stringstream ss(v);
            for (std::string item; std::getline(ss, item, ',');) {
              const auto x = item.find('x');
              if (x == std::string::npos) return "'" + item + "' is not CLIENTSxBATCH";
              std::string clients = item.substr(0, x), batch = item.substr(x + 1);
              if (auto why = moe::cli::unsignedInteger(1, 4096)(clients); !why.empty())
                return "clients in '" + item + "': " + why;
              if (auto why = moe::cli::unsignedInteger(1, 65536)(batch); !why.empty())
                return "batch in '" + item + "': " + why;
            }
            return moe::bench::parseScenarios(v).empty() ? "'" + v + "' is not CLIENTSxBATCH,..."
                                                         : std::string();
          },
          "LIST|none"));
  app.add_option("--concurrency-tokens", scenarioTokens, "Tokens per concurrency scenario run")
      ->transform(moe::cli::unsignedInteger(1, 1 << 24));
  app.add_option("--repeats", repeats, "Runs per measurement (medians are reported)")
      ->transform(moe::cli::integer(1, 1000));
  app.add_option("--client-overhead", overheadCalls,
                 "Forward calls of 1 token timed for the client round-trip overhead (0: skip)")
      ->transform(moe::cli::unsignedInteger(0, 1'000'000));
  app.add_option("--dram-gbps", dramGBps,
                 "DRAM read bandwidth for the batch-1 memory bound (default: measured, all cores "
                 "streaming a 2 GiB buffer)")
      ->transform(moe::cli::number(0.1, 1e5));
  app.add_option("--batch1-samples", batch1Samples,
                 "Requests timed at batch 1 (each a fresh token; its p50 is compared with the DRAM "
                 "bound)")
      ->transform(moe::cli::integer(1, 100000));
  app.add_flag("--json", json, "Print the report as JSON");
  if (auto status = moe::cli::parse(app, argc, argv)) return *status;
  batches.clear();
  if (batchList != "none") {
    for (uint64_t b : moe::cli::splitUnsignedList(batchList))
      batches.push_back(static_cast<uint32_t>(b));
  }
  const auto scenarios = scenarioList == "none" ? std::vector<moe::bench::ConcurrencyScenario>{}
                                                : moe::bench::parseScenarios(scenarioList);
  moe::setLogComponent("moe-bench");
  moe::setLogLevel(moe::LogLevel::kWarn);
  moe::deploy::LocalClusterOptions opts;
  opts.configPath = config;
  opts.logDir = "/tmp/moe-bench-logs";
  auto cluster = moe::deploy::LocalCluster::start(opts);
  if (!cluster) {
    std::cerr << "moe-bench: " << cluster.error() << "\n";
    return 1;
  }
  const auto& cfg = cluster.value()->config();

  // The first MoE layer (layer 0 is dense in e.g. DeepSeek with first_k_dense_replace), with the
  // cluster's routing options so both sides do the same work.
  auto ckpt = moe::Checkpoint::open(cfg.modelPath);
  if (!ckpt) {
    std::cerr << "moe-bench: " << ckpt.error() << "\n";
    return 1;
  }
  const uint32_t layer = ckpt.value()->config().moeLayers.front();
  auto blas = moe::kernels::createBackend(moe::kernels::BackendKind::kBlas);
  auto local = moe::client::InProcessModel::load(cfg.modelPath, std::move(blas).value(), {layer},
                                                 cfg.routing);
  if (!local) {
    std::cerr << "moe-bench: " << local.error() << "\n";
    return 1;
  }
  const auto& m = local.value()->config();
  const uint32_t H = m.hiddenSize;

  moe::RpcClientTls tls;  // config `tls:`: the router's port takes TLS only
  if (cfg.tls) {
    auto t = moe::RpcTls::load(*cfg.tls);
    if (!t) {
      std::cerr << "moe-bench: " << t.error() << "\n";
      return 2;
    }
    tls.tls = std::move(t).value();
  }
  auto io = kj::setupAsyncIo();
  auto conn = moe::connectRpc(*io.provider, io.provider->getTimer(), cfg.router.listen, 5000, tls)
                  .wait(io.waitScope);
  auto router = conn->bootstrap<moe::proto::Router>();

  std::mt19937_64 rng(3);
  std::normal_distribution<float> normal;
  std::vector<Row> rows;
  // Every run sends fresh tokens (a decode stream routes each token anew, so one repeated token
  // would measure one routing choice with its experts warm in cache); the cluster's runs go back
  // to back, then the in-process ones, so neither competes with the other for the cores.
  auto randomTokens = [&](uint32_t B) {
    std::vector<float> x(size_t{B} * H);
    for (auto& v : x) v = normal(rng);
    return x;
  };
  for (uint32_t B : batches) {
    if (B > cfg.router.maxTokens) continue;
    const int runs = B == 1 ? std::max(repeats, batch1Samples) : repeats;
    std::vector<double> clusterTimes, localTimes;
    for (int r = 0; r < runs + 1; ++r) {  // the first run warms up, not counted
      const std::vector<float> x = randomTokens(B);
      auto req = router.forwardRequest();
      req.setLayer(layer);
      const uint32_t shape[2] = {B, H};
      auto dst = moe::initF32(req.initHidden(), shape);
      std::copy(x.begin(), x.end(), dst.begin());
      const auto t0 = Clock::now();
      req.send().wait(io.waitScope);
      if (r > 0) clusterTimes.push_back(seconds(t0, Clock::now()));
    }
    for (int r = 0; r < runs + 1; ++r) {
      const std::vector<float> x = randomTokens(B);
      std::vector<float> y(x.size());
      const auto t0 = Clock::now();
      if (auto s = local.value()->forward(layer, x, B, y); !s) {
        std::cerr << "moe-bench: " << s.message() << "\n";
        return 1;
      }
      if (r > 0) localTimes.push_back(seconds(t0, Clock::now()));
    }
    const double c50 = percentile(clusterTimes, 50), l50 = percentile(localTimes, 50);
    rows.push_back({B, B / c50, c50 * 1e3, percentile(clusterTimes, 99) * 1e3, B / l50});
    if (!json) std::cerr << "batch " << B << " done\n";
  }

  const auto concurrency = moe::bench::runScenarios(io.waitScope, router, layer, H, scenarios,
                                                    scenarioTokens, std::min(repeats, 3));

  // Round-trip overhead of 1 token: moe::Client (the library engines link, promise form on this
  // loop) and, for comparison, a raw Cap'n Proto request built by hand as above.
  std::optional<Overhead> clientOverhead, rawOverhead;
  if (overheadCalls > 0) {
    std::vector<float> token(H);
    for (auto& v : token) v = normal(rng);
    moe::ClientOptions clientOptions;
    if (cfg.tls) clientOptions.tls = moe::ClientTls{cfg.tls->ca, cfg.tls->cert, cfg.tls->key};
    moe::Client client(*io.provider, cfg.router.listen, clientOptions);
    clientOverhead = measureOverhead(overheadCalls, [&]() {
      return client.forwardAsync(layer, moe::HiddenStates::f32(token, 1))
          .wait(io.waitScope)
          .serverMicros;
    });
    rawOverhead = measureOverhead(overheadCalls, [&]() -> uint64_t {
      auto req = router.forwardRequest();
      req.setLayer(layer);
      const uint32_t shape[2] = {1, H};
      auto dst = moe::initF32(req.initHidden(), shape);
      std::copy(token.begin(), token.end(), dst.begin());
      return req.send().wait(io.waitScope).getStats().getTotalMicros();
    });
  }

  // The kernel against the GEMM rate: one expertFfn call over all experts for the largest batch
  // (top-k rows each) vs the dense GEMMs of the same total shape, in the experts' dtype
  // (model.dtype resolved, as the shards hold them).
  const uint32_t B = batches.empty() ? 256 : *std::max_element(batches.begin(), batches.end());
  const moe::DType dtype = moe::resolveModelDType(cfg.modelDtype, ckpt.value()->expertsDType());
  // With the threads the shards compute with (the first shard's `threads`; 0: all cores).
  const uint32_t shardThreads = cfg.shards.empty() ? 0 : cfg.shards.front().threads;
  const unsigned kernelThreads =
      shardThreads > 0 ? shardThreads : std::thread::hardware_concurrency();
  moe::kernels::setBlasThreads(static_cast<int>(kernelThreads));
  moe::bench::KernelRate kernel;
  try {
    kernel = moe::bench::measureKernelRate(dtype, H, m.intermediateSize, m.numExperts, m.topK, B,
                                           repeats);
  } catch (const std::exception& e) {
    std::cerr << "moe-bench: kernel rate: " << e.what() << "\n";
    return 1;
  }
  const std::string& kernelPath = kernel.kernelPath;
  const double ffnGflops = kernel.ffnGflops, gemmGflops = kernel.denseGflops;

  // The DRAM read bandwidth of this machine (all cores), unless given.
  const bool dramMeasured = dramGBps <= 0;
  if (dramMeasured) {
    dramGBps =
        moe::bench::measureDramReadGBps(std::thread::hardware_concurrency(), size_t{2} << 30);
  }

  // The memory limit at batch 1: one token reads its top-k experts' three matrices once.
  const double expertBytes =
      3.0 * H * m.intermediateSize * static_cast<double>(moe::dtypeSize(dtype));
  const double dramBoundMs = m.topK * expertBytes / (dramGBps * 1e9) * 1e3;
  double p50Batch1 = 0;
  for (const Row& r : rows) {
    if (r.batch == 1) p50Batch1 = r.p50Ms;
  }
  const std::string wire(moe::dtypeName(cfg.router.wireDtype));

  utsname u{};
  uname(&u);
  const std::string machine = cpuModel() + ", " +
                              std::to_string(std::thread::hardware_concurrency()) + " cores, " +
                              u.sysname + " " + u.release;
  if (json) {
    std::printf("{\"machine\": \"%s\", \"config\": \"%s\", \"repeats\": %d, \"rows\": [",
                machine.c_str(), config.c_str(), repeats);
    for (size_t i = 0; i < rows.size(); ++i) {
      const Row& r = rows[i];
      std::printf(
          "%s{\"batch\": %u, \"cluster_tokens_per_s\": %.1f, \"p50_ms\": %.3f, \"p99_ms\": %.3f, "
          "\"in_process_tokens_per_s\": %.1f, \"cluster_over_in_process\": %.3f}",
          i ? ", " : "", r.batch, r.clusterTps, r.p50Ms, r.p99Ms, r.localTps,
          r.clusterTps / r.localTps);
    }
    std::printf("], \"concurrency\": [");
    for (size_t i = 0; i < concurrency.size(); ++i) {
      const auto& c = concurrency[i];
      std::printf(
          "%s{\"scenario\": \"%s\", \"tokens_per_s\": %.1f, \"p50_ms\": %.3f, "
          "\"p99_ms\": %.3f, \"errors\": %llu}",
          i ? ", " : "", c.scenario.name().c_str(), c.tokensPerSecond, c.p50Ms, c.p99Ms,
          static_cast<unsigned long long>(c.errors));
    }
    std::printf("], \"ratio_16x8_over_1x128\": %.3f", concurrencyRatio(concurrency));
    std::printf(
        ", \"expert_ffn_gflops\": %.2f, \"gemm_gflops\": %.2f, \"ffn_over_gemm\": %.3f, "
        "\"kernel_rows_per_expert\": %zu, \"kernel_threads\": %u, \"dense_gemm\": \"%s\", "
        "\"dram_gbps\": %.2f, "
        "\"dram_gbps_measured\": %s",
        ffnGflops, gemmGflops, ffnGflops / gemmGflops, kernel.rowsPerExpert, kernelThreads,
        kernel.denseWhat.c_str(), dramGBps, dramMeasured ? "true" : "false");
    std::printf(
        ", \"dtype\": \"%s\", \"wire_dtype\": \"%s\", \"kernel_path\": \"%s\", "
        "\"p50_batch1_ms\": %.3f, \"dram_bound_batch1_ms\": %.3f",
        moe::dtypeName(dtype).data(), wire.c_str(), kernelPath.c_str(), p50Batch1, dramBoundMs);
    if (clientOverhead) {
      std::printf(", \"one_token_round_trip_us\": {");
      const char* sep = "";
      for (const auto& [name, o] :
           {std::pair{"client", *clientOverhead}, {"raw_capnp", *rawOverhead}}) {
        std::printf(
            "%s\"%s\": {\"rtt_p50\": %.1f, \"rtt_p99\": %.1f, \"server_p50\": %.1f, "
            "\"overhead_p50\": %.1f, \"overhead_p99\": %.1f}",
            sep, name, o.rttP50, o.rttP99, o.serverP50, o.overheadP50, o.overheadP99);
        sep = ", ";
      }
      std::printf("}");
    }
    std::printf("}\n");
  } else {
    std::printf(
        "moe-bench — %s\nmachine: %s\nmodel: hidden %u, intermediate %u, %u experts, top-%u; %zu "
        "shards; "
        "medians of %d runs\nexperts: %s (kernel %s); wire: %s\n\n",
        config.c_str(), machine.c_str(), H, m.intermediateSize, m.numExperts, m.topK,
        cfg.shards.size(), repeats, moe::dtypeName(dtype).data(), kernelPath.c_str(), wire.c_str());
    std::printf(
        "| batch | cluster tokens/s | p50 ms | p99 ms | in-process tokens/s | cluster / in-process "
        "|\n");
    std::printf("|---:|---:|---:|---:|---:|---:|\n");
    for (const Row& r : rows) {
      std::printf("| %u | %.1f | %.2f | %.2f | %.1f | %.2f |\n", r.batch, r.clusterTps, r.p50Ms,
                  r.p99Ms, r.localTps, r.clusterTps / r.localTps);
    }
    std::printf(
        "\nexpert FFN kernel (one call, %u experts × %zu rows, batch %u top-%u): %.1f GFLOP/s; "
        "dense "
        "GEMMs of the same total shape (%s): %.1f GFLOP/s; ratio %.2f\n",
        m.numExperts, kernel.rowsPerExpert, B, m.topK, ffnGflops, kernel.denseWhat.c_str(),
        gemmGflops, ffnGflops / gemmGflops);
    if (p50Batch1 > 0) {
      std::printf(
          "batch 1: p50 %.2f ms vs %.2f ms DRAM time of the %u experts' %s bytes it reads (%.0f "
          "MB at %.1f GB/s, %s): %.2f×\n",
          p50Batch1, dramBoundMs, m.topK, moe::dtypeName(dtype).data(), m.topK * expertBytes / 1e6,
          dramGBps, dramMeasured ? "measured, all cores" : "--dram-gbps", p50Batch1 / dramBoundMs);
    }
    printConcurrency(concurrency);
    if (clientOverhead) {
      std::printf(
          "\none forward of 1 token, %llu calls: round trip from the caller, the router's own time "
          "(ForwardStats.totalMicros) and the difference, the client + transport overhead (µs)\n\n"
          "| caller | round trip p50 | p99 | router p50 | overhead p50 | overhead p99 |\n"
          "|---|---:|---:|---:|---:|---:|\n",
          static_cast<unsigned long long>(overheadCalls));
      for (const auto& [name, o] :
           {std::pair{"moe::Client", *clientOverhead}, {"raw Cap'n Proto request", *rawOverhead}}) {
        std::printf("| %s | %.0f | %.0f | %.0f | %.0f | %.0f |\n", name, o.rttP50, o.rttP99,
                    o.serverP50, o.overheadP50, o.overheadP99);
      }
    }
  }
  cluster.value()->stop();
  return 0;
}
