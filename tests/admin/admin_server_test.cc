// Tests for common/admin_server: real HTTP over loopback sockets against a server on port 0 —
// every endpoint, the readiness state machine, keep-alive, HEAD, bad methods and paths, malformed
// requests, idle timeouts, bind failures, concurrent clients and teardown with open connections;
// HTTPS (admin.tls) with certificates the openssl CLI makes per run, client certificates, reload,
// and admin.expose_paths. The clients are a few lines of POSIX sockets and of OpenSSL's client
// API, independent of the Beast code under test.
#include "common/admin_server.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <prometheus/counter.h>
#include <prometheus/registry.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <atomic>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "common/log.h"

namespace moe {
namespace {

using namespace std::chrono_literals;

::testing::AssertionResult contains(std::string_view text, std::string_view part) {
  if (text.find(part) != std::string_view::npos) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << "\"" << text << "\"\n  does not contain \"" << part << "\"";
}

struct HttpResponse {
  int status = 0;
  std::map<std::string, std::string> headers;  // names lower-cased
  std::string body;
  std::string header(const std::string& name) const {
    auto it = headers.find(name);
    return it == headers.end() ? std::string() : it->second;
  }
};

// A blocking HTTP/1.1 client connection. Every receive gives up after a few seconds, so a server
// bug fails the test instead of hanging it.
class Connection {
 public:
  explicit Connection(uint16_t port) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    if (fd_ < 0) return;
    timeval tv{};
    tv.tv_sec = 3;
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
      ::close(fd_);
      fd_ = -1;
    }
  }
  ~Connection() {
    if (fd_ >= 0) ::close(fd_);
  }
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  bool connected() const { return fd_ >= 0; }
  int fd() const { return fd_; }

  bool send(std::string_view raw) {
    while (!raw.empty()) {
      ssize_t n = ::send(fd_, raw.data(), raw.size(), MSG_NOSIGNAL);
      if (n <= 0) return false;
      raw.remove_prefix(static_cast<size_t>(n));
    }
    return true;
  }

  // Reads exactly one response (a HEAD response has no body), leaving later bytes buffered for
  // the next call. nullopt when the connection closes or times out first.
  std::optional<HttpResponse> read(bool head = false) {
    size_t headerEnd;
    while ((headerEnd = buffer_.find("\r\n\r\n")) == std::string::npos) {
      if (!fill()) return std::nullopt;
    }
    HttpResponse res;
    std::string_view headText(buffer_.data(), headerEnd);
    size_t lineEnd = headText.find("\r\n");
    std::string_view statusLine = headText.substr(0, lineEnd);
    if (statusLine.substr(0, 5) != "HTTP/" || statusLine.size() < 12) return std::nullopt;
    res.status = std::stoi(std::string(statusLine.substr(9, 3)));
    while (lineEnd != std::string_view::npos) {
      size_t start = lineEnd + 2;
      lineEnd = headText.find("\r\n", start);
      std::string_view line = headText.substr(start, lineEnd - start);
      size_t colon = line.find(':');
      if (colon == std::string_view::npos) continue;
      std::string name(line.substr(0, colon));
      for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      std::string_view value = line.substr(colon + 1);
      while (!value.empty() && value.front() == ' ') value.remove_prefix(1);
      res.headers[name] = std::string(value);
    }
    buffer_.erase(0, headerEnd + 4);
    size_t length =
        head
            ? 0
            : std::stoul(res.header("content-length").empty() ? "0" : res.header("content-length"));
    while (buffer_.size() < length) {
      if (!fill()) return std::nullopt;
    }
    res.body = buffer_.substr(0, length);
    buffer_.erase(0, length);
    return res;
  }

  // True when the server closes the connection (EOF or reset) with nothing more to read.
  bool closedByPeer() {
    char c;
    ssize_t n = ::recv(fd_, &c, 1, 0);
    return n == 0 || (n < 0 && errno == ECONNRESET);
  }

 private:
  bool fill() {
    char chunk[4096];
    ssize_t n = ::recv(fd_, chunk, sizeof(chunk), 0);
    if (n <= 0) return false;
    buffer_.append(chunk, static_cast<size_t>(n));
    return true;
  }

  int fd_ = -1;
  std::string buffer_;
};

