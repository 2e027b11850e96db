// moe-client: drives traffic at a router and reports throughput and latency; with --check it also
// computes every reply in-process on the same weights and reports the largest difference and
// whether the router chose the same experts for every token (the reply's routing field). It calls
// the router through moe::Client (client/client.h), the library engines link.
#include <kj/async-io.h>
#include <kj/vector.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <iostream>
#include <new>
#include <optional>
#include <random>
#include <span>
#include <sstream>
#include <string>
#include <vector>

#include "client/client.h"
#include "client/npy.h"
#include "client/reference/in_process_layer.h"
#include "common/cli.h"
#include "common/config.h"
#include "common/dtype.h"
#include "common/log.h"
#include "common/rpc_status.h"
#include "common/service_flags.h"
#include "kernels/backend.h"

namespace {

using Clock = std::chrono::steady_clock;

// --check's default tolerance on |cluster - in-process| by the cluster's compute dtype: the
// in-process layer computes in fp32, a bf16/f16 cluster rounds activations to its dtype at every
// GEMM (fp32 accumulation), ~2^-8 (bf16) or 2^-11 (f16) relative per rounding.
double defaultTolerance(moe::DType clusterDtype) {
  switch (clusterDtype) {
    case moe::DType::kF32:
      return 1e-4;
    case moe::DType::kBF16:
      return 5e-2;
    case moe::DType::kF16:
      return 1e-2;
    default:
      break;
  }
  return 1e-4;
}

struct Options {
  std::string config, router, model, input;
  uint64_t tokens = 1000;
  uint32_t batch = 128;
  int layer = -1;  // -1: cycle through every MoE layer
  uint32_t concurrency = 1;
  uint64_t seed = 7;
  moe::DType dtype = moe::DType::kF32;
  bool check = false, json = false, quiet = false;
  double tolerance = -1;  // < 0: kDefaultTolerance for the cluster's dtype (Router.info)
  uint32_t deadlineMs = 60000;
};

// The command line (common/cli.h): the flags, or the status to exit with.
std::optional<int> parse(int argc, char** argv, Options& o) {
  CLI::App app{
      "Drives traffic at a router and reports throughput and latency; with --check it also\n"
      "computes every reply in-process on the same weights and reports the largest difference\n"
      "and whether the router chose the same experts for every token.",
      "moe-client"};
  moe::cli::setUp(app);
  app.footer(
      "Exit status: 0 ok, 1 parity mismatch or internal error, 2 usage or invalid\n"
      "argument, 3.. the first failed call's code (README \"Error codes\").");
  auto* config = app.add_option("--config", o.config,
                                "Cluster YAML: the router's address, its TLS certificates, the "
                                "model and routing options for --check")
                     ->check(CLI::ExistingFile);
  auto* router = app.add_option("--router", o.router, "Router address (instead of --config's)")
                     ->transform(moe::hostPortValidator());
  app.add_option("--tokens", o.tokens, "Tokens to send in total")
      ->transform(moe::cli::unsignedInteger(1, 1'000'000'000));
  app.add_option("--batch", o.batch, "Tokens per request")
      ->transform(moe::cli::unsignedInteger(1, 1u << 20));
  app.add_option("--input", o.input,
                 "Send these tokens ([T, hidden] float32 .npy) instead of "
                 "random ones")
      ->check(CLI::ExistingFile);
  app.add_option("--layer", o.layer, "MoE layer to call (default -1: cycle through all)")
      ->transform(moe::cli::integer(-1, 1'000'000));
  app.add_option("--concurrency", o.concurrency, "Requests in flight at once")
      ->transform(moe::cli::unsignedInteger(1, 4096));
  std::string dtype = "f32";
  app.add_option("--dtype", dtype, "Request dtype")->transform(moe::cli::oneOf({"f32", "bf16"}));
  app.add_option("--seed", o.seed, "Random token seed")->transform(moe::cli::unsignedInteger(0));
  app.add_flag("--check", o.check,
               "Compare every reply with an in-process computation of the layer: output error,\n"
               "and the experts chosen for each token (with --config the cluster's routing:\n"
               "options are applied too)");
  app.add_option("--model", o.model, "Checkpoint for --check (default: model.path of --config)")
      ->check(CLI::ExistingDirectory);
  app.add_option("--tolerance", o.tolerance,
                 "Largest allowed |cluster - in-process| (default: 1e-4 for an f32 cluster, "
                 "looser for bf16/f16 ones, as Router.info reports the cluster's dtype)")
      ->transform(moe::cli::number(0, 1e30));
  app.add_option("--deadline-ms", o.deadlineMs, "Per-request deadline")
      ->transform(moe::cli::unsignedInteger(1, 86'400'000));
  app.add_flag("--json", o.json, "Print the summary as JSON");
  app.add_flag("--quiet", o.quiet, "No progress bar");
  if (auto status = moe::cli::parse(app, argc, argv)) return status;
  if (config->count() == 0 && router->count() == 0)
    return moe::cli::usageError(app, "name the router with --config or --router");
  o.dtype = dtype == "bf16" ? moe::DType::kBF16 : moe::DType::kF32;
  return std::nullopt;
}

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  size_t idx = static_cast<size_t>(std::ceil(p / 100.0 * static_cast<double>(v.size())));
  return v[std::min(v.size() - 1, idx == 0 ? 0 : idx - 1)];
}

void progress(uint64_t done, uint64_t total, double seconds) {
  const int width = 30;
  int filled = total ? static_cast<int>(width * done / total) : width;
  std::fprintf(stderr, "\r[%.*s%*s] %llu/%llu tokens  %.0f tokens/s ", filled,
               "##############################", width - filled, "",
               static_cast<unsigned long long>(done), static_cast<unsigned long long>(total),
               seconds > 0 ? static_cast<double>(done) / seconds : 0.0);
  if (done == total) std::fprintf(stderr, "\n");
  std::fflush(stderr);
}

struct Request {
  uint32_t layer;
  uint64_t first;  // first token index in the input
  uint32_t count;
};

}  // namespace

int main(int argc, char** argv) {
  Options o;
  if (auto status = parse(argc, argv, o)) return *status;
  moe::setLogComponent("moe-client");
  moe::RoutingOptions routingOptions;  // noisy top-k / capacity, when --config says so
  std::optional<moe::ClientTls> tls;   // --config's `tls:`: the router takes TLS only
  if (!o.config.empty()) {
    auto c = moe::loadClusterConfig(o.config);
    if (!c) {
      std::cerr << c.error() << "\n";
      return 2;
    }
    if (o.router.empty()) o.router = c.value().router.listen;
    if (o.model.empty()) o.model = c.value().modelPath;
    routingOptions = c.value().routing;
    if (const auto& t = c.value().tls) tls = moe::ClientTls{t->ca, t->cert, t->key};
  }
  if (o.check && o.model.empty()) {
    std::cerr << "moe-client: --check needs --config or --model\n";
    return 2;
  }

  // moe::Client (client/client.h), the library engines use; its own event loop on this thread.
  std::optional<moe::Client> client;
  uint32_t H = 0;
  std::vector<uint32_t> moeLayers;
  try {
    moe::ClientOptions clientOptions;
    clientOptions.timeout = std::chrono::milliseconds(o.deadlineMs);
    clientOptions.tls = tls;
    client.emplace(o.router, clientOptions);
    const moe::ModelInfo info = client->info();
    H = info.hiddenSize;
    moeLayers = info.moeLayers;
    if (o.tolerance < 0) o.tolerance = defaultTolerance(info.computeDtype);
    // What the cluster serves, on stderr so stdout stays the run's result.
    std::cerr << "moe-client: " << o.router << " serves " << info.family
              << (info.familyName.empty() ? "" : " (" + info.familyName + ")")
              << (info.routingRecipe.empty() ? "" : ", routing: " + info.routingRecipe) << "\n";
  } catch (const moe::ClientError& e) {
    std::cerr << "moe-client: router " << o.router << ": " << e.what() << "\n";
    return moe::exitStatusFor(e.code());
  }
  std::vector<uint32_t> layers = moeLayers;
  if (o.layer >= 0) layers = {static_cast<uint32_t>(o.layer)};

  // Tokens: from a file, or random normal values (seeded).
  std::vector<float> tokens;
  if (!o.input.empty()) {
    auto npy = moe::client::readNpyF32(o.input);
    if (!npy) {
      std::cerr << "moe-client: " << npy.error() << "\n";
      return 2;
    }
    if (npy.value().cols != H) {
      std::cerr << "moe-client: " << o.input << ": hidden size " << npy.value().cols
                << ", the model has " << H << "\n";
      return 2;
    }
    o.tokens = npy.value().rows;
    tokens = std::move(npy.value().values);
  } else {
    try {
      tokens.resize(o.tokens * H);
    } catch (const std::bad_alloc&) {
      std::cerr << "moe-client: --tokens: " << o.tokens << " tokens of hidden size " << H
                << " do not fit in memory\n";
      return 2;
    }
    std::mt19937_64 rng(o.seed);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    for (auto& v : tokens) v = normal(rng);
  }
  if (o.dtype == moe::DType::kBF16) {  // what the router sees: round once, check against the same
    for (auto& v : tokens) v = moe::bf16ToFloat(moe::floatToBf16(v));
  }

  std::unique_ptr<moe::client::InProcessModel> local;
  if (o.check) {
    auto backend = moe::kernels::createBackend(moe::kernels::BackendKind::kBlas);
    if (!backend) {
      std::cerr << "moe-client: " << backend.error() << "\n";
      return 1;
    }
    auto m = moe::client::InProcessModel::load(o.model, std::move(backend).value(), layers,
                                               routingOptions);
    if (!m) {
      std::cerr << "moe-client: --check: " << m.error() << "\n";
      return 1;
    }
    local = std::move(m).value();
  }

  std::vector<Request> requests;
  for (uint64_t first = 0, i = 0; first < o.tokens; first += o.batch, ++i) {
    requests.push_back({layers[i % layers.size()], first,
                        static_cast<uint32_t>(std::min<uint64_t>(o.batch, o.tokens - first))});
  }

  std::vector<std::vector<float>> replies(local ? requests.size() : 0);  // [request][count × H]
  std::vector<std::vector<uint32_t>> replyExperts(replies.size());       // [request][count × k]
  std::vector<double> latencyMs;
  double maxAbsErr = 0, maxRef = 0;
  uint64_t tokensChecked = 0, routingMismatches = 0;
  uint64_t done = 0, errors = 0;
  moe::StatusCode firstErrorCode = moe::StatusCode::kOk;
  std::string firstError;
  size_t nextRequest = 0;
  const bool showProgress = !o.quiet && !o.json;
  const auto start = Clock::now();
  auto elapsed = [&]() { return std::chrono::duration<double>(Clock::now() - start).count(); };

  // Each worker keeps one request in flight; `concurrency` workers run at once.
  std::function<kj::Promise<void>()> worker = [&]() -> kj::Promise<void> {
    if (nextRequest == requests.size()) return kj::READY_NOW;
    const size_t idx = nextRequest++;
    const Request r = requests[idx];
    const float* src = tokens.data() + r.first * H;
    const size_t n = size_t{r.count} * H;
    moe::HiddenStates hidden = moe::HiddenStates::f32(std::span<const float>(src, n), r.count);
    std::vector<uint16_t> half;  // bf16 requests: the bits of the same (already rounded) values
    if (o.dtype == moe::DType::kBF16) {
      half.resize(n);
      for (size_t i = 0; i < n; ++i) half[i] = moe::floatToBf16(src[i]);
      hidden = moe::HiddenStates::half(moe::DType::kBF16, half, r.count);
    }
    moe::ForwardOptions options;
    options.returnRouting = local != nullptr;
    const auto sent = Clock::now();
    return client->forwardAsync(r.layer, hidden, options)
        .then(
            [&, r, idx, sent](moe::ForwardResult&& reply) -> kj::Promise<void> {
              latencyMs.push_back(
                  std::chrono::duration<double, std::milli>(Clock::now() - sent).count());
              if (local) {
                // Kept for checking after the timed loop, so the check does not slow the traffic.
                replies[idx] = std::move(reply.output.values);
                if (reply.routing) replyExperts[idx] = std::move(reply.routing->experts);
              }
              done += r.count;
              if (showProgress) progress(done, o.tokens, elapsed());
              return worker();
            },
            [&, r](kj::Exception&& e) -> kj::Promise<void> {
              ++errors;
              done += r.count;
              if (firstError.empty()) {
                const moe::ClientError error = moe::ClientError::fromException(e);
                firstErrorCode = error.code();
                firstError = error.what();
              }
              return worker();
            });
  };
  kj::Vector<kj::Promise<void>> workers;
  for (uint32_t i = 0; i < o.concurrency; ++i) workers.add(worker());
  kj::joinPromises(workers.releaseAsArray()).wait(client->waitScope());
  const double seconds = elapsed();

  for (size_t i = 0; i < replies.size(); ++i) {
    const Request& r = requests[i];
    if (replies[i].empty()) continue;  // that request failed; already counted
    std::vector<float> want(size_t{r.count} * H);
    moe::client::ReferenceRouting routing;
    auto s =
        local->forward(r.layer, std::span<const float>(tokens.data() + r.first * H, want.size()),
                       r.count, want, {}, &routing);
    if (!s) {
      ++errors;
      if (firstError.empty()) firstError = "in-process computation: " + s.message();
      continue;
    }
    for (size_t j = 0; j < want.size(); ++j) {
      double d = std::fabs(static_cast<double>(replies[i][j]) - want[j]);
      if (!(d <= maxAbsErr)) maxAbsErr = std::isnan(d) ? INFINITY : d;
      maxRef = std::max(maxRef, std::fabs(static_cast<double>(want[j])));
    }
    // The same set of experts per token (the order of equal scores is not part of the contract).
    const size_t k = routing.k;
    for (uint32_t t = 0; t < r.count; ++t) {
      ++tokensChecked;
      if (replyExperts[i].size() != size_t{r.count} * k) {
        ++routingMismatches;
        continue;
      }
      std::vector<uint32_t> a(replyExperts[i].begin() + t * k,
                              replyExperts[i].begin() + (t + 1) * k);
      std::vector<uint32_t> b(routing.ids.begin() + t * k, routing.ids.begin() + (t + 1) * k);
      std::sort(a.begin(), a.end());
      std::sort(b.begin(), b.end());
      if (a != b) ++routingMismatches;
    }
  }
  const double maxRelErr = maxRef > 0 ? maxAbsErr / maxRef : maxAbsErr;

  const double tps = seconds > 0 ? static_cast<double>(o.tokens) / seconds : 0;
  const double p50 = percentile(latencyMs, 50), p99 = percentile(latencyMs, 99);
  const bool parityOk = !o.check || (maxAbsErr <= o.tolerance && routingMismatches == 0);
  std::string layerList;
  for (auto l : layers) {
    if (!layerList.empty()) layerList += ',';
    layerList += std::to_string(l);
  }
  if (o.json) {
    std::printf(
        "{\"router\": \"%s\", \"tokens\": %llu, \"requests\": %zu, \"batch\": %u, \"concurrency\": "
        "%u, "
        "\"errors\": %llu, \"seconds\": %.6f, \"tokens_per_s\": %.3f, \"latency_ms\": {\"p50\": "
        "%.3f, "
        "\"p99\": %.3f}",
        o.router.c_str(), static_cast<unsigned long long>(o.tokens), requests.size(), o.batch,
        o.concurrency, static_cast<unsigned long long>(errors), seconds, tps, p50, p99);
    if (o.check)
      std::printf(
          ", \"max_abs_err\": %.3e, \"max_rel_err\": %.3e, \"tolerance\": %.3e, "
          "\"tokens_checked\": %llu, \"routing_mismatches\": %llu, \"parity\": %s",
          maxAbsErr, maxRelErr, o.tolerance, static_cast<unsigned long long>(tokensChecked),
          static_cast<unsigned long long>(routingMismatches), parityOk ? "true" : "false");
    if (!firstError.empty()) {
      std::string esc;
      for (char ch : firstError)
        esc += (ch == '"' || ch == '\\') ? std::string("\\") + ch
                                         : (ch == '\n' ? std::string("\\n") : std::string(1, ch));
      std::printf(", \"first_error\": \"%s\"", esc.c_str());
    }
    std::printf("}\n");
  } else {
    std::printf(
        "sent %llu tokens in %zu requests (batch %u, concurrency %u, layers %s) to %s in %.3f s\n",
        static_cast<unsigned long long>(o.tokens), requests.size(), o.batch, o.concurrency,
        layerList.c_str(), o.router.c_str(), seconds);
    std::printf("throughput: %.1f tokens/s   latency: p50 %.2f ms  p99 %.2f ms   errors: %llu\n",
                tps, p50, p99, static_cast<unsigned long long>(errors));
    if (!firstError.empty()) std::printf("first error: %s\n", firstError.c_str());
    if (o.check) {
      std::printf(
          "parity vs in-process: max_abs_err=%.3e max_rel_err=%.3e (tolerance %.1e); expert "
          "choices identical for %llu/%llu tokens %s\n",
          maxAbsErr, maxRelErr, o.tolerance,
          static_cast<unsigned long long>(tokensChecked - routingMismatches),
          static_cast<unsigned long long>(tokensChecked), parityOk ? "OK" : "MISMATCH");
    }
  }
  // A failed call ends the program with its code's status (common/rpc_status.h); a parity
  // mismatch or a malformed reply with 1.
  if (firstErrorCode != moe::StatusCode::kOk) return moe::exitStatusFor(firstErrorCode);
  return errors == 0 && parityOk ? 0 : 1;
}
