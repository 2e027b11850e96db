// Command-line flags of moe-router and moe-expert (CLI11, the conventions of common/cli.h).
#include "common/service_flags.h"

#include <charconv>
#include <cstdlib>
#include <string>

namespace moe {

CLI::Validator hostPortValidator() {
  return CLI::Validator(
      [](std::string& s) {
        auto hp = parseHostPort(s);
        return hp ? std::string() : hp.error();
      },
      "HOST:PORT");
}

ParsedServiceFlags parseServiceFlags(std::string_view program, int argc, char** argv, bool expert) {
  ServiceFlags f;
  CLI::App app{expert ? "One expert shard: serves the experts the cluster YAML places on it "
                        "(ExpertShard RPC) and its admin plane (/metrics /healthz /readyz)."
                      : "The router: gates each request, sends its tokens to the expert shards "
                        "and combines their outputs (Router RPC), with its admin plane.",
               std::string(program)};
  cli::setUp(app);
  app.add_option("--config", f.config, "Cluster YAML (model, shards, router, timeouts)")
      ->required()
      ->check(CLI::ExistingFile);
  app.add_option("--listen", f.listen, "Bind the RPC server here instead of the YAML's address")
      ->transform(hostPortValidator());
  app.add_option("--admin", f.admin, "Serve the admin plane here instead of the YAML's address")
      ->transform(hostPortValidator());
  uint32_t shardIndex = 0;
  CLI::Option* index = nullptr;
  if (expert) {
    auto* name = app.add_option("--shard", f.shard, "Serve the shard of this name")
                     ->transform(cli::nonEmpty());
    index = app.add_option("--shard-index", shardIndex, "Serve shards[N] of the YAML (N from 0)")
                ->transform(cli::unsignedInteger(0, UINT32_MAX))
                ->default_str("");  // no default: one of the three names the shard
    auto* host = app.add_flag("--shard-index-from-hostname", f.shardFromHostname,
                              "Serve shards[N], N the number after the last '-' of $HOSTNAME (the "
                              "StatefulSet pod ordinal: moe-expert-2 serves shards[2])");
    name->excludes(index)->excludes(host);
    index->excludes(host);
  }
  if (auto status = cli::parse(app, argc, argv)) return ParsedServiceFlags::exit(*status);
  if (index != nullptr && index->count() > 0) f.shardIndex = shardIndex;
  if (expert && f.shard.empty() && !f.shardIndex && !f.shardFromHostname) {
    return ParsedServiceFlags::exit(cli::usageError(
        app, "name the shard with one of --shard, --shard-index, --shard-index-from-hostname"));
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
