// Cluster config parsing with yaml-cpp. Every node is checked against the keys its section
// allows, so a typo is an error with a line number rather than a silently ignored setting.
#include "common/config.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "common/checkpoint.h"

namespace moe {
namespace {

// Thrown inside the parser only; parseClusterConfig turns it into an Error.
struct ConfigError {
  std::string message;
};

class Parser {
 public:
  explicit Parser(std::string_view source) : source_(source) {}

  [[noreturn]] void fail(const YAML::Node& node, const std::string& key, const std::string& what) {
    std::ostringstream os;
    os << source_;
    if (node.IsDefined() && node.Mark().line >= 0) os << ":" << node.Mark().line + 1;
    os << ": " << key << ": " << what;
    throw ConfigError{os.str()};
  }

  void checkKeys(const YAML::Node& map, const std::string& where,
                 std::initializer_list<const char*> allowed) {
    if (!map.IsMap()) fail(map, where.empty() ? "(top level)" : where, "expected a mapping");
    std::set<std::string> seen;
    for (const auto& kv : map) {
      auto key = kv.first.as<std::string>();
      if (!seen.insert(key).second) fail(kv.first, join(where, key), "duplicate key");
      bool known =
          std::any_of(allowed.begin(), allowed.end(), [&](const char* a) { return key == a; });
      if (!known) {
        std::string list;
        for (const char* a : allowed) list += (list.empty() ? "" : ", ") + std::string(a);
        fail(kv.first, join(where, key), "unknown key (expected one of: " + list + ")");
      }
    }
  }

  static std::string join(const std::string& where, const std::string& key) {
    return where.empty() ? key : where + "." + key;
  }

  std::string str(const YAML::Node& node, const std::string& key) {
    if (!node.IsScalar()) fail(node, key, "expected a string");
    auto s = node.as<std::string>();
    if (s.empty()) fail(node, key, "must not be empty");
    return s;
  }

  uint64_t uint(const YAML::Node& node, const std::string& key, uint64_t min, uint64_t max) {
    if (!node.IsScalar()) fail(node, key, "expected an integer");
    auto s = node.Scalar();
    uint64_t v = 0;
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (ec != std::errc() || p != s.data() + s.size())
      fail(node, key, "'" + s + "' is not a non-negative integer");
    if (v < min || v > max) {
      fail(node, key,
           std::to_string(v) + " out of range [" + std::to_string(min) + ", " +
               std::to_string(max) + "]");
    }
    return v;
  }

  bool boolean(const YAML::Node& node, const std::string& key) {
    if (node.IsScalar()) {
      const auto& v = node.Scalar();
      if (v == "true") return true;
      if (v == "false") return false;
    }
    fail(node, key, "expected true or false");
  }

  double number(const YAML::Node& node, const std::string& key, double min, double max) {
    if (!node.IsScalar()) fail(node, key, "expected a number");
    const auto& s = node.Scalar();
    double v = 0;
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (ec != std::errc() || p != s.data() + s.size() || !(v >= min && v <= max)) {
      fail(node, key,
           "'" + s + "' is not a number in [" + formatNumber(min) + ", " + formatNumber(max) + "]");
    }
    return v;
  }

  static std::string formatNumber(double v) {
    std::ostringstream os;
    os << v;
    return os.str();
  }

  std::string hostPort(const YAML::Node& node, const std::string& key) {
    auto s = str(node, key);
    auto hp = parseHostPort(s);
    if (!hp) fail(node, key, hp.error());
    return s;
  }

  ComputeDevice device(const YAML::Node& node, const std::string& key) {
    auto s = str(node, key);
    ComputeDevice d;
    if (s == "auto") {
      d.kind = ComputeDevice::Kind::kAuto;
    } else if (s == "cpu") {
      d.kind = ComputeDevice::Kind::kCpu;
    } else if (s == "reference") {
      d.kind = ComputeDevice::Kind::kReference;
    } else if (s.rfind("cuda:", 0) == 0 || s.rfind("auto:", 0) == 0) {
      d.kind = s[0] == 'c' ? ComputeDevice::Kind::kCuda : ComputeDevice::Kind::kAuto;
      auto num = s.substr(5);
      int idx = -1;
      auto [p, ec] = std::from_chars(num.data(), num.data() + num.size(), idx);
      if (ec != std::errc() || p != num.data() + num.size() || idx < 0 || idx > 255) {
        fail(node, key, "bad device index in '" + s + "'");
      }
      d.index = idx;
    } else {
      fail(node, key,
           "'" + s + "' is not a device (expected auto, cpu, reference, cuda:N or auto:N)");
    }
    return d;
  }

