// Mutual TLS for the Cap'n Proto RPC ports (config `tls:`): the PEM files of a TlsConfig turned
// into a server and a client kj::TlsContext, re-read on demand (SIGHUP) without disturbing the
// connections already made with the previous ones.
#pragma once

#include <kj/async-io.h>

#include <memory>
#include <mutex>
#include <string>

#include "common/config.h"
#include "common/result.h"

namespace kj {
class TlsContext;
}

namespace moe {

// The TLS contexts made from one reading of the files. A connection keeps the snapshot it was
// made with, so a reload never changes a connection already open.
struct TlsContexts {
  kj::Own<kj::TlsContext> server;  // presents cert/key; verifies clients against ca (client_auth)
  kj::Own<kj::TlsContext> client;  // presents cert/key when set; verifies servers against ca
  ~TlsContexts();
};

class RpcTls {
 public:
  // Reads and checks `config`'s files (`what` names the section in messages: "tls"). Errors are
  // FailedPrecondition and name the key, the file and the reason. A client-only config may leave
  // cert and key empty: it then presents no certificate (servers with client_auth: false).
  static Result<std::shared_ptr<RpcTls>> load(const TlsConfig& config, std::string what = "tls");

  // Reads the files again; on success new connections use the new contexts, on failure the
  // current ones stay and the error says which file and why.
  Status reload();

  std::shared_ptr<TlsContexts> current() const;
  const TlsConfig& config() const { return config_; }

  // The TLS side of a connection accepted by a server: resolves to the decrypted stream once the
  // handshake completes (the client's certificate verified when client_auth).
  kj::Promise<kj::Own<kj::AsyncIoStream>> wrapServer(kj::Own<kj::AsyncIoStream> stream) const;
  // The TLS side of a connection to `address` ("host:port"): the server's certificate must be
  // signed by the CA and name the host (a DNS name, or an IP address as an IP SAN).
  kj::Promise<kj::Own<kj::AsyncIoStream>> wrapClient(kj::Own<kj::AsyncIoStream> stream,
                                                     const std::string& address) const;

 private:
  RpcTls(TlsConfig config, std::string what) : config_(std::move(config)), what_(std::move(what)) {}
  static Result<std::shared_ptr<TlsContexts>> read(const TlsConfig& config,
                                                   const std::string& what);
  TlsConfig config_;
  std::string what_;
  mutable std::mutex mutex_;  // a client library's connections may be made on several threads
  std::shared_ptr<TlsContexts> current_;
};

// The host of "host:port" ("[::1]:7100" → "::1"), as a certificate must name it.
std::string hostOfAddress(const std::string& address);

}  // namespace moe
