// Command-line flags shared by moe-router and moe-expert. The cluster YAML says where each
// service is reached; on Kubernetes a pod binds 0.0.0.0 and learns which shard it is from its
// StatefulSet ordinal, so the flags can override the bind addresses and pick the shard.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "common/cli.h"
#include "common/config.h"
#include "common/result.h"

namespace moe {

struct ServiceFlags {
  std::string config;
  std::string shard;                   // --shard NAME
  std::optional<uint32_t> shardIndex;  // --shard-index N
  bool shardFromHostname = false;      // --shard-index-from-hostname
  std::string listen;  // --listen HOST:PORT: bind here instead of the YAML's address
  std::string admin;   // --admin HOST:PORT: admin plane here instead of the YAML's
};

// The outcome of parsing a command line: the flags, or the status the program exits with (its
// message already printed: 0 after --help / --version, 2 after a usage error).
class ParsedServiceFlags {
 public:
  ParsedServiceFlags(ServiceFlags flags) : flags_(std::move(flags)) {}  // NOLINT: like Result
  static ParsedServiceFlags exit(int status) { return ParsedServiceFlags(status); }
  explicit operator bool() const { return flags_.has_value(); }
  ServiceFlags& value() { return *flags_; }
  const ServiceFlags& value() const { return *flags_; }
  int exitStatus() const { return status_; }

 private:
  explicit ParsedServiceFlags(int status) : status_(status) {}
  std::optional<ServiceFlags> flags_;
  int status_ = 0;
};

// `program`: "moe-router" (no shard flags) or "moe-expert" (`expert`: exactly one of --shard,
// --shard-index, --shard-index-from-hostname is required).
ParsedServiceFlags parseServiceFlags(std::string_view program, int argc, char** argv, bool expert);

// A CLI11 validator for HOST:PORT values (parseHostPort's rules: port 1..65535).
CLI::Validator hostPortValidator();

// The shard this process serves: --shard NAME, --shard-index N (shards[N] of the YAML), or the
// number after the last '-' of $HOSTNAME (the StatefulSet pod ordinal, "moe-expert-2" → 2).
Result<std::string> resolveShardName(const ServiceFlags& flags, const ClusterConfig& cluster);

}  // namespace moe
