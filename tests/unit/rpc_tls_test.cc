// common/rpc_tls: the host a client checks the server's certificate against, taken from the
// address it dials, and the errors of certificate files that cannot be used (each names the key
// and the file).
#include "common/rpc_tls.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

namespace moe {
namespace {

TEST(RpcTlsTest, HostOfAddress) {
  const std::pair<const char*, const char*> cases[] = {
      {"127.0.0.1:7100", "127.0.0.1"},
      {"moe-shard-0.moe.svc:7201", "moe-shard-0.moe.svc"},
      {"localhost:1", "localhost"},
      {"[::1]:7100", "::1"},
      {"[fe80::1%eth0]:9", "fe80::1%eth0"},
      {"::1", "::1"},  // no port: the whole address
      {"router", "router"},
  };
  for (const auto& [address, host] : cases) EXPECT_EQ(hostOfAddress(address), host) << address;
}

TEST(RpcTlsTest, UnusableFilesAreNamed) {
  const auto dir = std::filesystem::path(::testing::TempDir()) / "rpc-tls-unit";
  std::filesystem::create_directories(dir);
  const std::string garbage = (dir / "garbage.pem").string();
  const std::string empty = (dir / "empty.pem").string();
  std::ofstream(garbage) << "-----BEGIN CERTIFICATE-----\nnot base64 at all\n"
                            "-----END CERTIFICATE-----\n";
  std::ofstream(empty).flush();
  const std::string missing = (dir / "missing.pem").string();
  struct Case {
    TlsConfig config;
    std::string error;  // the start of the message
  };
  const Case cases[] = {
      {{missing, "", "", true}, "tls.ca " + missing + ": cannot read: No such file or directory"},
      {{empty, "", "", true}, "tls.ca " + empty + ": the file is empty"},
      {{garbage, "", "", true}, "tls.ca " + garbage + ": not a PEM certificate: "},
  };
  for (const auto& tc : cases) {
    auto tls = RpcTls::load(tc.config);
    ASSERT_FALSE(tls) << tc.error;
    EXPECT_EQ(tls.code(), StatusCode::kFailedPrecondition);
    EXPECT_EQ(tls.error().substr(0, tc.error.size()), tc.error);
  }
}

}  // namespace
}  // namespace moe