std::string requestText(std::string_view method, std::string_view path, bool keepAlive = true) {
  std::string text = std::string(method) + " " + std::string(path) + " HTTP/1.1\r\nHost: test\r\n";
  if (!keepAlive) text += "Connection: close\r\n";
  return text + "\r\n";
}

// One request on a fresh connection.
std::optional<HttpResponse> fetch(uint16_t port, std::string_view path,
                                  std::string_view method = "GET") {
  Connection conn(port);
  if (!conn.connected() || !conn.send(requestText(method, path, /*keepAlive=*/false))) {
    return std::nullopt;
  }
  return conn.read(method == "HEAD");
}

std::unique_ptr<AdminServer> startServer(AdminOptions options) {
  auto server = AdminServer::start(std::move(options));
  EXPECT_TRUE(server.isOk()) << server.error();
  return server.isOk() ? std::move(server).value() : nullptr;
}

TEST(AdminServer, BindsAnEphemeralPortAndAnswersHealthz) {
  auto server = startServer({});
  ASSERT_TRUE(server);
  EXPECT_NE(server->port(), 0);
  auto res = fetch(server->port(), "/healthz");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
  EXPECT_EQ(res->body, "ok\n");
  EXPECT_EQ(res->header("content-type"), "text/plain; charset=utf-8");
}

TEST(AdminServer, HealthzIgnoresQueryString) {
  auto server = startServer({});
  ASSERT_TRUE(server);
  auto res = fetch(server->port(), "/healthz?verbose=1");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
}

TEST(AdminServer, ReadinessFollowsTheStateMachine) {
  auto server = startServer({});
  ASSERT_TRUE(server);
  uint16_t port = server->port();
  EXPECT_EQ(server->state(), ServiceState::kStarting);

  server->setState(ServiceState::kStarting, "loading weights");
  auto res = fetch(port, "/readyz");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 503);
  EXPECT_EQ(res->body, "starting: loading weights\n");

  server->setState(ServiceState::kReady);
  res = fetch(port, "/readyz");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
  EXPECT_EQ(res->body, "ready\n");

  server->setState(ServiceState::kNotReady, "shard-1 unreachable");
  res = fetch(port, "/readyz");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 503);
  EXPECT_EQ(res->body, "not ready: shard-1 unreachable\n");
  // Liveness does not depend on readiness.
  res = fetch(port, "/healthz");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);

  server->setState(ServiceState::kReady);
  res = fetch(port, "/readyz");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);

  server->setState(ServiceState::kDraining);
  res = fetch(port, "/readyz");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 503);
  EXPECT_EQ(res->body, "draining\n");

  // Draining is terminal: a late "dependency back" does not make the service ready again.
  server->setState(ServiceState::kReady);
  EXPECT_EQ(server->state(), ServiceState::kDraining);
  res = fetch(port, "/readyz");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 503);
  EXPECT_EQ(res->body, "draining\n");
}

TEST(AdminServer, MetricsServesTheRegistry) {
  auto registry = std::make_shared<prometheus::Registry>();
  auto& counter = prometheus::BuildCounter()
                      .Name("moe_admin_test_requests_total")
                      .Help("Requests seen by the admin test.")
                      .Register(*registry)
                      .Add({{"shard", "0"}});
  AdminOptions options;
  options.registry = registry;
  auto server = startServer(std::move(options));
  ASSERT_TRUE(server);

  auto res = fetch(server->port(), "/metrics");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
  EXPECT_EQ(res->header("content-type"), "text/plain; version=0.0.4; charset=utf-8");
  EXPECT_TRUE(contains(res->body, "# TYPE moe_admin_test_requests_total counter"));
  EXPECT_TRUE(contains(res->body, "moe_admin_test_requests_total{shard=\"0\"} 0\n"));

  counter.Increment(3);
  res = fetch(server->port(), "/metrics");
  ASSERT_TRUE(res);
  EXPECT_TRUE(contains(res->body, "moe_admin_test_requests_total{shard=\"0\"} 3\n"));
}

TEST(AdminServer, MetricsWithoutRegistryIsEmpty) {
  auto server = startServer({});
  ASSERT_TRUE(server);
  auto res = fetch(server->port(), "/metrics");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
  EXPECT_EQ(res->body, "");
}

