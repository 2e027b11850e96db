// Command-line flags shared by moe-router and moe-expert. The cluster YAML says where each
// service is reached; on Kubernetes a pod binds 0.0.0.0 and learns which shard it is from its
// StatefulSet ordinal, so the flags can override the bind addresses and pick the shard.
#pragma once

#include <optional>
#include <string>

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

// `expert`: accept the shard-selection flags. Errors say what is wrong; the caller prints usage.
Result<ServiceFlags> parseServiceFlags(int argc, char** argv, bool expert);

// The shard this process serves: --shard NAME, --shard-index N (shards[N] of the YAML), or the
// number after the last '-' of $HOSTNAME (the StatefulSet pod ordinal, "moe-expert-2" → 2).
Result<std::string> resolveShardName(const ServiceFlags& flags, const ClusterConfig& cluster);

}  // namespace moe
