// Integration-test support implementation.
#include "tests/integration/test_cluster.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <random>
#include <set>
#include <sstream>

#include "common/tensor_wire.h"

namespace moe::testing {

// The kernel may hand the same ephemeral port to two binds in a row once the first is closed, so
// one cluster's YAML could name a port twice ("already used by another service"); a port is handed
// out once per test process.
uint16_t freePort() {
  static std::mutex mutex;
  static std::set<uint16_t> handedOut;
  std::lock_guard lock(mutex);
  for (;;) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = 0;
    bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
    socklen_t len = sizeof(addr);
    getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
    close(fd);
    const uint16_t port = ntohs(addr.sin_port);
    if (handedOut.insert(port).second) return port;
  }
}

std::string freshDir(const std::string& name) {
  static std::atomic<int> counter{0};
  auto dir = std::filesystem::path(::testing::TempDir()) /
             ("moe-" + name + "-" + std::to_string(getpid()) + "-" + std::to_string(counter++));
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir.string();
}

std::string writeCluster(const std::string& name, const ClusterSpec& spec) {
  const std::string dir = freshDir(name);
  std::ostringstream y;
  if (spec.modelPath.empty()) {
    auto s = writeSyntheticCheckpoint(spec.model, dir + "/model");
    EXPECT_TRUE(s.isOk()) << s.message();
    y << "model:\n  path: model\n" << spec.modelYaml;
  } else {
    y << "model:\n  path: " << spec.modelPath << "\n" << spec.modelYaml;
  }
  y << "router:\n  listen: 127.0.0.1:" << freePort()
    << "\n  device: cpu\n  max_tokens: " << spec.maxTokens << "\n"
    << spec.routerYaml;
  if (spec.adminPorts) y << "  admin: 127.0.0.1:" << freePort() << "\n";
  y << "shards:\n";
  for (size_t i = 0; i < spec.shardExperts.size(); ++i) {
    y << "  - name: shard-" << i << "\n    listen: 127.0.0.1:" << freePort()
      << "\n    device: cpu\n    experts: [";
    for (size_t j = 0; j < spec.shardExperts[i].size(); ++j)
      y << (j ? ", " : "") << spec.shardExperts[i][j];
    y << "]\n";
    if (spec.adminPorts) y << "    admin: 127.0.0.1:" << freePort() << "\n";
    if (static_cast<int>(i) == spec.sharedExpertShard) y << "    shared_expert: true\n";
  }
  const RoutingOptions& r = spec.routing;
  if (r.noisyTopk || r.capacityFactor > 0 || r.missingExpert != MissingExpertPolicy::kError) {
    y << "routing:\n";
    if (r.missingExpert != MissingExpertPolicy::kError) {
      y << "  missing_expert: " << missingExpertPolicyName(r.missingExpert) << "\n";
    }
    if (r.noisyTopk) y << "  noisy_topk: {seed: " << r.noiseSeed << "}\n";
    if (r.capacityFactor > 0) {
      y << "  capacity_factor: " << r.capacityFactor << "\n";
      if (r.capacityRenormalize) y << "  capacity_renormalize: true\n";
    }
  }
  y << "timeouts:\n  request_ms: " << spec.requestMs << "\n  shard_call_ms: " << spec.shardCallMs
    << "\n  connect_ms: 1000\n";
  y << spec.topLevelYaml;
  const std::string path = dir + "/cluster.yaml";
  std::ofstream(path) << y.str();
  return path;
}

std::unique_ptr<deploy::LocalCluster> startCluster(const std::string& yamlPath) {
  deploy::LocalClusterOptions o;
  o.configPath = yamlPath;
  o.logDir = std::filesystem::path(yamlPath).parent_path().string() + "/logs";
  o.readyTimeoutMs = 30000;
  auto c = deploy::LocalCluster::start(o);
  if (!c) {
    ADD_FAILURE() << "cluster did not start: " << c.error();
    return nullptr;
  }
  return std::move(c).value();
}