TEST(AdminServer, InfoServesTheCallbacksJson) {
  const std::string json = R"({"service":"router","version":"0.1.0","experts":8})";
  std::atomic<int> calls{0};
  AdminOptions options;
  options.info = [&] {
    ++calls;
    return json;
  };
  auto server = startServer(std::move(options));
  ASSERT_TRUE(server);
  auto res = fetch(server->port(), "/v1/info");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
  EXPECT_EQ(res->header("content-type"), "application/json");
  EXPECT_EQ(res->body, json);
  EXPECT_EQ(calls.load(), 1);
}

TEST(AdminServer, InfoWithoutCallbackIsAnEmptyObject) {
  auto server = startServer({});
  ASSERT_TRUE(server);
  auto res = fetch(server->port(), "/v1/info");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
  EXPECT_EQ(res->body, "{}");
}

TEST(AdminServer, ThrowingInfoCallbackIs500AndServerKeepsServing) {
  AdminOptions options;
  options.info = []() -> std::string { throw std::runtime_error("config not loaded"); };
  auto server = startServer(std::move(options));
  ASSERT_TRUE(server);
  auto res = fetch(server->port(), "/v1/info");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 500);
  res = fetch(server->port(), "/healthz");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
}

TEST(AdminServer, UnknownPathIs404ListingTheEndpoints) {
  auto server = startServer({});
  ASSERT_TRUE(server);
  auto res = fetch(server->port(), "/nope");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 404);
  for (const char* endpoint : {"/metrics", "/healthz", "/readyz", "/v1/info"}) {
    EXPECT_TRUE(contains(res->body, endpoint));
  }
}

TEST(AdminServer, OtherMethodsAre405WithAllow) {
  auto server = startServer({});
  ASSERT_TRUE(server);
  auto res = fetch(server->port(), "/healthz", "POST");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 405);
  EXPECT_EQ(res->header("allow"), "GET, HEAD");

  // A small request body is read and discarded; the connection stays usable.
  Connection conn(server->port());
  ASSERT_TRUE(conn.connected());
  ASSERT_TRUE(conn.send("PUT /readyz HTTP/1.1\r\nHost: test\r\nContent-Length: 5\r\n\r\nhello" +
                        requestText("GET", "/healthz")));
  res = conn.read();
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 405);
  res = conn.read();
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
}

TEST(AdminServer, HeadSendsHeadersWithoutBody) {
  auto server = startServer({});
  ASSERT_TRUE(server);
  Connection conn(server->port());
  ASSERT_TRUE(conn.connected());
  ASSERT_TRUE(conn.send(requestText("HEAD", "/healthz")));
  auto res = conn.read(/*head=*/true);
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
  EXPECT_EQ(res->header("content-length"), "3");
  EXPECT_EQ(res->body, "");
  // No stray body bytes: the next response on the connection parses cleanly.
  ASSERT_TRUE(conn.send(requestText("GET", "/healthz")));
  res = conn.read();
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
  EXPECT_EQ(res->body, "ok\n");
}

TEST(AdminServer, KeepAliveServesSeveralRequestsOnOneConnection) {
  auto server = startServer({});
  ASSERT_TRUE(server);
  server->setState(ServiceState::kReady);
  Connection conn(server->port());
  ASSERT_TRUE(conn.connected());

  ASSERT_TRUE(conn.send(requestText("GET", "/healthz")));
  auto res = conn.read();
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
  EXPECT_NE(res->header("connection"), "close");

  ASSERT_TRUE(conn.send(requestText("GET", "/readyz")));
  res = conn.read();
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
  EXPECT_EQ(res->body, "ready\n");

  // Pipelined: two requests in one write, two responses in order.
  ASSERT_TRUE(conn.send(requestText("GET", "/v1/info") + requestText("GET", "/nope")));
  res = conn.read();
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
  res = conn.read();
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 404);
}

TEST(AdminServer, ConnectionCloseAndHttp10CloseAfterTheResponse) {
  auto server = startServer({});
  ASSERT_TRUE(server);
  {
    Connection conn(server->port());
    ASSERT_TRUE(conn.send(requestText("GET", "/healthz", /*keepAlive=*/false)));
    auto res = conn.read();
    ASSERT_TRUE(res);
    EXPECT_EQ(res->status, 200);
    EXPECT_TRUE(conn.closedByPeer());
  }
  {
    Connection conn(server->port());
    ASSERT_TRUE(conn.send("GET /healthz HTTP/1.0\r\n\r\n"));
    auto res = conn.read();
    ASSERT_TRUE(res);
    EXPECT_EQ(res->status, 200);
    EXPECT_TRUE(conn.closedByPeer());
  }
}