  // A list of ids: [0, 1, 5] or a range string "0-7", or a list mixing both ("0-3", 6).
  std::vector<uint32_t> idList(const YAML::Node& node, const std::string& key) {
    std::vector<uint32_t> out;
    auto addItem = [&](const YAML::Node& item) {
      auto s = item.IsScalar() ? item.Scalar() : std::string();
      auto dash = s.find('-');
      if (item.IsScalar() && dash != std::string::npos && dash > 0) {
        uint32_t a = 0, b = 0;
        auto r1 = std::from_chars(s.data(), s.data() + dash, a);
        auto r2 = std::from_chars(s.data() + dash + 1, s.data() + s.size(), b);
        if (r1.ec != std::errc() || r2.ec != std::errc() || r1.ptr != s.data() + dash ||
            r2.ptr != s.data() + s.size() || a > b || b > 1u << 20) {
          fail(item, key, "bad range '" + s + "' (expected A-B with A <= B)");
        }
        for (uint32_t i = a; i <= b; ++i) out.push_back(i);
      } else {
        out.push_back(static_cast<uint32_t>(uint(item, key, 0, 1u << 20)));
      }
    };
    if (node.IsSequence()) {
      for (const auto& item : node) addItem(item);
    } else {
      addItem(node);
    }
    if (out.empty()) fail(node, key, "must name at least one id");
    std::set<uint32_t> seen;
    for (auto v : out) {
      if (!seen.insert(v).second) fail(node, key, "id " + std::to_string(v) + " listed twice");
    }
    return out;
  }