TestClient::TestClient(const std::string& address, const RpcClientTls& tls)
    : io_(kj::setupAsyncIo()) {
  conn_ =
      connectRpc(*io_.provider, io_.provider->getTimer(), address, 2000, tls).wait(io_.waitScope);
}

template <typename T>
Outcome<T> TestClient::wait(kj::Promise<T> promise) {
  Outcome<T> out;
  auto bounded = withDeadline(io_.provider->getTimer(), 60000, kj::mv(promise),
                              "test client: no answer in 60 s");
  try {
    out.value.emplace(bounded.wait(io_.waitScope));
  } catch (const kj::Exception& e) {
    out.error = e.getDescription().cStr();
    out.type = e.getType();
  }
  return out;
}

Outcome<TestClient::ForwardResponse> TestClient::forwardRaw(
    uint32_t layer, kj::Function<void(proto::Tensor::Builder)> fill) {
  auto req = conn_->bootstrap<proto::Router>().forwardRequest();
  req.setLayer(layer);
  fill(req.initHidden());
  return wait(kj::Promise<ForwardResponse>(req.send()));
}

Outcome<TestClient::ForwardResponse> TestClient::forward(uint32_t layer,
                                                         const std::vector<float>& x, uint32_t T,
                                                         uint32_t H) {
  return forwardRaw(layer, [&](proto::Tensor::Builder t) {
    const uint32_t shape[2] = {T, H};
    auto out = initF32(t, shape);
    std::copy(x.begin(), x.begin() + static_cast<long>(size_t{T} * H), out.begin());
  });
}

Outcome<TestClient::ForwardResponse> TestClient::forward(uint32_t layer,
                                                         const std::vector<float>& x, uint32_t T,
                                                         uint32_t H, const ForwardExtras& extras) {
  return wait(forwardAsync(layer, x, T, H, extras));
}

kj::Promise<TestClient::ForwardResponse> TestClient::forwardAsync(uint32_t layer,
                                                                  const std::vector<float>& x,
                                                                  uint32_t T, uint32_t H,
                                                                  const ForwardExtras& extras) {
  auto req = conn_->bootstrap<proto::Router>().forwardRequest();
  req.setLayer(layer);
  const uint32_t shape[2] = {T, H};
  auto hidden = initF32(req.initHidden(), shape);
  std::copy(x.begin(), x.begin() + static_cast<long>(size_t{T} * H), hidden.begin());
  if (!extras.prevLogits.empty()) {
    const uint32_t rows = extras.prevRows != 0 ? extras.prevRows : T;
    const uint32_t E = static_cast<uint32_t>(extras.prevLogits.size() / rows);
    const uint32_t logitShape[2] = {rows, E};
    auto prev = initF32(req.initPrevLogits(), logitShape);
    std::copy(extras.prevLogits.begin(), extras.prevLogits.end(), prev.begin());
  }
  auto options = req.initOptions();
  options.setReturnRouting(extras.returnRouting);
  options.setNoiseSeed(extras.noiseSeed);
  return kj::Promise<ForwardResponse>(req.send());
}

std::vector<Outcome<TestClient::ForwardResponse>> TestClient::waitAll(
    kj::Array<kj::Promise<ForwardResponse>> calls) {
  std::vector<Outcome<ForwardResponse>> out;
  for (auto& call : calls) out.push_back(wait(kj::mv(call)));
  return out;
}

Outcome<capnp::Response<proto::Router::InfoResults>> TestClient::routerInfo() {
  auto req = conn_->bootstrap<proto::Router>().infoRequest();
  return wait(kj::Promise<capnp::Response<proto::Router::InfoResults>>(req.send()));
}

Outcome<TestClient::RunResponse> TestClient::run(
    kj::Function<void(proto::ExpertShard::RunParams::Builder)> fill) {
  auto req = conn_->bootstrap<proto::ExpertShard>().runRequest();
  fill(req);
  return wait(kj::Promise<RunResponse>(req.send()));
}

