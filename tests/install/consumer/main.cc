// An engine calling the cluster through the installed moe::Client, outside this build: the
// README's example (between the README markers) and then what an engine relies on — info, the
// routing, batch-invariant outputs, many calls in flight in the promise form, errors with their
// codes. Prints a report that tests/install/install_test.sh compares with expected.txt.
//   engine ROUTER_HOST:PORT
#include <kj/async-io.h>
#include <kj/vector.h>

#include <cmath>
#include <cstdio>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "client/client.h"

namespace {

// max |a - b| / max |b|
double relErr(const std::vector<float>& a, const std::vector<float>& b) {
  double diff = 0, scale = 0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) {
    diff = std::fmax(diff, std::fabs(double{a[i]} - b[i]));
    scale = std::fmax(scale, std::fabs(double{b[i]}));
  }
  return a.size() == b.size() && scale > 0 ? diff / scale : INFINITY;
}

// "InvalidArgument" and whether the message holds `text`, for the report.
std::string errorOf(void (*call)(moe::Client&, const moe::ModelInfo&), moe::Client& client,
                    const moe::ModelInfo& info, const std::string& text) {
  try {
    call(client, info);
    return "no error";
  } catch (const moe::ClientError& e) {
    const bool named = e.message().find(text) != std::string::npos;
    return std::string(moe::statusCodeName(e.code())) +
           (named ? ", names " + text : std::string(": ") + e.what());
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: engine ROUTER_HOST:PORT\n");
    return 2;
  }
  try {
    // README:begin
    moe::Client client(argv[1]);  // connects now; failures throw moe::ClientError
    const moe::ModelInfo info = client.info();
    const uint32_t tokens = 4, H = info.hiddenSize;
    std::vector<float> hidden(tokens * H);  // [tokens, hidden] f32, from the engine's attention
    for (size_t i = 0; i < hidden.size(); ++i) hidden[i] = std::sin(0.37f * static_cast<float>(i));
    moe::ForwardOptions options;
    options.returnRouting = true;
    const moe::ForwardResult result =
        client.forward(info.moeLayers[0], moe::HiddenStates::f32(hidden, tokens), options);
    // result.output.values: [tokens, hidden] f32, the MoE layer's output;
    // result.routing->experts / ->weights: [tokens, top-k]
    // README:end

    std::printf("family %s\nhidden %u\nlayers %u\nmoe layers", info.family.c_str(), H,
                info.numLayers);
    for (uint32_t l : info.moeLayers) std::printf(" %u", l);
    std::printf("\nexperts %u\ntop-k %u\nfingerprint %zu hex digits\nready %s\n", info.numExperts,
                info.topK, info.fingerprint.size(), info.ready ? "yes" : "no");

    bool finite = true, nonzero = false;
    for (float v : result.output.values) {
      finite = finite && std::isfinite(v);
      nonzero = nonzero || v != 0.0f;
    }
    std::printf("output [%u, %u] finite %s nonzero %s\n", result.output.rows, result.output.cols,
                finite ? "yes" : "no", nonzero ? "yes" : "no");
    const moe::RoutingResult& routing = *result.routing;
    bool inRange = routing.experts.size() == size_t{tokens} * info.topK;
    for (uint32_t e : routing.experts) inRange = inRange && e < info.numExperts;
    std::printf("routing k %u, %zu choices, experts in range %s\n", routing.k,
                routing.experts.size(), inRange ? "yes" : "no");

    // Batching does not change a token's answer: one token at a time gives the same rows.
    std::vector<float> oneByOne;
    for (uint32_t t = 0; t < tokens; ++t) {
      auto row = std::span<const float>(hidden).subspan(size_t{t} * H, H);
      auto r = client.forward(info.moeLayers[0], moe::HiddenStates::f32(row, 1));
      oneByOne.insert(oneByOne.end(), r.output.values.begin(), r.output.values.end());
    }
    std::printf("one token at a time = the batch: %s\n",
                relErr(oneByOne, result.output.values) <= 1e-6 ? "yes" : "no");

    // The promise form on the engine's own KJ event loop: 8 calls in flight on one connection.
    {
      std::vector<moe::ForwardResult> sync;
      for (int i = 0; i < 8; ++i)
        sync.push_back(client.forward(info.moeLayers[i % info.moeLayers.size()],
                                      moe::HiddenStates::f32(hidden, tokens)));
      std::thread([&]() {
        auto io = kj::setupAsyncIo();
        moe::Client async(*io.provider, argv[1]);
        kj::Vector<kj::Promise<moe::ForwardResult>> calls;
        for (int i = 0; i < 8; ++i)
          calls.add(async.forwardAsync(info.moeLayers[i % info.moeLayers.size()],
                                       moe::HiddenStates::f32(hidden, tokens)));
        auto results = kj::joinPromises(calls.releaseAsArray()).wait(io.waitScope);
        bool same = results.size() == 8;
        for (size_t i = 0; same && i < results.size(); ++i)
          same = relErr(results[i].output.values, sync[i].output.values) <= 1e-6;
        std::printf("8 in flight (promise form) = one at a time: %s\n", same ? "yes" : "no");
      }).join();
    }

    std::printf("wrong hidden size: %s\n", errorOf(
                                               [](moe::Client& c, const moe::ModelInfo& i) {
                                                 std::vector<float> x(2 * (i.hiddenSize - 1), 1.0f);
                                                 c.forward(i.moeLayers[0],
                                                           moe::HiddenStates::f32(x, 2));
                                               },
                                               client, info, "hidden size")
                                               .c_str());
    std::printf("unknown layer: %s\n", errorOf(
                                           [](moe::Client& c, const moe::ModelInfo& i) {
                                             std::vector<float> x(i.hiddenSize, 1.0f);
                                             c.forward(i.numLayers + 5,
                                                       moe::HiddenStates::f32(x, 1));
                                           },
                                           client, info, "is not an MoE layer")
                                           .c_str());
    std::printf("no router: %s\n",
                errorOf([](moe::Client&, const moe::ModelInfo&) { moe::Client("127.0.0.1:1"); },
                        client, info, "cannot connect")
                    .c_str());
  } catch (const moe::ClientError& e) {
    std::fprintf(stderr, "engine: %s\n", e.what());
    return 1;
  }
  return 0;
}
