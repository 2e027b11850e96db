// RpcTls: PEM files → kj-tls contexts (OpenSSL underneath), and the two adjustments kj-tls leaves
// to its user: servers named by an IP address (an IP SAN) and key/certificate mismatches.
#include "common/rpc_tls.h"

#include <kj/compat/tls.h>
#include <kj/debug.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <type_traits>
#include <vector>

#include "common/log.h"

namespace moe {

namespace {

// kj::TlsContext keeps its SSL_CTX in its first member ("actually type SSL_CTX", kj/compat/tls.h)
// and offers no accessor. A standard-layout object and its first member share an address, so this
// reads it without guessing at the layout; the two settings below need it.
static_assert(std::is_standard_layout_v<kj::TlsContext>,
              "kj::TlsContext changed shape: revisit sslContextOf");
SSL_CTX* sslContextOf(kj::TlsContext& context) {
  return static_cast<SSL_CTX*>(*reinterpret_cast<void**>(&context));
}

// kj-tls checks the server's name with X509_VERIFY_PARAM_set1_host, which matches DNS names only:
// a server reached at 127.0.0.1 whose certificate carries IP:127.0.0.1 would be refused. This
// accepts exactly that case (the expected name is an IP address and the leaf certificate's IP SANs
// contain it); every other verification error stays an error.
int verifyAllowingIpSan(int ok, X509_STORE_CTX* store) {
  if (ok == 1) return 1;
  if (X509_STORE_CTX_get_error(store) != X509_V_ERR_HOSTNAME_MISMATCH ||
      X509_STORE_CTX_get_error_depth(store) != 0) {
    return 0;
  }
  X509_VERIFY_PARAM* param = X509_STORE_CTX_get0_param(store);
  const char* host = param != nullptr ? X509_VERIFY_PARAM_get0_host(param, 0) : nullptr;
  X509* leaf = X509_STORE_CTX_get_current_cert(store);
  // X509_check_ip_asc: 1 a matching IP SAN, 0 none, < 0 `host` is not an IP address.
  if (host == nullptr || leaf == nullptr || X509_check_ip_asc(leaf, host, 0) != 1) return 0;
  X509_STORE_CTX_set_error(store, X509_V_OK);
  return 1;
}

Result<std::string> readFile(const std::string& what, const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return makeError(StatusCode::kFailedPrecondition,
                     what + " " + path + ": cannot read: " + std::strerror(errno));
  }
  std::ostringstream s;
  s << in.rdbuf();
  if (s.str().empty()) {
    return makeError(StatusCode::kFailedPrecondition, what + " " + path + ": the file is empty");
  }
  return s.str();
}

// Every certificate of a PEM bundle on its own: kj trusts only the first certificate of each
// TlsCertificate, and a CA bundle (old and new CA during a rotation) must trust them all.
std::vector<std::string> pemCertificates(const std::string& pem) {
  static const std::string kBegin = "-----BEGIN CERTIFICATE-----";
  static const std::string kEnd = "-----END CERTIFICATE-----";
  std::vector<std::string> out;
  size_t at = 0;
  while ((at = pem.find(kBegin, at)) != std::string::npos) {
    const size_t end = pem.find(kEnd, at);
    if (end == std::string::npos) break;
    out.push_back(pem.substr(at, end + kEnd.size() - at) + "\n");
    at = end + kEnd.size();
  }
  return out;
}

std::string describe(const kj::Exception& e) {
  std::string s = e.getDescription().cStr();
  // "OpenSSL error; message = error:...": the part after "message = " is the reason.
  const auto at = s.find("message = ");
  return at == std::string::npos ? s : s.substr(at + 10);
}

Error fileError(const std::string& what, const std::string& path, const std::string& why,
                const kj::Exception& e) {
  return makeError(StatusCode::kFailedPrecondition,
                   what + " " + path + ": " + why + ": " + describe(e));
}

}  // namespace

TlsContexts::~TlsContexts() = default;

