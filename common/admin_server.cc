// AdminServer implementation: one io_context on one thread, an async acceptor, and a Beast HTTP
// session per connection ([TLS handshake →] read → answer → write, keep-alive, idle timeout).
// Nothing here throws into Asio: errors are logged and the connection is dropped.
#include "common/admin_server.h"

#include <openssl/ssl.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>
#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>

#include <pthread.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstring>
#include <exception>
#include <map>
#include <mutex>
#include <optional>
#include <string_view>
#include <system_error>
#include <thread>
#include <type_traits>
#include <utility>

#include "common/log.h"
#include "common/metrics_util.h"

namespace moe {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace ssl = asio::ssl;
using tcp = asio::ip::tcp;
using PlainStream = beast::tcp_stream;
using TlsStream = beast::ssl_stream<beast::tcp_stream>;

using Request = http::request<http::string_body>;
using Response = http::response<http::string_body>;

// Admin requests are GETs and small POSTs (a placement YAML); the limits only bound what a
// confused or hostile client can make us buffer.
constexpr uint32_t kMaxHeaderBytes = 8 * 1024;
constexpr uint64_t kMaxBodyBytes = 1024 * 1024;
// After a failed accept (e.g. out of file descriptors) wait before the next one instead of
// spinning on the same error.
constexpr auto kAcceptRetryDelay = std::chrono::milliseconds(100);

constexpr std::string_view kTextType = "text/plain; charset=utf-8";
constexpr std::string_view kMetricsType = "text/plain; version=0.0.4; charset=utf-8";
constexpr std::string_view kJsonType = "application/json";
constexpr std::string_view kEndpointList = "endpoints: /metrics /healthz /readyz /v1/info\n";

std::string_view toStd(beast::string_view s) {
  return {s.data(), s.size()};
}

std::string describe(const tcp::endpoint& ep) {
  std::string host = ep.address().to_string();
  if (ep.address().is_v6()) host = "[" + host + "]";
  return host + ":" + std::to_string(ep.port());
}

// "host:port", "[v6]:port" or ":port" (all interfaces); the host may be a name to resolve.
Result<tcp::endpoint> parseListen(const std::string& listen, asio::io_context& ioc) {
  auto bad = [&](std::string_view why) {
    return makeError("admin server: listen address '" + listen + "' " + std::string(why));
  };
  size_t colon = listen.rfind(':');
  if (colon == std::string::npos) return bad("is not host:port");
  std::string host = listen.substr(0, colon);
  std::string portText = listen.substr(colon + 1);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  uint16_t port = 0;
  auto [end, ec] = std::from_chars(portText.data(), portText.data() + portText.size(), port);
  if (portText.empty() || ec != std::errc() || end != portText.data() + portText.size()) {
    return bad("has no valid port (0-65535)");
  }
  if (host.empty()) return tcp::endpoint(tcp::v4(), port);

  beast::error_code err;
  asio::ip::address address = asio::ip::make_address(host, err);
  if (!err) return tcp::endpoint(address, port);
  tcp::resolver resolver(ioc);
  // passive: addresses to bind, not to connect to; and no AI_ADDRCONFIG, which on a host with
  // only loopback configured would hide even "localhost".
  auto results = resolver.resolve(host, portText, tcp::resolver::passive, err);
  if (err || results.empty()) {
    return bad("does not resolve: " + (err ? err.message() : std::string("no addresses")));
  }
  return results.begin()->endpoint();
}

// Connection errors that are part of normal life (peer went away, idle timeout, shutdown) are
// not worth a warning; anything else (malformed HTTP, limits exceeded) is.
http::status httpStatusFor(StatusCode code) {
  switch (code) {
    case StatusCode::kOk:
      return http::status::ok;
    case StatusCode::kInvalidArgument:
      return http::status::bad_request;
    case StatusCode::kFailedPrecondition:
      return http::status::conflict;
    case StatusCode::kResourceExhausted:
      return http::status::too_many_requests;
    case StatusCode::kUnavailable:
      return http::status::service_unavailable;
    case StatusCode::kDeadlineExceeded:
      return http::status::gateway_timeout;
    default:
      return http::status::internal_server_error;
  }
}

bool isRoutineDisconnect(const beast::error_code& ec) {
  // stream_truncated: a TLS peer that closed without close_notify, as most HTTP clients do.
  return ec == http::error::end_of_stream || ec == http::error::partial_message ||
         ec == ssl::error::stream_truncated || ec == beast::error::timeout ||
         ec == asio::error::eof || ec == asio::error::connection_reset ||
         ec == asio::error::broken_pipe || ec == asio::error::operation_aborted;
}

// A handshake that ended because the peer closed before sending anything (a TCP connect check,
// a port scan's connect) is not counted as a failed handshake; everything else is.
bool isHandshakeFailure(const beast::error_code& ec) {
  return ec != asio::error::eof && ec != asio::error::operation_aborted &&
         ec != ssl::error::stream_truncated;
}

// An OpenSSL server context from admin.tls: TLS 1.2 or later, the certificate chain and key
// (checked to match), and with client_auth a client certificate that `ca` signs is required.
Result<std::shared_ptr<ssl::context>> makeTlsContext(const TlsConfig& tls) {
  std::shared_ptr<ssl::context> ctx;
  try {
    ctx = std::make_shared<ssl::context>(ssl::context::tls_server);
  } catch (const std::exception& e) {
    return makeError(StatusCode::kInternal, std::string("admin.tls: OpenSSL: ") + e.what());
  }
  auto bad = [](const char* key, const std::string& path, const std::string& why) {
    return makeError(StatusCode::kFailedPrecondition,
                     std::string("admin.tls.") + key + " (" + path + "): " + why);
  };
  // OpenSSL reports a missing file as a bare "system lib" error; say what is wrong instead.
  for (auto [key, path] : {std::pair{"cert", &tls.cert}, {"key", &tls.key}, {"ca", &tls.ca}}) {
    if (::access(path->c_str(), R_OK) != 0) {
      return bad(key, *path, std::string("cannot read: ") + std::strerror(errno));
    }
  }
  beast::error_code ec;
  ctx->set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 |
                       ssl::context::no_sslv3 | ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1 |
                       ssl::context::single_dh_use,
                   ec);
  SSL_CTX_set_min_proto_version(ctx->native_handle(), TLS1_2_VERSION);
  if (ctx->use_certificate_chain_file(tls.cert, ec); ec) {
    return bad("cert", tls.cert, "cannot load a PEM certificate chain: " + ec.message());
  }
  if (ctx->use_private_key_file(tls.key, ssl::context::pem, ec); ec) {
    return bad("key", tls.key, "cannot load a PEM private key matching cert: " + ec.message());
  }
  if (SSL_CTX_check_private_key(ctx->native_handle()) != 1) {
    return bad("key", tls.key, "does not match the certificate " + tls.cert);
  }
  if (ctx->load_verify_file(tls.ca, ec); ec) {
    return bad("ca", tls.ca, "cannot load a PEM CA bundle: " + ec.message());
  }
  if (tls.clientAuth) {
    ctx->set_verify_mode(ssl::verify_peer | ssl::verify_fail_if_no_peer_cert, ec);
    // Tells clients which CA their certificate must come from (curl, browsers pick by it).
    if (STACK_OF(X509_NAME)* names = SSL_load_client_CA_file(tls.ca.c_str())) {
      SSL_CTX_set_client_CA_list(ctx->native_handle(), names);
    }
  } else {
    ctx->set_verify_mode(ssl::verify_none, ec);
  }
  return ctx;
}

