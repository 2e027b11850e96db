// Tests for common/admin_server: real HTTP over loopback sockets against a server on port 0 —
// every endpoint, the readiness state machine, keep-alive, HEAD, bad methods and paths, malformed
// requests, idle timeouts, bind failures, concurrent clients and teardown with open connections.
// The client is a few lines of POSIX sockets, independent of the Beast code under test.
#include "common/admin_server.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <prometheus/counter.h>
#include <prometheus/registry.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <atomic>
#include <cctype>
#include <cerrno>
#include <chrono>
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

}  // namespace
}  // namespace moe