Result<std::shared_ptr<TlsContexts>> RpcTls::read(const TlsConfig& config,
                                                  const std::string& what) {
  auto caPem = readFile(what + ".ca", config.ca);
  if (!caPem) return makeError(caPem.status());
  std::vector<kj::TlsCertificate> cas;
  for (const std::string& pem : pemCertificates(caPem.value())) {
    try {
      cas.emplace_back(kj::StringPtr(pem.c_str()));
    } catch (const kj::Exception& e) {
      return fileError(what + ".ca", config.ca, "not a PEM certificate", e);
    }
  }
  if (cas.empty()) {
    return makeError(StatusCode::kFailedPrecondition,
                     what + ".ca " + config.ca + ": no PEM certificate (BEGIN CERTIFICATE) in it");
  }

  const bool haveKeypair = !config.cert.empty() || !config.key.empty();
  kj::Maybe<kj::TlsKeypair> keypair;
  if (haveKeypair) {
    auto certPem = readFile(what + ".cert", config.cert);
    if (!certPem) return makeError(certPem.status());
    auto keyPem = readFile(what + ".key", config.key);
    if (!keyPem) return makeError(keyPem.status());
    kj::Maybe<kj::TlsCertificate> cert;
    try {
      cert = kj::TlsCertificate(kj::StringPtr(certPem.value().c_str()));
    } catch (const kj::Exception& e) {
      return fileError(what + ".cert", config.cert, "not a PEM certificate", e);
    }
    kj::Maybe<kj::TlsPrivateKey> key;
    try {
      key = kj::TlsPrivateKey(kj::StringPtr(keyPem.value().c_str()));
    } catch (const kj::Exception& e) {
      return fileError(what + ".key", config.key, "not an unencrypted PEM private key", e);
    }
    keypair = kj::TlsKeypair{kj::mv(KJ_ASSERT_NONNULL(key)), kj::mv(KJ_ASSERT_NONNULL(cert))};
  }

  auto contexts = std::make_shared<TlsContexts>();
  try {
    kj::TlsContext::Options server;
    server.useSystemTrustStore = false;  // only the cluster's CA
    server.trustedCertificates = kj::arrayPtr(cas.data(), cas.size());
    server.verifyClients = config.clientAuth;
    server.minVersion = kj::TlsVersion::TLS_1_2;
    KJ_IF_MAYBE (kp, keypair) {
      server.defaultKeypair = *kp;
      contexts->server = kj::heap<kj::TlsContext>(kj::mv(server));
    }
    kj::TlsContext::Options client;
    client.useSystemTrustStore = false;
    client.trustedCertificates = kj::arrayPtr(cas.data(), cas.size());
    client.minVersion = kj::TlsVersion::TLS_1_2;
    KJ_IF_MAYBE (kp, keypair) {
      client.defaultKeypair = *kp;
    }
    contexts->client = kj::heap<kj::TlsContext>(kj::mv(client));
  } catch (const kj::Exception& e) {
    return fileError(what + ".cert", config.cert, "cannot use the certificate and key", e);
  }
  if (contexts->server) {
    // OpenSSL drops a key that does not match the certificate without failing; say so here
    // rather than in every handshake.
    if (SSL_CTX_check_private_key(sslContextOf(*contexts->server)) != 1) {
      return makeError(StatusCode::kFailedPrecondition, what + ".key " + config.key +
                                                            ": does not match the certificate in " +
                                                            what + ".cert " + config.cert);
    }
    // A peer that connects and closes without a byte (a TCP health check) is not a failed
    // handshake; OpenSSL 3 would report it as one ("unexpected eof").
#ifdef SSL_OP_IGNORE_UNEXPECTED_EOF
    SSL_CTX_set_options(sslContextOf(*contexts->server), SSL_OP_IGNORE_UNEXPECTED_EOF);
#endif
  }
  SSL_CTX_set_verify(sslContextOf(*contexts->client), SSL_VERIFY_PEER, verifyAllowingIpSan);
  return contexts;
}

Result<std::shared_ptr<RpcTls>> RpcTls::load(const TlsConfig& config, std::string what) {
  auto contexts = read(config, what);
  if (!contexts) return makeError(contexts.status());
  std::shared_ptr<RpcTls> tls(new RpcTls(config, std::move(what)));
  tls->current_ = std::move(contexts).value();
  return tls;
}

Status RpcTls::reload() {
  auto contexts = read(config_, what_);
  if (!contexts) return contexts.status();
  std::lock_guard<std::mutex> lock(mutex_);
  current_ = std::move(contexts).value();
  return Status::ok();
}

std::shared_ptr<TlsContexts> RpcTls::current() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return current_;
}

kj::Promise<kj::Own<kj::AsyncIoStream>> RpcTls::wrapServer(
    kj::Own<kj::AsyncIoStream> stream) const {
  auto contexts = current();
  KJ_REQUIRE(contexts->server.get() != nullptr, "TLS without a certificate cannot serve");
  auto handshake = contexts->server->wrapServer(kj::mv(stream));
  // The connection keeps the contexts it was made with (a reload leaves it alone).
  return handshake.then([contexts = kj::mv(contexts)](kj::Own<kj::AsyncIoStream> s) mutable {
    return kj::Own<kj::AsyncIoStream>(kj::mv(s).attach(kj::mv(contexts)));
  });
}

kj::Promise<kj::Own<kj::AsyncIoStream>> RpcTls::wrapClient(kj::Own<kj::AsyncIoStream> stream,
                                                           const std::string& address) const {
  auto contexts = current();
  auto handshake = contexts->client->wrapClient(kj::mv(stream), hostOfAddress(address).c_str());
  return handshake.then([contexts = kj::mv(contexts)](kj::Own<kj::AsyncIoStream> s) mutable {
    return kj::Own<kj::AsyncIoStream>(kj::mv(s).attach(kj::mv(contexts)));
  });
}

std::string hostOfAddress(const std::string& address) {
  if (!address.empty() && address.front() == '[') {
    const auto close = address.find(']');
    return address.substr(1, close == std::string::npos ? std::string::npos : close - 1);
  }
  const auto colon = address.rfind(':');
  // More than one colon and no brackets: a bare IPv6 address without a port.
  if (colon == std::string::npos || address.find(':') != colon) return address;
  return address.substr(0, colon);
}

}  // namespace moe