// The request handlers and the readiness state. Shared by all sessions; thread-safe because
// setState() runs on service threads while requests are answered on the admin thread.
class Endpoints {
 public:
  Endpoints(std::shared_ptr<prometheus::Registry> registry, std::function<std::string()> info,
            bool processMetrics, std::optional<std::vector<std::string>> exposePaths)
      : registry_(std::move(registry)),
        info_(std::move(info)),
        processMetrics_(processMetrics),
        exposePaths_(std::move(exposePaths)) {}

  // admin.expose_paths: whether the request's path (query aside) is served at all.
  bool exposed(const Request& req) const {
    if (!exposePaths_) return true;
    std::string_view target = toStd(req.target());
    std::string_view path = target.substr(0, target.find('?'));
    return std::find(exposePaths_->begin(), exposePaths_->end(), path) != exposePaths_->end();
  }
  // The 404 for a path admin.expose_paths leaves out, naming the ones that are served.
  Response notExposed(const Request& req) const {
    std::string_view target = toStd(req.target());
    std::string body = "not found: " + std::string(target.substr(0, target.find('?'))) +
                       "\nexposed paths (admin.expose_paths):";
    for (const auto& p : *exposePaths_) body += " " + p;
    return reply(req, http::status::not_found, kTextType, body + "\n");
  }