 private:
  std::string source_;
};

// A `batching:` section (router or expert shard). Only the keys present replace the fields, so a
// shard's block can override the cluster default key by key.
struct BatchingFields {
  bool* enabled;
  uint32_t* windowUs;
  const char* maxKey;  // "max_tokens" on the router, "max_rows" on an expert shard
  uint32_t* max;
};

void parseBatching(Parser& p, const YAML::Node& node, const std::string& where,
                   const BatchingFields& f) {
  p.checkKeys(node, where, {"enabled", "window_us", f.maxKey});
  if (node["enabled"]) *f.enabled = p.boolean(node["enabled"], where + ".enabled");
  if (node["window_us"]) {
    *f.windowUs =
        static_cast<uint32_t>(p.uint(node["window_us"], where + ".window_us", 0, 1000000));
  }
  if (node[f.maxKey]) {
    *f.max =
        static_cast<uint32_t>(p.uint(node[f.maxKey], Parser::join(where, f.maxKey), 1, UINT32_MAX));
  }
}

// An `expert:` section (top level or under a shard) over `base`.
ExpertBatchingConfig parseExpertSection(Parser& p, const YAML::Node& node, const std::string& where,
                                        ExpertBatchingConfig base) {
  p.checkKeys(node, where, {"batching"});
  if (const auto b = node["batching"]) {
    parseBatching(p, b, where + ".batching",
                  {&base.enabled, &base.windowUs, "max_rows", &base.maxRows});
  }
  return base;
}

void parseRouterBatching(Parser& p, const YAML::Node& router, RouterConfig& r) {
  if (const auto b = router["batching"]) {
    parseBatching(p, b, "router.batching",
                  {&r.batching.enabled, &r.batching.windowUs, "max_tokens", &r.batching.maxTokens});
  }
  if (const auto q = router["max_queued_tokens"]) {
    r.maxQueuedTokens = static_cast<uint32_t>(p.uint(q, "router.max_queued_tokens", 1, UINT32_MAX));
  }
}

constexpr ModelDType kModelDTypes[] = {ModelDType::kAuto, ModelDType::kF32, ModelDType::kBF16,
                                       ModelDType::kF16};

ModelDType modelDType(Parser& p, const YAML::Node& node, const std::string& key) {
  const auto s = p.str(node, key);
  for (auto d : kModelDTypes) {
    if (s == modelDTypeName(d)) return d;
  }
  p.fail(node, key, "'" + s + "' is not a model dtype (expected auto, bf16, f16 or f32)");
}

constexpr MissingExpertPolicy kMissingExpertPolicies[] = {
    MissingExpertPolicy::kError, MissingExpertPolicy::kRenormalize, MissingExpertPolicy::kReroute};

MissingExpertPolicy missingExpertPolicy(Parser& p, const YAML::Node& node, const std::string& key) {
  const auto s = p.str(node, key);
  for (auto policy : kMissingExpertPolicies) {
    if (s == missingExpertPolicyName(policy)) return policy;
  }
  p.fail(node, key,
         "'" + s + "' is not a missing-expert policy (expected error, renormalize or reroute)");
}

// The `metrics:` section.
void parseMetrics(Parser& p, const YAML::Node& m, MetricsConfig& o) {
  p.checkKeys(m, "metrics", {"per_expert"});
  if (const auto n = m["per_expert"]) {
    const auto s = p.str(n, "metrics.per_expert");
    if (s == "all") {
      o.perExpert = PerExpertMetrics::kAll;
    } else if (s == "off") {
      o.perExpert = PerExpertMetrics::kOff;
    } else {
      p.fail(n, "metrics.per_expert", "'" + s + "' is not a per-expert mode (expected all or off)");
    }
  }
}

// The `routing:` section.
void parseRouting(Parser& p, const YAML::Node& r, RoutingOptions& o) {
  p.checkKeys(r, "routing",
              {"noisy_topk", "capacity_factor", "capacity_renormalize", "missing_expert"});
  if (const auto n = r["noisy_topk"]) {
    p.checkKeys(n, "routing.noisy_topk", {"seed"});
    o.noisyTopk = true;
    if (n["seed"]) o.noiseSeed = p.uint(n["seed"], "routing.noisy_topk.seed", 0, UINT64_MAX);
  }
  if (r["capacity_factor"]) {
    o.capacityFactor = p.number(r["capacity_factor"], "routing.capacity_factor", 0, 1e6);
  }
  if (r["capacity_renormalize"]) {
    o.capacityRenormalize = p.boolean(r["capacity_renormalize"], "routing.capacity_renormalize");
    if (o.capacityFactor == 0) {
      p.fail(r["capacity_renormalize"], "routing.capacity_renormalize",
             "needs routing.capacity_factor > 0");
    }
  }
  if (const auto m = r["missing_expert"]) {
    o.missingExpert = missingExpertPolicy(p, m, "routing.missing_expert");
  }
}

// The `limits:` section; `routerMaxTokens`: the file sets router.max_tokens.
void parseLimits(Parser& p, const YAML::Node& root, bool routerMaxTokens, ClusterConfig& c) {
  LimitsConfig& l = c.limits;
  const YAML::Node n = root["limits"];
  if (n) {
    p.checkKeys(
        n, "limits",
        {"max_tokens_per_request", "max_rows_per_shard_call", "max_segments_per_shard_call",
         "max_message_bytes", "max_inflight_requests", "max_connections", "idle_timeout_ms"});
    const struct {
      const char* key;
      uint32_t* field;
      uint64_t max;
    } fields[] = {
        {"max_tokens_per_request", &l.maxTokensPerRequest, 1u << 20},
        {"max_rows_per_shard_call", &l.maxRowsPerShardCall, 1u << 24},
        {"max_segments_per_shard_call", &l.maxSegmentsPerShardCall, 1u << 20},
        {"max_inflight_requests", &l.maxInflightRequests, 1u << 20},
        {"max_connections", &l.maxConnections, 1u << 20},
        {"idle_timeout_ms", &l.idleTimeoutMs, 24 * 3600000u},
    };
    for (const auto& f : fields) {
      if (n[f.key]) {
        *f.field =
            static_cast<uint32_t>(p.uint(n[f.key], std::string("limits.") + f.key, 1, f.max));
      }
    }
    if (n["max_message_bytes"]) {
      // At least 64 KiB (an info reply); at most 2 GiB (Cap'n Proto's own ceiling is 4 GiB).
      l.maxMessageBytes =
          p.uint(n["max_message_bytes"], "limits.max_message_bytes", 1u << 16, uint64_t{1} << 31);
    }
  }
  // router.max_tokens and limits.max_tokens_per_request are one limit: either spelling sets it.
  const bool limitSet = n && n["max_tokens_per_request"];
  if (routerMaxTokens && limitSet && c.router.maxTokens != l.maxTokensPerRequest) {
    p.fail(n["max_tokens_per_request"], "limits.max_tokens_per_request",
           std::to_string(l.maxTokensPerRequest) + " differs from router.max_tokens = " +
               std::to_string(c.router.maxTokens) + " (the same limit; set one of them)");
  }
  if (routerMaxTokens && !limitSet) l.maxTokensPerRequest = c.router.maxTokens;
  c.router.maxTokens = l.maxTokensPerRequest;
  // A router batch may hold this many rows, and sends at most that many to one shard.
  const uint32_t batchRows = std::max(l.maxTokensPerRequest, c.router.batching.maxTokens);
  if (!(n && n["max_rows_per_shard_call"])) {
    l.maxRowsPerShardCall = batchRows;
  } else if (l.maxRowsPerShardCall < batchRows) {
    p.fail(n["max_rows_per_shard_call"], "limits.max_rows_per_shard_call",
           std::to_string(l.maxRowsPerShardCall) + " is below the " + std::to_string(batchRows) +
               " rows one router batch may send a shard (max_tokens_per_request, "
               "router.batching.max_tokens)");
  }
  for (size_t i = 0; i < c.shards.size(); ++i) {
    const ShardConfig& s = c.shards[i];
    const uint64_t segments = s.experts.size() + (s.sharedExpert ? 1 : 0);
    if (segments > l.maxSegmentsPerShardCall) {
      p.fail(n ? n["max_segments_per_shard_call"] : root, "limits.max_segments_per_shard_call",
             std::to_string(l.maxSegmentsPerShardCall) + " is below the " +
                 std::to_string(segments) + " segments a call to " + s.name + " may need");
    }
  }
  if (!(n && n["idle_timeout_ms"])) {
    l.idleTimeoutMs = std::max(l.idleTimeoutMs, 2 * c.timeouts.requestMs);
  } else if (l.idleTimeoutMs <= c.timeouts.requestMs) {
    p.fail(n["idle_timeout_ms"], "limits.idle_timeout_ms",
           std::to_string(l.idleTimeoutMs) +
               " must exceed timeouts.request_ms = " + std::to_string(c.timeouts.requestMs) +
               " (a connection waiting for a reply is not idle)");
  }
}

std::string resolvePath(const std::string& path, std::string_view baseDir) {
  std::filesystem::path fp(path);
  if (fp.is_relative()) fp = std::filesystem::path(baseDir) / fp;
  return fp.lexically_normal().string();
}

TlsConfig parseTls(Parser& p, const YAML::Node& n, const std::string& where,
                   std::string_view baseDir) {
  p.checkKeys(n, where, {"ca", "cert", "key", "client_auth"});
  TlsConfig t;
  for (auto [key, field] : {std::pair{"ca", &t.ca}, {"cert", &t.cert}, {"key", &t.key}}) {
    const std::string k = Parser::join(where, key);
    if (!n[key]) p.fail(n, k, "missing (tls needs ca, cert and key: PEM file paths)");
    *field = resolvePath(p.str(n[key], k), baseDir);
  }
  if (n["client_auth"]) t.clientAuth = p.boolean(n["client_auth"], where + ".client_auth");
  return t;
}

void parseAdminPlane(Parser& p, const YAML::Node& n, std::string_view baseDir,
                     AdminPlaneConfig& a) {
  p.checkKeys(n, "admin", {"tls", "expose_paths"});
  if (n["tls"]) a.tls = parseTls(p, n["tls"], "admin.tls", baseDir);
  if (const auto e = n["expose_paths"]) {
    if (!e.IsSequence()) p.fail(e, "admin.expose_paths", "expected a list of paths");
    std::vector<std::string> paths;
    for (const auto& item : e) {
      auto s = p.str(item, "admin.expose_paths");
      if (s.front() != '/') p.fail(item, "admin.expose_paths", "'" + s + "' must start with /");
      paths.push_back(std::move(s));
    }
    a.exposePaths = std::move(paths);
  }
}

ClusterConfig parse(Parser& p, const YAML::Node& root, std::string_view baseDir) {
  ClusterConfig c;
  if (!root.IsDefined() || root.IsNull()) p.fail(root, "(top level)", "the file is empty");
  p.checkKeys(root, "",
              {"model", "router", "shards", "timeouts", "routing", "expert", "metrics", "limits",
               "tls", "admin"});

  const auto model = root["model"];
  if (!model) p.fail(root, "model", "missing (needs model.path: the checkpoint directory)");
  p.checkKeys(model, "model", {"path", "dtype"});
  if (const auto d = model["dtype"]) c.modelDtype = modelDType(p, d, "model.dtype");
  if (!model["path"]) p.fail(model, "model.path", "missing");
  c.modelPath = resolvePath(p.str(model["path"], "model.path"), baseDir);
  if (root["tls"]) c.tls = parseTls(p, root["tls"], "tls", baseDir);
  if (root["admin"]) parseAdminPlane(p, root["admin"], baseDir, c.admin);

  if (const auto r = root["router"]) {
    p.checkKeys(r, "router",
                {"listen", "device", "max_tokens", "admin", "threads", "batching",
                 "max_queued_tokens", "wire_dtype"});
    if (const auto w = r["wire_dtype"]) {
      const auto s = p.str(w, "router.wire_dtype");
      if (s == "f32") {
        c.router.wireDtype = DType::kF32;
      } else if (s == "bf16") {
        c.router.wireDtype = DType::kBF16;
      } else {
        p.fail(w, "router.wire_dtype", "'" + s + "' is not a wire dtype (expected f32 or bf16)");
      }
    }
    if (r["listen"]) c.router.listen = p.hostPort(r["listen"], "router.listen");
    if (r["device"]) c.router.device = p.device(r["device"], "router.device");
    if (r["admin"]) c.router.admin = p.hostPort(r["admin"], "router.admin");
    if (r["threads"])
      c.router.threads = static_cast<uint32_t>(p.uint(r["threads"], "router.threads", 1, 1024));
    if (r["max_tokens"]) {
      c.router.maxTokens =
          static_cast<uint32_t>(p.uint(r["max_tokens"], "router.max_tokens", 1, 1u << 20));
    }
    parseRouterBatching(p, r, c.router);
  }
  if (const auto e = root["expert"]) {
    c.expertDefaults.batching = parseExpertSection(p, e, "expert", c.expertDefaults.batching);
  }

  const auto shards = root["shards"];
  if (!shards) p.fail(root, "shards", "missing (at least one shard is needed)");
  if (!shards.IsSequence() || shards.size() == 0)
    p.fail(shards, "shards", "expected a non-empty list");
  std::set<std::string> names, addresses;
  for (size_t i = 0; i < shards.size(); ++i) {
    const auto s = shards[i];
    std::string where = "shards[" + std::to_string(i) + "]";
    p.checkKeys(s, where,
                {"name", "listen", "device", "experts", "layers", "admin", "threads",
                 "shared_expert", "expert"});
    ShardConfig sc;
    for (const char* required : {"name", "listen", "experts"}) {
      if (!s[required]) p.fail(s, Parser::join(where, required), "missing");
    }
    sc.name = p.str(s["name"], where + ".name");
    if (!names.insert(sc.name).second)
      p.fail(s["name"], where + ".name", "shard name '" + sc.name + "' used twice");
    sc.listen = p.hostPort(s["listen"], where + ".listen");
    if (sc.listen == c.router.listen || !addresses.insert(sc.listen).second) {
      p.fail(s["listen"], where + ".listen",
             "address " + sc.listen + " is already used by another service");
    }
    if (s["device"]) sc.device = p.device(s["device"], where + ".device");
    if (s["admin"]) sc.admin = p.hostPort(s["admin"], where + ".admin");
    if (s["threads"])
      sc.threads = static_cast<uint32_t>(p.uint(s["threads"], where + ".threads", 1, 1024));
    sc.experts = p.idList(s["experts"], where + ".experts");
    if (s["shared_expert"])
      sc.sharedExpert = p.boolean(s["shared_expert"], where + ".shared_expert");
    if (s["layers"] && !(s["layers"].IsScalar() && s["layers"].Scalar() == "all")) {
      sc.layers = p.idList(s["layers"], where + ".layers");
    }
    sc.batching = s["expert"] ? parseExpertSection(p, s["expert"], where + ".expert",
                                                   c.expertDefaults.batching)
                              : c.expertDefaults.batching;
    c.shards.push_back(std::move(sc));
  }

  if (const auto r = root["routing"]) parseRouting(p, r, c.routing);
  if (const auto m = root["metrics"]) parseMetrics(p, m, c.metrics);

  if (const auto t = root["timeouts"]) {
    p.checkKeys(t, "timeouts", {"request_ms", "shard_call_ms", "connect_ms", "drain_ms"});
    constexpr uint64_t kHour = 3600000;
    const struct {
      const char* key;
      uint32_t* field;
      uint64_t min;
    } fields[] = {{"request_ms", &c.timeouts.requestMs, 1},
                  {"shard_call_ms", &c.timeouts.shardCallMs, 1},
                  {"connect_ms", &c.timeouts.connectMs, 1},
                  {"drain_ms", &c.timeouts.drainMs, 0}};
    for (const auto& f : fields) {
      if (t[f.key]) {
        *f.field =
            static_cast<uint32_t>(p.uint(t[f.key], std::string("timeouts.") + f.key, f.min, kHour));
      }
    }
  }
  parseLimits(p, root, root["router"] && root["router"]["max_tokens"], c);
  // Admin addresses share the port space with the RPC addresses.
  std::set<std::string> used{c.router.listen};
  for (const auto& s : c.shards) used.insert(s.listen);
  auto checkAdmin = [&](const std::string& addr, const std::string& key, const YAML::Node& node) {
    if (!addr.empty() && !used.insert(addr).second) {
      p.fail(node, key, "address " + addr + " is already used by another service");
    }
    // With tls: on the RPC ports, a plain-HTTP admin plane reachable from the network would be
    // the one unauthenticated door left (POST /admin/placement rewires the cluster).
    if (!addr.empty() && c.tls && !c.admin.tls && !isLoopbackAddress(addr)) {
      p.fail(node, key, "address " + addr + " is not loopback: " + kAdminLoopbackRule);
    }
  };
  if (root["router"]) checkAdmin(c.router.admin, "router.admin", root["router"]["admin"]);
  for (size_t i = 0; i < c.shards.size(); ++i) {
    checkAdmin(c.shards[i].admin, "shards[" + std::to_string(i) + "].admin", shards[i]["admin"]);
  }
  return c;
}

}  // namespace

bool isLoopbackAddress(std::string_view hostPort) {
  std::string_view host = hostPort.substr(0, hostPort.rfind(':'));
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  std::string h(host);
  std::transform(h.begin(), h.end(), h.begin(), [](unsigned char ch) { return std::tolower(ch); });
  if (h == "localhost") return true;
  in_addr v4{};
  if (inet_pton(AF_INET, h.c_str(), &v4) == 1) return (ntohl(v4.s_addr) >> 24) == 127;
  in6_addr v6{};
  if (inet_pton(AF_INET6, h.c_str(), &v6) == 1) {
    if (IN6_IS_ADDR_LOOPBACK(&v6)) return true;
    return IN6_IS_ADDR_V4MAPPED(&v6) && v6.s6_addr[12] == 127;  // ::ffff:127.x.y.z
  }
  return false;  // "" (all interfaces), 0.0.0.0, a routable address, any other name
}

bool ShardConfig::servesLayer(uint32_t layer) const {
  return !layers || std::find(layers->begin(), layers->end(), layer) != layers->end();
}

const ShardConfig* ClusterConfig::findShard(std::string_view name) const {
  for (const auto& s : shards) {
    if (s.name == name) return &s;
  }
  return nullptr;
}

std::string_view missingExpertPolicyName(MissingExpertPolicy policy) {
  switch (policy) {
    case MissingExpertPolicy::kError:
      return "error";
    case MissingExpertPolicy::kRenormalize:
      return "renormalize";
    case MissingExpertPolicy::kReroute:
      return "reroute";
  }
  return "error";
}

std::string_view modelDTypeName(ModelDType d) {
  switch (d) {
    case ModelDType::kAuto:
      return "auto";
    case ModelDType::kF32:
      return "f32";
    case ModelDType::kBF16:
      return "bf16";
    case ModelDType::kF16:
      return "f16";
  }
  return "f32";
}

DType resolveModelDType(ModelDType configured, DType checkpointDtype) {
  switch (configured) {
    case ModelDType::kAuto:  // checkpoint-only dtypes: f64 -> f32; FP8 -> bf16 (DeepSeek-V3's
                             // choice); u8 (MXFP4 blocks, gpt-oss) -> bf16, which holds every
                             // MXFP4 value exactly
      return checkpointDtype == DType::kF64 ? DType::kF32
             : checkpointDtype == DType::kF8E4M3 || checkpointDtype == DType::kF8E5M2 ||
                     checkpointDtype == DType::kU8
                 ? DType::kBF16
                 : checkpointDtype;
    case ModelDType::kF32:
      return DType::kF32;
    case ModelDType::kBF16:
      return DType::kBF16;
    case ModelDType::kF16:
      return DType::kF16;
  }
  return DType::kF32;
}

Result<std::pair<std::string, uint16_t>> parseHostPort(std::string_view text) {
  auto colon = text.rfind(':');
  if (colon == std::string_view::npos || colon == 0) {
    std::string message = "'";  // appended piecewise: GCC 12's -Wrestrict misfires on a + chain
    message.append(text).append("' is not host:port");
    return makeError(message);
  }
  auto portText = text.substr(colon + 1);
  unsigned port = 0;
  auto [p, ec] = std::from_chars(portText.data(), portText.data() + portText.size(), port);
  if (ec != std::errc() || p != portText.data() + portText.size() || port == 0 || port > 65535) {
    return makeError("port '" + std::string(portText) + "' in '" + std::string(text) +
                     "' is not in 1..65535");
  }
  return std::make_pair(std::string(text.substr(0, colon)), static_cast<uint16_t>(port));
}

Result<ClusterConfig> parseClusterConfig(std::string_view yaml, std::string_view sourceName,
                                         std::string_view baseDir) {
  Parser p(sourceName);
  try {
    YAML::Node root = YAML::Load(std::string(yaml));
    ClusterConfig c = parse(p, root, baseDir);
    c.sourcePath = std::string(sourceName);
    return c;
  } catch (const ConfigError& e) {
    return makeError(e.message);
  } catch (const YAML::Exception& e) {
    return makeError(std::string(sourceName) + ":" + std::to_string(e.mark.line + 1) +
                     ": invalid YAML: " + e.msg);
  } catch (const std::exception& e) {  // anything else yaml-cpp or the standard library throws
    return makeError(std::string(sourceName) + ": cannot parse: " + e.what());
  }
}

Result<ClusterConfig> loadClusterConfig(const std::string& path) {
  std::ifstream in(path);
  if (!in) return makeError(path + ": cannot open cluster config");
  std::stringstream ss;
  ss << in.rdbuf();
  auto base = std::filesystem::absolute(path).parent_path().string();
  return parseClusterConfig(ss.str(), path, base);
}

std::string_view perExpertMetricsName(PerExpertMetrics mode) {
  switch (mode) {
    case PerExpertMetrics::kAuto:
      return "auto";
    case PerExpertMetrics::kAll:
      return "all";
    case PerExpertMetrics::kOff:
      return "off";
  }
  return "auto";
}

PerExpertMetrics resolvePerExpertMetrics(const MetricsConfig& config, const ModelConfig& model,
                                         std::string* why) {
  if (why) why->clear();
  if (config.perExpert != PerExpertMetrics::kAuto) return config.perExpert;
  const uint64_t pairs = static_cast<uint64_t>(model.moeLayers.size()) * model.numExperts;
  if (pairs <= kPerExpertSeriesLimit) return PerExpertMetrics::kAll;
  if (why) {
    *why = "metrics.per_expert: off (" + std::to_string(model.moeLayers.size()) + " MoE layers × " +
           std::to_string(model.numExperts) + " experts = " + std::to_string(pairs) +
           " series per per-expert metric, over " + std::to_string(kPerExpertSeriesLimit) +
           "); per-layer aggregates stay; set metrics: {per_expert: all} to export them anyway";
  }
  return PerExpertMetrics::kOff;
}

Status validateLimits(const ClusterConfig& config, const ModelConfig& model) {
  const LimitsConfig& l = config.limits;
  const uint64_t rows = std::max(l.maxRowsPerShardCall, l.maxTokensPerRequest);
  // f32 rows (request or reply), each row's (index, weight) in up to top-k + 1 segments, [T, E]
  // gate logits, and 64 KiB for everything else.
  const uint64_t need = rows * model.hiddenSize * 4 + rows * (model.topK + 1) * 8 +
                        uint64_t{l.maxTokensPerRequest} * model.numExperts * 4 + (64u << 10);
  if (l.maxMessageBytes < need) {
    return Status::error(
        StatusCode::kFailedPrecondition,
        config.sourcePath + ": limits.max_message_bytes = " + std::to_string(l.maxMessageBytes) +
            " is below the " + std::to_string(need) +
            " bytes of the largest call this model allows (" + std::to_string(rows) +
            " rows × hidden " + std::to_string(model.hiddenSize) +
            " in f32, with segments and logits); raise it, or lower "
            "limits.max_tokens_per_request");
  }
  return Status::ok();
}

Status validatePlacement(const ClusterConfig& config, const ModelConfig& model) {
  const std::string src = config.sourcePath;
  for (const auto& s : config.shards) {
    for (auto e : s.experts) {
      if (e >= model.numFfnExperts) {
        std::ostringstream os;
        os << src << ": shard " << s.name << " lists expert " << e << " but the model has "
           << model.numFfnExperts << " FFN experts";
        if (model.numFfnExperts < model.numExperts) {
          os << " (ids " << model.numFfnExperts << ".." << model.numExperts - 1
             << " are zero-computation experts, evaluated on the router)";
        }
        return Status::error(os.str());
      }
    }
    if (s.sharedExpert && model.sharedIntermediateSize == 0) {
      return Status::error(src + ": shard " + s.name + " sets shared_expert: true but the model (" +
                           model.modelType + ") has no shared expert");
    }
    if (s.layers) {
      for (auto l : *s.layers) {
        if (std::find(model.moeLayers.begin(), model.moeLayers.end(), l) == model.moeLayers.end()) {
          return Status::error(src + ": shard " + s.name + " lists layer " + std::to_string(l) +
                               ", which is not an MoE layer of the model");
        }
      }
    }
  }
  for (auto layer : model.moeLayers) {
    for (uint32_t e = 0; e < model.numFfnExperts; ++e) {
      bool served =
          std::any_of(config.shards.begin(), config.shards.end(), [&](const ShardConfig& s) {
            return s.servesLayer(layer) &&
                   std::find(s.experts.begin(), s.experts.end(), e) != s.experts.end();
          });
      if (!served) {
        return Status::error(src + ": no shard serves expert " + std::to_string(e) + " of layer " +
                             std::to_string(layer));
      }
    }
  }
  return Status::ok();
}

}  // namespace moe