TEST(AdminServer, MalformedRequestIs400AndClosesTheConnectionOnly) {
  auto server = startServer({});
  ASSERT_TRUE(server);
  for (const char* garbage : {"GARBAGE\r\n\r\n", "GET /healthz HTTP/9.9\r\n\r\n",
                              "GET /healthz HTTP/1.1\r\nno colon here\r\n\r\n",
                              "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"}) {
    SCOPED_TRACE(::testing::PrintToString(garbage));
    Connection conn(server->port());
    ASSERT_TRUE(conn.connected());
    ASSERT_TRUE(conn.send(garbage));
    auto res = conn.read();
    ASSERT_TRUE(res) << "no response";
    EXPECT_EQ(res->status, 400);
    EXPECT_EQ(res->body.rfind("malformed HTTP request: ", 0), 0u) << res->body;
    EXPECT_TRUE(conn.closedByPeer());
  }
  // Oversized headers are refused too (a 413 when the server's answer arrives before the reset
  // its unread bytes cause).
  {
    Connection conn(server->port());
    ASSERT_TRUE(
        conn.send("GET /healthz HTTP/1.1\r\nX-Big: " + std::string(64 * 1024, 'a') + "\r\n\r\n"));
    if (auto res = conn.read()) {
      EXPECT_EQ(res->status, 413);
    }
  }
  auto res = fetch(server->port(), "/healthz");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
}

TEST(AdminServer, IdleConnectionsAreClosedAfterTheTimeout) {
  AdminOptions options;
  options.idleTimeoutMs = 200;
  auto server = startServer(std::move(options));
  ASSERT_TRUE(server);
  Connection silent(server->port());
  Connection partial(server->port());
  ASSERT_TRUE(silent.connected());
  ASSERT_TRUE(partial.connected());
  ASSERT_TRUE(partial.send("GET /healthz HTTP/1.1\r\nHost: te"));
  auto start = std::chrono::steady_clock::now();
  EXPECT_TRUE(silent.closedByPeer());
  EXPECT_TRUE(partial.closedByPeer());
  EXPECT_LT(std::chrono::steady_clock::now() - start, 2s);
  auto res = fetch(server->port(), "/healthz");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
}

TEST(AdminServer, BindFailureNamesTheAddress) {
  auto first = startServer({});
  ASSERT_TRUE(first);
  std::string address = "127.0.0.1:" + std::to_string(first->port());
  AdminOptions options;
  options.listen = address;
  auto second = AdminServer::start(std::move(options));
  ASSERT_FALSE(second.isOk());
  EXPECT_TRUE(contains(second.error(), address));
  // The first server is unaffected.
  auto res = fetch(first->port(), "/healthz");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
}

TEST(AdminServer, ListenAcceptsHostNames) {
  auto server = startServer({.listen = "localhost:0"});
  ASSERT_TRUE(server);
  auto res = fetch(server->port(), "/healthz");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
}

TEST(AdminServer, BadListenAddressesAreErrorsNamingThem) {
  for (const char* listen :
       {"nonsense", "127.0.0.1:99999", "127.0.0.1:http", "127.0.0.1:", ":-1"}) {
    AdminOptions options;
    options.listen = listen;
    auto server = AdminServer::start(std::move(options));
    ASSERT_FALSE(server.isOk()) << listen;
    EXPECT_TRUE(contains(server.error(), listen));
  }
}