  void setState(ServiceState s, std::string reason) {
    std::lock_guard<std::mutex> lock(mutex_);
    ServiceState old = state_.load();
    if (old == ServiceState::kDraining && s != ServiceState::kDraining) return;
    if (old != s) {
      logInfo("admin: readiness ", serviceStateName(old), " -> ", serviceStateName(s),
              reason.empty() ? "" : ": ", reason);
    }
    reason_ = std::move(reason);
    state_.store(s);
  }
  ServiceState state() const { return state_.load(); }

  void setAction(std::string path, AdminAction action) {
    std::lock_guard<std::mutex> lock(mutex_);
    actions_.insert_or_assign(std::move(path), std::move(action));
  }
  // The action for the request's path, when there is one.
  AdminAction action(const Request& req) const {
    std::string_view target = toStd(req.target());
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = actions_.find(std::string(target.substr(0, target.find('?'))));
    return it == actions_.end() ? AdminAction() : it->second;
  }
  static Response actionResponse(const Request& req, const AdminReply& r) {
    std::string body = r.body;
    if (body.empty() || body.back() != '\n') body += '\n';
    return reply(req, httpStatusFor(r.code), kTextType, std::move(body));
  }

  Response respond(const Request& req) const {
    std::string_view target = toStd(req.target());
    std::string_view path = target.substr(0, target.find('?'));
    bool head = req.method() == http::verb::head;
    enum class Route { kMetrics, kHealthz, kReadyz, kInfo };
    std::optional<Route> route;
    if (path == "/metrics") route = Route::kMetrics;
    if (path == "/healthz") route = Route::kHealthz;
    if (path == "/readyz") route = Route::kReadyz;
    if (path == "/v1/info") route = Route::kInfo;

    if (!route) {
      return reply(req, http::status::not_found, kTextType,
                   "not found: " + std::string(path) + "\n" + std::string(kEndpointList));
    }
    if (req.method() != http::verb::get && !head) {
      Response res = reply(req, http::status::method_not_allowed, kTextType,
                           "method not allowed: " + std::string(toStd(req.method_string())) +
                               " (use GET or HEAD)\n");
      res.set(http::field::allow, "GET, HEAD");
      return res;
    }
    // A throwing callback (info, a custom collectable) must cost one 500, not the admin thread.
    try {
      switch (*route) {
        case Route::kMetrics:
          return reply(req, http::status::ok, kMetricsType, metricsText());
        case Route::kHealthz:
          return reply(req, http::status::ok, kTextType, "ok\n");
        case Route::kReadyz:
          return readiness(req);
        case Route::kInfo:
          return reply(req, http::status::ok, kJsonType, info_ ? info_() : std::string("{}"));
      }
    } catch (const std::exception& e) {
      logWarn("admin: ", path, " failed: ", e.what());
    } catch (...) {
      logWarn("admin: ", path, " failed: unknown exception");
    }
    return reply(req, http::status::internal_server_error, kTextType, "internal error\n");
  }