SyntheticModelSpec smallF32Model() {
  SyntheticModelSpec m;
  m.hiddenSize = 64;
  m.intermediateSize = 96;
  m.numExperts = 8;
  m.topK = 2;
  m.numLayers = 2;
  m.dtype = DType::kF32;
  return m;
}

double maxRelErr(const std::vector<float>& got, const std::vector<float>& want) {
  double diff = 0, scale = 0;
  for (size_t i = 0; i < got.size() && i < want.size(); ++i) {
    diff = std::max(diff, std::fabs(double{got[i]} - want[i]));
    scale = std::max(scale, std::fabs(double{want[i]}));
  }
  return scale > 0 ? diff / scale : diff;
}

std::vector<float> randomTokens(uint32_t T, uint32_t H, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> x(size_t{T} * H);
  for (auto& v : x) v = normal(rng);
  return x;
}

namespace {
std::vector<float> tensorValues(proto::Tensor::Reader t, const std::string& what) {
  auto view = decodeTensor(t, what);
  EXPECT_TRUE(view.isOk()) << view.error();
  if (!view) return {};
  F32Rows rows(view.value());
  return {rows.values().begin(), rows.values().end()};
}
}  // namespace

std::vector<float> outputValues(const TestClient::ForwardResponse& r) {
  return tensorValues(r.getOutput(), "output");
}

std::vector<float> gateLogitValues(const TestClient::ForwardResponse& r) {
  return tensorValues(r.getGateLogits(), "gateLogits");
}

namespace {
std::pair<int, std::string> httpRequest(const std::string& address, const std::string& request) {
  auto colon = address.rfind(':');
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(std::stoi(address.substr(colon + 1))));
  inet_pton(AF_INET, address.substr(0, colon).c_str(), &addr.sin_addr);
  timeval tv{5, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    close(fd);
    return {-1, ""};
  }
  const std::string& req = request;
  if (write(fd, req.data(), req.size()) != static_cast<ssize_t>(req.size())) {
    close(fd);
    return {-1, ""};
  }
  std::string resp;
  char buf[4096];
  ssize_t n;
  while ((n = read(fd, buf, sizeof(buf))) > 0) resp.append(buf, static_cast<size_t>(n));
  close(fd);
  if (resp.rfind("HTTP/1.1 ", 0) != 0) return {-1, resp};
  auto bodyAt = resp.find("\r\n\r\n");
  return {std::stoi(resp.substr(9, 3)), bodyAt == std::string::npos ? "" : resp.substr(bodyAt + 4)};
}
}  // namespace

std::pair<int, std::string> httpGet(const std::string& address, const std::string& path) {
  return httpRequest(
      address, "GET " + path + " HTTP/1.1\r\nHost: " + address + "\r\nConnection: close\r\n\r\n");
}

std::pair<int, std::string> httpPost(const std::string& address, const std::string& path,
                                     const std::string& body) {
  return httpRequest(address, "POST " + path + " HTTP/1.1\r\nHost: " + address +
                                  "\r\nConnection: close\r\nContent-Length: " +
                                  std::to_string(body.size()) + "\r\n\r\n" + body);
}

pid_t spawn(const std::vector<std::string>& args, const std::string& log) {
  const pid_t pid = fork();
  if (pid == 0) {
    if (!std::freopen(log.c_str(), "a", stderr)) _exit(126);
    std::vector<char*> argv;
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    execv(argv[0], argv.data());
    _exit(127);
  }
  return pid;
}

std::pair<int, std::string> runCommand(const std::string& command) {
  std::string out;
  FILE* p = popen((command + " 2>&1").c_str(), "r");
  if (!p) return {-1, "popen failed"};
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), p)) > 0) out.append(buf, n);
  int status = pclose(p);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status), out};
}

}  // namespace moe::testing