TEST(AdminServer, ManyConcurrentClientsAllSucceed) {
  auto registry = std::make_shared<prometheus::Registry>();
  auto& counter = prometheus::BuildCounter()
                      .Name("moe_admin_test_hits_total")
                      .Help("Hits.")
                      .Register(*registry)
                      .Add({});
  AdminOptions options;
  options.registry = registry;
  options.info = [] { return std::string(R"({"ok":true})"); };
  auto server = startServer(std::move(options));
  ASSERT_TRUE(server);
  const uint16_t port = server->port();

  constexpr int kThreads = 20;
  constexpr int kRequests = 10;
  std::atomic<int> ok{0};
  std::atomic<bool> stop{false};
  // Readiness flips while clients read it: /readyz must always be a whole 200 or 503 answer.
  // Each flip logs a transition; keep the test output readable.
  setLogLevel(LogLevel::kWarn);
  server->setState(ServiceState::kNotReady, "flip");
  std::thread flipper([&] {
    for (int i = 0; !stop.load(); ++i) {
      server->setState(i % 2 ? ServiceState::kReady : ServiceState::kNotReady, "flip");
      counter.Increment();
      std::this_thread::sleep_for(100us);
    }
  });
  std::vector<std::thread> clients;
  for (int t = 0; t < kThreads; ++t) {
    clients.emplace_back([&, t] {
      // Half the clients reuse one keep-alive connection, half open one per request.
      std::unique_ptr<Connection> shared;
      if (t % 2 == 0) shared = std::make_unique<Connection>(port);
      for (int i = 0; i < kRequests; ++i) {
        static constexpr const char* kPaths[] = {"/healthz", "/readyz", "/metrics", "/v1/info"};
        const char* path = kPaths[(t + i) % 4];
        std::optional<HttpResponse> res;
        if (shared) {
          if (shared->send(requestText("GET", path))) res = shared->read();
        } else {
          res = fetch(port, path);
        }
        if (!res) {
          ADD_FAILURE() << path << ": no response";
          continue;
        }
        bool good = std::string_view(path) == "/readyz"
                        ? (res->status == 200 && res->body == "ready\n") ||
                              (res->status == 503 && res->body == "not ready: flip\n")
                        : res->status == 200;
        if (good) {
          ++ok;
        } else {
          ADD_FAILURE() << path << " -> " << res->status << " " << res->body;
        }
      }
    });
  }
  for (auto& c : clients) c.join();
  stop = true;
  flipper.join();
  setLogLevel(LogLevel::kInfo);
  EXPECT_EQ(ok.load(), kThreads * kRequests);
}

TEST(AdminServer, DestructionWithOpenConnectionsIsPromptAndClosesThem) {
  auto server = startServer({});
  ASSERT_TRUE(server);
  std::vector<std::unique_ptr<Connection>> idle;
  for (int i = 0; i < 3; ++i) {
    idle.push_back(std::make_unique<Connection>(server->port()));
    ASSERT_TRUE(idle.back()->connected());
  }
  // One connection mid-keep-alive, one that sent half a request.
  ASSERT_TRUE(idle[0]->send(requestText("GET", "/healthz")));
  ASSERT_TRUE(idle[0]->read());
  ASSERT_TRUE(idle[1]->send("GET /heal"));
  auto start = std::chrono::steady_clock::now();
  server.reset();
  EXPECT_LT(std::chrono::steady_clock::now() - start, 1s);
  for (auto& conn : idle) EXPECT_TRUE(conn->closedByPeer());
}

// ---------------------------------------------------------------------------------------------
// admin.expose_paths

TEST(AdminServer, ExposePathsServesOnlyTheListedPaths) {
  std::atomic<int> placements{0};
  const AdminAction placement = [&placements](std::string, std::function<void(AdminReply)> done) {
    ++placements;
    done({StatusCode::kOk, "placed"});
  };
  const struct {
    std::optional<std::vector<std::string>> expose;
    std::string method, path;
    int status;
    const char* body;  // a part of the body
  } cases[] = {
      {std::vector<std::string>{"/metrics", "/healthz"}, "GET", "/healthz", 200, "ok"},
      {std::vector<std::string>{"/metrics", "/healthz"}, "GET", "/healthz?x=1", 200, "ok"},
      {std::vector<std::string>{"/metrics", "/healthz"}, "GET", "/readyz", 404,
       "not found: /readyz\nexposed paths (admin.expose_paths): /metrics /healthz\n"},
      {std::vector<std::string>{"/metrics", "/healthz"}, "GET", "/v1/info", 404, "not found"},
      {std::vector<std::string>{"/metrics", "/healthz"}, "POST", "/admin/placement", 404,
       "exposed paths (admin.expose_paths): /metrics /healthz"},
      {std::vector<std::string>{"/healthz", "/admin/placement"}, "POST", "/admin/placement", 200,
       "placed"},
      {std::vector<std::string>{"/healthz", "/admin/placement"}, "GET", "/metrics", 404,
       "not found: /metrics"},
      {std::vector<std::string>{}, "GET", "/healthz", 404, "not found: /healthz"},  // none
      {std::nullopt, "GET", "/v1/info", 200, "{}"},                                 // unset: all
      {std::nullopt, "POST", "/admin/placement", 200, "placed"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.method + " " + c.path);
    AdminOptions options;
    options.exposePaths = c.expose;
    auto server = startServer(options);
    ASSERT_TRUE(server);
    server->setAction("/admin/placement", placement);
    server->setState(ServiceState::kReady);
    const int before = placements.load();
    auto res = fetch(server->port(), c.path, c.method);
    ASSERT_TRUE(res);
    EXPECT_EQ(res->status, c.status);
    EXPECT_TRUE(contains(res->body, c.body));
    // A POST action runs only when its path is served.
    const bool ran = c.method == "POST" && c.status == 200;
    EXPECT_EQ(placements.load() - before, ran ? 1 : 0);
  }
}