 private:
  Response readiness(const Request& req) const {
    std::string body;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      switch (state_.load()) {
        case ServiceState::kReady:
          return reply(req, http::status::ok, kTextType, "ready\n");
        case ServiceState::kStarting:
          body = reason_.empty() ? "starting\n" : "starting: " + reason_ + "\n";
          break;
        case ServiceState::kNotReady:
          body = reason_.empty() ? "not ready\n" : "not ready: " + reason_ + "\n";
          break;
        case ServiceState::kDraining:
          body = "draining\n";
          break;
      }
    }
    return reply(req, http::status::service_unavailable, kTextType, std::move(body));
  }

  static Response reply(const Request& req, http::status status, std::string_view type,
                        std::string body) {
    Response res(status, req.version());
    res.set(http::field::server, "moe-admin");
    res.set(http::field::content_type, beast::string_view(type.data(), type.size()));
    res.set(http::field::cache_control, "no-store");  // probes and scrapes want the live answer
    res.keep_alive(req.keep_alive());
    if (req.method() == http::verb::head) {
      res.content_length(body.size());  // HEAD: the headers GET would send, no body
    } else {
      res.body() = std::move(body);
      res.prepare_payload();
    }
    return res;
  }

  std::string metricsText() const {
    std::vector<prometheus::MetricFamily> families;
    if (registry_) families = registry_->Collect();
    if (processMetrics_) {
      for (auto& f : collectProcessMetrics()) families.push_back(std::move(f));
    }
    return families.empty() ? std::string() : prometheus::TextSerializer().Serialize(families);
  }

  const std::shared_ptr<prometheus::Registry> registry_;
  const std::function<std::string()> info_;
  const bool processMetrics_;
  const std::optional<std::vector<std::string>> exposePaths_;
  mutable std::mutex mutex_;  // guards reason_ and actions_, keeps state_ and reason_ consistent
  std::map<std::string, AdminAction> actions_;  // POST path -> action
  std::atomic<ServiceState> state_{ServiceState::kStarting};
  std::string reason_;
};

// One HTTP connection, plain (PlainStream) or HTTPS (TlsStream). Owned by the shared_ptr its
// pending operation holds: when an operation ends without starting another (error, close,
// timeout), the session and its socket go away.
template <class Stream>
class Session : public std::enable_shared_from_this<Session<Stream>> {
 public:
  static constexpr bool kTls = std::is_same_v<Stream, TlsStream>;

  // `tls` (HTTPS only) is the context the stream was made from, kept alive with it even when a
  // reload swaps in a new one; `onHandshakeFailure` counts failed handshakes.
  Session(Stream stream, std::shared_ptr<ssl::context> tls, const Endpoints& endpoints,
          std::chrono::milliseconds idleTimeout, const std::function<void()>& onHandshakeFailure)
      : tls_(std::move(tls)),
        stream_(std::move(stream)),
        endpoints_(endpoints),
        idleTimeout_(idleTimeout),
        onHandshakeFailure_(onHandshakeFailure) {
    beast::error_code ec;
    tcp::endpoint peer = beast::get_lowest_layer(stream_).socket().remote_endpoint(ec);
    peer_ = ec ? std::string("?") : describe(peer);
  }

  void start() {
    if constexpr (kTls) {
      beast::get_lowest_layer(stream_).expires_after(idleTimeout_);
      stream_.async_handshake(
          ssl::stream_base::server,
          beast::bind_front_handler(&Session::onHandshake, this->shared_from_this()));
    } else {
      read();
    }
  }

