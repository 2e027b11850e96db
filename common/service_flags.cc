// Service flag parsing.
#include "common/service_flags.h"

#include <charconv>
#include <cstdlib>
#include <string_view>

namespace moe {

Result<ServiceFlags> parseServiceFlags(int argc, char** argv, bool expert) {
  ServiceFlags f;
  for (int i = 1; i < argc; ++i) {
    const std::string_view a = argv[i];
    auto value = [&]() -> std::optional<std::string> {
      if (i + 1 >= argc) return std::nullopt;
      return std::string(argv[++i]);
    };
    std::optional<std::string> v;
    if (a == "--config" && (v = value())) {
      f.config = *v;
    } else if (a == "--listen" && (v = value())) {
      f.listen = *v;
    } else if (a == "--admin" && (v = value())) {
      f.admin = *v;
    } else if (expert && a == "--shard" && (v = value())) {
      f.shard = *v;
    } else if (expert && a == "--shard-index" && (v = value())) {
      uint32_t n = 0;
      auto [p, ec] = std::from_chars(v->data(), v->data() + v->size(), n);
      if (ec != std::errc() || p != v->data() + v->size()) {
        return makeError("--shard-index: '" + *v + "' is not a number");
      }
      f.shardIndex = n;
    } else if (expert && a == "--shard-index-from-hostname") {
      f.shardFromHostname = true;
    } else {
      return makeError("unexpected argument '" + std::string(a) + "'");
    }
  }
  if (f.config.empty()) return makeError("--config is required");
  for (const auto* addr : {&f.listen, &f.admin}) {
    if (!addr->empty()) {
      if (auto hp = parseHostPort(*addr); !hp) return makeError(hp.status());
    }
  }
  if (expert) {
    const int ways = !f.shard.empty() + f.shardIndex.has_value() + f.shardFromHostname;
    if (ways != 1) {
      return makeError(
          "name the shard with exactly one of --shard, --shard-index, --shard-index-from-hostname");
    }
  }
  return f;
}

Result<std::string> resolveShardName(const ServiceFlags& flags, const ClusterConfig& cluster) {
  if (!flags.shard.empty()) {
    if (cluster.findShard(flags.shard) == nullptr) {
      return makeError(cluster.sourcePath + ": no shard named '" + flags.shard + "'");
    }
    return flags.shard;
  }
  std::optional<uint32_t> index = flags.shardIndex;
  if (flags.shardFromHostname) {
    const char* host = std::getenv("HOSTNAME");
    const std::string h = host ? host : "";
    const auto dash = h.rfind('-');
    uint32_t n = 0;
    auto [p, ec] = std::from_chars(h.data() + (dash == std::string::npos ? 0 : dash + 1),
                                   h.data() + h.size(), n);
    if (dash == std::string::npos || ec != std::errc() || p != h.data() + h.size()) {
      return makeError("HOSTNAME '" + h +
                       "' does not end in -<ordinal> (expected a StatefulSet pod name)");
    }
    index = n;
  }
  if (*index >= cluster.shards.size()) {
    return makeError("shard index " + std::to_string(*index) + " but " + cluster.sourcePath +
                     " lists " + std::to_string(cluster.shards.size()) + " shards");
  }
  return cluster.shards[*index].name;
}

}  // namespace moe