// ---------------------------------------------------------------------------------------------
// admin.tls

// Certificates made with the openssl CLI into a fresh directory: a CA, a server certificate for
// localhost / 127.0.0.1, a client certificate from the same CA, and a second ("rogue") CA with a
// client and a server certificate of its own.
class TlsFiles {
 public:
  TlsFiles() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "moe-admin-tls-XXXXXX").string();
    if (::mkdtemp(tmpl.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    dir_ = tmpl;
    ca("ca");
    ca("rogue-ca");
    leaf("server", "ca", "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth");
    leaf("client", "ca", "extendedKeyUsage=clientAuth");
    leaf("rogue-client", "rogue-ca", "extendedKeyUsage=clientAuth");
    leaf("rogue-server", "rogue-ca",
         "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth");
  }
  ~TlsFiles() {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  TlsFiles(const TlsFiles&) = delete;
  TlsFiles& operator=(const TlsFiles&) = delete;

  std::string path(const std::string& name) const { return (dir_ / name).string(); }
  // admin.tls with the server certificate `server` (e.g. "server") signed by `ca`.
  TlsConfig config(bool clientAuth, const std::string& server = "server",
                   const std::string& caName = "ca") const {
    return {path(caName + ".pem"), path(server + ".pem"), path(server + ".key"), clientAuth};
  }

 private:
  void run(const std::string& command) const {
    const std::string full = "cd '" + dir_.string() + "' && " + command + " >openssl.log 2>&1";
    if (std::system(full.c_str()) != 0) {
      std::ifstream log(dir_ / "openssl.log");
      std::string text((std::istreambuf_iterator<char>(log)), std::istreambuf_iterator<char>());
      throw std::runtime_error("openssl failed: " + command + "\n" + text);
    }
  }
  void ca(const std::string& name) const {
    run("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj "
        "/CN=" +
        name + " -keyout " + name + ".key -out " + name + ".pem");
  }
  void leaf(const std::string& name, const std::string& caName, const std::string& ext) {
    std::ofstream(dir_ / (name + ".ext")) << ext << "\n";
    run("openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=" + name +
        " -keyout " + name + ".key -out " + name + ".csr");
    run("openssl x509 -req -days 2 -in " + name + ".csr -CA " + caName + ".pem -CAkey " + caName +
        ".key -set_serial " + std::to_string(++serial_) + " -extfile " + name + ".ext -out " +
        name + ".pem");
  }

  std::filesystem::path dir_;
  int serial_ = 0;
};

struct TlsClient {
  std::string ca;    // verifies the server against this CA (hostname localhost)
  std::string cert;  // client certificate and key; "" = none
  std::string key;
};

// One HTTPS request (Connection: close) on a fresh connection, with OpenSSL's client API.
// nullopt when the handshake, the write or the read fails, or the answer is not HTTP.
std::optional<HttpResponse> fetchTls(uint16_t port, std::string_view path, const TlsClient& client,
                                     std::string_view method = "GET") {
  std::unique_ptr<SSL_CTX, decltype(&SSL_CTX_free)> ctx(SSL_CTX_new(TLS_client_method()),
                                                        SSL_CTX_free);
  if (!ctx || SSL_CTX_load_verify_locations(ctx.get(), client.ca.c_str(), nullptr) != 1) {
    ADD_FAILURE() << "cannot load " << client.ca;
    return std::nullopt;
  }
  SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_PEER, nullptr);
  if (!client.cert.empty() &&
      (SSL_CTX_use_certificate_chain_file(ctx.get(), client.cert.c_str()) != 1 ||
       SSL_CTX_use_PrivateKey_file(ctx.get(), client.key.c_str(), SSL_FILETYPE_PEM) != 1)) {
    ADD_FAILURE() << "cannot load " << client.cert;
    return std::nullopt;
  }
  Connection conn(port);
  if (!conn.connected()) return std::nullopt;
  std::unique_ptr<SSL, decltype(&SSL_free)> ssl(SSL_new(ctx.get()), SSL_free);
  SSL_set_fd(ssl.get(), conn.fd());
  SSL_set_tlsext_host_name(ssl.get(), "localhost");
  SSL_set1_host(ssl.get(), "localhost");
  ERR_clear_error();
  if (SSL_connect(ssl.get()) != 1) return std::nullopt;
  const std::string request = requestText(method, path, /*keepAlive=*/false);
  if (SSL_write(ssl.get(), request.data(), static_cast<int>(request.size())) <= 0) {
    return std::nullopt;
  }
  std::string raw;
  char chunk[4096];
  for (int n; (n = SSL_read(ssl.get(), chunk, sizeof(chunk))) > 0;) raw.append(chunk, n);
  size_t headerEnd = raw.find("\r\n\r\n");
  if (raw.substr(0, 5) != "HTTP/" || raw.size() < 12 || headerEnd == std::string::npos) {
    return std::nullopt;
  }
  HttpResponse res;
  res.status = std::stoi(raw.substr(9, 3));
  res.body = raw.substr(headerEnd + 4);
  return res;
}