 private:
  // A plaintext client, a certificate the CA did not sign, no client certificate when one is
  // required: the connection closes, nothing else changes.
  void onHandshake(beast::error_code ec) {
    if (!ec) return read();
    if (isHandshakeFailure(ec)) {
      logWarn("admin: TLS handshake with ", peer_, " failed: ", ec.message());
      if (onHandshakeFailure_) onHandshakeFailure_();
    } else {
      logDebug("admin: ", peer_, ": closed during the TLS handshake: ", ec.message());
    }
  }

  void read() {
    parser_.emplace();  // a parser reads one message; keep-alive needs a fresh one each time
    parser_->header_limit(kMaxHeaderBytes);
    parser_->body_limit(kMaxBodyBytes);
    beast::get_lowest_layer(stream_).expires_after(idleTimeout_);
    http::async_read(stream_, buffer_, *parser_,
                     beast::bind_front_handler(&Session::onRead, this->shared_from_this()));
  }

  void onRead(beast::error_code ec, size_t /*bytes*/) {
    if (ec == http::error::end_of_stream) return shutdown();
    if (ec.category() == http::make_error_code(http::error::bad_method).category() &&
        !isRoutineDisconnect(ec)) {
      return badRequest(ec);
    }
    if (ec) return drop("read", ec);
    if (!endpoints_.exposed(parser_->get())) {
      response_ = endpoints_.notExposed(parser_->get());
      return write();
    }
    if (AdminAction action = endpoints_.action(parser_->get())) {
      if (parser_->get().method() == http::verb::post) return act(action);
      response_ = Endpoints::actionResponse(
          parser_->get(), {StatusCode::kInvalidArgument, "method not allowed (use POST)"});
      response_.result(http::status::method_not_allowed);
      response_.set(http::field::allow, "POST");
      return write();
    }
    response_ = endpoints_.respond(parser_->get());
    write();
  }

  // Runs an action; its answer is written from the admin thread whenever it comes.
  void act(const AdminAction& action) {
    request_ = parser_->release();
    auto self = this->shared_from_this();
    try {
      action(request_.body(), [self](AdminReply r) {
        asio::post(self->stream_.get_executor(), [self, r = std::move(r)]() {
          self->response_ = Endpoints::actionResponse(self->request_, r);
          self->write();
        });
      });
    } catch (const std::exception& e) {  // an action that throws costs one 500
      logWarn("admin: ", toStd(request_.target()), " failed: ", e.what());
      response_ = Endpoints::actionResponse(request_, {StatusCode::kInternal, "internal error"});
      write();
    }
  }

  void write() {
    beast::get_lowest_layer(stream_).expires_after(idleTimeout_);
    http::async_write(stream_, response_,
                      beast::bind_front_handler(&Session::onWrite, this->shared_from_this()));
  }

  void onWrite(beast::error_code ec, size_t /*bytes*/) {
    if (ec) return drop("write", ec);
    if (!response_.keep_alive()) return shutdown();
    read();
  }

  // A request the HTTP parser refused (bad syntax, header or body over its limit): one 400 that
  // says why, then the connection closes (the rest of the stream cannot be trusted).
  void badRequest(const beast::error_code& ec) {
    logDebug("admin: ", peer_, ": malformed request: ", ec.message());
    response_ = {};
    response_.version(11);
    response_.result(ec == http::error::header_limit || ec == http::error::body_limit
                         ? http::status::payload_too_large
                         : http::status::bad_request);
    response_.set(http::field::content_type, "text/plain");
    response_.keep_alive(false);
    response_.body() = "malformed HTTP request: " + ec.message() + "\n";
    response_.prepare_payload();
    write();
  }

  // Nothing pending after this: the session is released and the socket closed.
  void drop(const char* what, const beast::error_code& ec) {
    if (isRoutineDisconnect(ec)) {
      logDebug("admin: ", peer_, ": ", what, ": ", ec.message());
    } else {
      logWarn("admin: closing connection from ", peer_, ": ", what, ": ", ec.message());
    }
  }