// Polls until `done` holds (a handshake failure is counted on the admin thread, after the client
// has already seen its connection end) or a second passes.
bool eventually(const std::function<bool()>& done) {
  for (auto end = std::chrono::steady_clock::now() + 1s; std::chrono::steady_clock::now() < end;) {
    if (done()) return true;
    std::this_thread::sleep_for(5ms);
  }
  return done();
}

class AdminTls : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { files_ = std::make_unique<TlsFiles>(); }
  static void TearDownTestSuite() { files_.reset(); }

  std::unique_ptr<AdminServer> startTls(TlsConfig tls) {
    AdminOptions options;
    options.tls = std::move(tls);
    options.onTlsHandshakeFailure = [this] { ++failures_; };
    return startServer(std::move(options));
  }
  static TlsClient client(const std::string& cert = "", const std::string& ca = "ca") {
    return {files_->path(ca + ".pem"), cert.empty() ? "" : files_->path(cert + ".pem"),
            cert.empty() ? "" : files_->path(cert + ".key")};
  }

  static std::unique_ptr<TlsFiles> files_;
  std::atomic<int> failures_{0};
};
std::unique_ptr<TlsFiles> AdminTls::files_;

TEST_F(AdminTls, ServesHttpsAndClosesPlaintextConnections) {
  auto server = startTls(files_->config(/*clientAuth=*/false));
  ASSERT_TRUE(server);
  EXPECT_TRUE(server->tlsEnabled());
  auto res = fetchTls(server->port(), "/healthz", client());
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
  EXPECT_EQ(res->body, "ok\n");
  EXPECT_EQ(failures_.load(), 0);

  // Plain HTTP gets no HTTP answer at all, only a closed connection; it is counted.
  Connection plain(server->port());
  ASSERT_TRUE(plain.connected());
  ASSERT_TRUE(plain.send(requestText("GET", "/healthz")));
  EXPECT_FALSE(plain.read());
  EXPECT_TRUE(eventually([&] { return failures_.load() == 1; })) << failures_.load();

  // A client that trusts another CA refuses the server; the server counts the aborted handshake.
  EXPECT_FALSE(fetchTls(server->port(), "/healthz", client("", "rogue-ca")));
  EXPECT_TRUE(eventually([&] { return failures_.load() == 2; })) << failures_.load();

  // A bare TCP connect-and-close (a port check) is not a failed handshake; the server serves on.
  { Connection probe(server->port()); }
  res = fetchTls(server->port(), "/readyz", client());
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 503);
  EXPECT_EQ(failures_.load(), 2);
}