  void shutdown() {
    if constexpr (kTls) {
      // close_notify, bounded by the idle timeout; the session ends when it is done either way.
      beast::get_lowest_layer(stream_).expires_after(idleTimeout_);
      stream_.async_shutdown([self = this->shared_from_this()](beast::error_code) {});
    } else {
      beast::error_code ec;
      stream_.socket().shutdown(tcp::socket::shutdown_send, ec);  // best effort; closing anyway
    }
  }

  const std::shared_ptr<ssl::context> tls_;  // declared first: outlives the stream made from it
  Stream stream_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  Request request_;    // an action's request, kept until its answer comes
  Response response_;  // lives here until async_write is done with it
  const Endpoints& endpoints_;
  const std::chrono::milliseconds idleTimeout_;
  const std::function<void()>& onHandshakeFailure_;  // AdminServer::Impl's; outlives sessions
  std::string peer_;
};

}  // namespace

const char* serviceStateName(ServiceState s) {
  switch (s) {
    case ServiceState::kStarting:
      return "starting";
    case ServiceState::kReady:
      return "ready";
    case ServiceState::kNotReady:
      return "not ready";
    case ServiceState::kDraining:
      return "draining";
  }
  return "?";
}

// Members are destroyed in reverse order, after ~AdminServer has stopped and joined the thread:
// the timer and acceptor go before the io_context they belong to, and the io_context (whose
// destruction frees the sessions its pending handlers own) goes before the Endpoints those
// sessions refer to.
struct AdminServer::Impl {
  explicit Impl(AdminOptions options)
      : endpoints(std::move(options.registry), std::move(options.info), options.processMetrics,
                  std::move(options.exposePaths)),
        idleTimeout(options.idleTimeoutMs),
        listen(std::move(options.listen)),
        tls(std::move(options.tls)),
        onTlsHandshakeFailure(std::move(options.onTlsHandshakeFailure)) {}

  std::shared_ptr<ssl::context> currentTlsContext() {
    std::lock_guard<std::mutex> lock(tlsMutex);
    return tlsContext;
  }

  void accept() {
    acceptor.async_accept([this](beast::error_code ec, tcp::socket socket) {
      if (ec == asio::error::operation_aborted) return;
      if (ec) {
        logWarn("admin: accept on ", listen, " failed: ", ec.message(), "; retrying");
        acceptRetry.expires_after(kAcceptRetryDelay);
        acceptRetry.async_wait([this](beast::error_code waitEc) {
          if (!waitEc) accept();
        });
        return;
      }
      // Responses are small and written whole; without this, Nagle holds the next response
      // on a keep-alive connection until the client's delayed ACK (~40 ms).
      beast::error_code optEc;
      socket.set_option(tcp::no_delay(true), optEc);
      if (std::shared_ptr<ssl::context> ctx = currentTlsContext()) {
        TlsStream stream(std::move(socket), *ctx);
        std::make_shared<Session<TlsStream>>(std::move(stream), std::move(ctx), endpoints,
                                             idleTimeout, onTlsHandshakeFailure)
            ->start();
      } else {
        std::make_shared<Session<PlainStream>>(PlainStream(std::move(socket)), nullptr, endpoints,
                                               idleTimeout, onTlsHandshakeFailure)
            ->start();
      }
      accept();
    });
  }

  void run() {
    pthread_setname_np(pthread_self(), "moe-admin");
    // Handlers do not throw; if one ever does, log it and keep serving rather than lose probes.
    for (;;) {
      try {
        ioc.run();
        return;  // stopped by ~AdminServer
      } catch (const std::exception& e) {
        logError("admin: handler threw: ", e.what());
      } catch (...) {
        logError("admin: handler threw an unknown exception");
      }
    }
  }