TEST_F(AdminTls, ClientAuthRequiresACertificateTheCaSigned) {
  auto server = startTls(files_->config(/*clientAuth=*/true));
  ASSERT_TRUE(server);
  const struct {
    const char* clientCert;
    bool served;
  } cases[] = {
      {"client", true},
      {"", false},              // no client certificate
      {"rogue-client", false},  // signed by another CA
      {"client", true},         // failures above closed only their own connections
  };
  int expectedFailures = 0;
  for (const auto& c : cases) {
    SCOPED_TRACE(std::string("client cert: ") + c.clientCert);
    auto res = fetchTls(server->port(), "/healthz", client(c.clientCert));
    EXPECT_EQ(res.has_value(), c.served);
    if (res) {
      EXPECT_EQ(res->status, 200);
    }
    if (!c.served) ++expectedFailures;
    EXPECT_TRUE(eventually([&] { return failures_.load() == expectedFailures; }))
        << failures_.load();
  }
}

TEST_F(AdminTls, StartFailsNamingTheFileItCannotUse) {
  const TlsConfig good = files_->config(true);
  const struct {
    TlsConfig tls;
    std::string expected;
  } cases[] = {
      {{good.ca, files_->path("missing.pem"), good.key, true},
       "admin.tls.cert (" + files_->path("missing.pem") + "): cannot read: No such file"},
      {{good.ca, good.cert, files_->path("missing.key"), true},
       "admin.tls.key (" + files_->path("missing.key") + "): cannot read: No such file"},
      {{good.ca, files_->path("server.key"), good.key, true},
       "admin.tls.cert (" + files_->path("server.key") + "): cannot load a PEM certificate"},
      {{good.ca, good.cert, files_->path("client.key"), true},
       "admin.tls.key (" + files_->path("client.key") + ")"},
      {{files_->path("server.key"), good.cert, good.key, true},
       "admin.tls.ca (" + files_->path("server.key") + "): cannot load a PEM CA bundle"},
  };
  for (const auto& c : cases) {
    AdminOptions options;
    options.tls = c.tls;
    auto server = AdminServer::start(std::move(options));
    ASSERT_FALSE(server.isOk());
    EXPECT_TRUE(contains(server.error(), c.expected));
  }
}

// reloadTls() (SIGHUP) picks up replaced files for new connections; a broken file leaves the old
// certificates in use.
TEST_F(AdminTls, ReloadPicksUpNewFilesAndKeepsTheOldOnesOnError) {
  const std::string dir = files_->path("reload");
  std::filesystem::create_directories(dir);
  auto put = [&](const std::string& from, const std::string& to) {
    std::filesystem::copy_file(files_->path(from), dir + "/" + to,
                               std::filesystem::copy_options::overwrite_existing);
  };
  put("server.pem", "cert.pem");
  put("server.key", "key.pem");
  put("ca.pem", "ca.pem");
  auto server = startTls({dir + "/ca.pem", dir + "/cert.pem", dir + "/key.pem", false});
  ASSERT_TRUE(server);
  ASSERT_TRUE(fetchTls(server->port(), "/healthz", client()));
  EXPECT_FALSE(fetchTls(server->port(), "/healthz", client("", "rogue-ca")));

  put("rogue-server.pem", "cert.pem");
  put("rogue-server.key", "key.pem");
  ASSERT_TRUE(server->reloadTls().isOk());
  EXPECT_FALSE(fetchTls(server->port(), "/healthz", client()));
  EXPECT_TRUE(fetchTls(server->port(), "/healthz", client("", "rogue-ca")));

  put("server.key", "key.pem");  // no longer matches cert.pem
  Status s = server->reloadTls();
  EXPECT_FALSE(s.isOk());
  EXPECT_TRUE(contains(s.message(), "admin.tls.key (" + dir + "/key.pem)")) << s.message();
  EXPECT_TRUE(fetchTls(server->port(), "/healthz", client("", "rogue-ca")));  // still the last
}

TEST(AdminServer, ReloadWithoutTlsIsANoOp) {
  auto server = startServer({});
  ASSERT_TRUE(server);
  EXPECT_FALSE(server->tlsEnabled());
  EXPECT_TRUE(server->reloadTls().isOk());
}

}  // namespace
}  // namespace moe