  Endpoints endpoints;
  const std::chrono::milliseconds idleTimeout;
  const std::string listen;
  const std::optional<TlsConfig> tls;
  const std::function<void()> onTlsHandshakeFailure;
  std::mutex tlsMutex;                       // guards tlsContext (swapped by reloadTls)
  std::shared_ptr<ssl::context> tlsContext;  // null: plain HTTP
  asio::io_context ioc{1};
  asio::executor_work_guard<asio::io_context::executor_type> work{ioc.get_executor()};
  tcp::acceptor acceptor{ioc};
  asio::steady_timer acceptRetry{ioc};
  uint16_t port = 0;
  std::thread thread;
};

Result<std::unique_ptr<AdminServer>> AdminServer::start(AdminOptions options) {
  auto impl = std::make_unique<Impl>(std::move(options));
  if (impl->tls) {
    auto ctx = makeTlsContext(*impl->tls);
    if (!ctx) return makeError(ctx.code(), "admin server on " + impl->listen + ": " + ctx.error());
    impl->tlsContext = std::move(ctx).value();
  }
  Result<tcp::endpoint> endpoint = parseListen(impl->listen, impl->ioc);
  if (!endpoint) return makeError(endpoint.status());

  auto cannot = [&](const char* step, const beast::error_code& ec) {
    return makeError("admin server: cannot listen on " + impl->listen + " (" + step +
                     "): " + ec.message());
  };
  beast::error_code ec;
  tcp::acceptor& acceptor = impl->acceptor;
  if (acceptor.open(endpoint.value().protocol(), ec); ec) return cannot("open", ec);
  // Lets a restarted service rebind while old connections sit in TIME_WAIT; on Linux it does not
  // let two live listeners share a port.
  if (acceptor.set_option(asio::socket_base::reuse_address(true), ec); ec) {
    return cannot("SO_REUSEADDR", ec);
  }
  if (acceptor.bind(endpoint.value(), ec); ec) return cannot("bind", ec);
  if (acceptor.listen(asio::socket_base::max_listen_connections, ec); ec) {
    return cannot("listen", ec);
  }
  impl->port = acceptor.local_endpoint(ec).port();
  if (ec) return cannot("local_endpoint", ec);

  impl->accept();
  Impl* raw = impl.get();
  try {
    impl->thread = std::thread([raw] { raw->run(); });
  } catch (const std::system_error& e) {
    return makeError("admin server on " + impl->listen + ": cannot start its thread: " + e.what());
  }
  logDebug("admin: serving ", impl->tls ? "HTTPS" : "HTTP", " on ", impl->listen, " (port ",
           impl->port, ")");
  return std::unique_ptr<AdminServer>(new AdminServer(std::move(impl)));
}

AdminServer::AdminServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

AdminServer::~AdminServer() {
  impl_->ioc.stop();
  if (impl_->thread.joinable()) impl_->thread.join();
}

uint16_t AdminServer::port() const {
  return impl_->port;
}

void AdminServer::setState(ServiceState s, std::string reason) {
  impl_->endpoints.setState(s, std::move(reason));
}

ServiceState AdminServer::state() const {
  return impl_->endpoints.state();
}

void AdminServer::setAction(std::string path, AdminAction action) {
  impl_->endpoints.setAction(std::move(path), std::move(action));
}

Status AdminServer::reloadTls() {
  if (!impl_->tls) return Status::ok();
  auto ctx = makeTlsContext(*impl_->tls);
  if (!ctx) {
    logWarn("admin: TLS reload failed, keeping the certificates in use: ", ctx.error());
    return ctx.status();
  }
  {
    std::lock_guard<std::mutex> lock(impl_->tlsMutex);
    impl_->tlsContext = std::move(ctx).value();
  }
  logInfo("admin: reloaded TLS certificate ", impl_->tls->cert);
  return Status::ok();
}

bool AdminServer::tlsEnabled() const {
  return impl_->tls.has_value();
}

}  // namespace moe
