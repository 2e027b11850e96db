// The cluster config: one YAML file describes the model, the router, every shard and the
// timeouts. It is parsed and validated once at start-up into these typed structs; after that,
// code trusts them. Errors name the file, the line and the key ("cluster.yaml:7: shards[1].listen:
// port 70000 out of range").
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/compute_device.h"
#include "common/dtype.h"
#include "common/result.h"

namespace moe {

struct ModelConfig;

// Coalescing on an expert shard (config `expert.batching`, per shard `shards[].expert.batching`):
// concurrent ExpertShard.run calls for the same layer that wait for the compute thread are merged
// into one compute job, so each expert runs one GEMM over all their rows.
struct ExpertBatchingConfig {
  bool enabled = true;      // false: one compute job per call
  uint32_t windowUs = 0;    // an idle shard may hold a call this long for company; 0 = never wait
  uint32_t maxRows = 8192;  // rows per merged job; a larger call still runs, alone
};

// Expert-side settings every shard inherits (top-level config section `expert:`).
struct ExpertServiceConfig {
  ExpertBatchingConfig batching;
};

struct ShardConfig {
  std::string name;    // unique, e.g. "shard-0"
  std::string listen;  // "host:port"
  ComputeDevice device;
  std::vector<uint32_t> experts;                // expert ids served, on every layer in `layers`
  std::optional<std::vector<uint32_t>> layers;  // MoE layers served; unset: all of them
  std::string admin;  // admin HTTP plane "host:port" (/metrics /healthz /readyz /v1/info); "" = off
  uint32_t threads = 0;  // CPU threads for BLAS on this shard; 0 = the library's default
  // Serve the layers' shared expert here (Qwen2-MoE, DeepSeek) instead of on the router. With
  // several such shards the first one listed is used.
  bool sharedExpert = false;
  // The cluster's `expert.batching` with this shard's own `expert.batching` keys over it.
  ExpertBatchingConfig batching;
  bool servesLayer(uint32_t layer) const;
};

// Request batching on the router (config `router.batching`): concurrent forward calls for the
// same layer are merged before gating and dispatch.
struct RouterBatchingConfig {
  bool enabled = true;
  uint32_t windowUs = 0;      // how long a batch may wait for more requests; 0 = never wait
  uint32_t maxTokens = 4096;  // the most tokens one merged batch holds
};

struct RouterConfig {
  // router.wire_dtype: the dtype of rows sent to shards and of the results they return (f32 or
  // bf16; bf16 halves the bytes). Client-facing Router.forward is unaffected.
  DType wireDtype = DType::kF32;
  std::string listen = "127.0.0.1:7100";
  ComputeDevice device{ComputeDevice::Kind::kCpu, 0};
  uint32_t maxTokens = 8192;  // per forward call; larger batches are rejected, not truncated
  std::string admin;          // admin HTTP plane "host:port"; "" = off
  uint32_t threads = 0;       // CPU threads for BLAS gating; 0 = the library default
  RouterBatchingConfig batching;
  // Tokens of forward calls waiting to be batched; a call that would exceed it is refused
  // (ResourceExhausted) rather than queued without bound.
  uint32_t maxQueuedTokens = 65536;
};

struct TimeoutConfig {
  uint32_t requestMs = 60000;    // a whole Router.forward
  uint32_t shardCallMs = 30000;  // one ExpertShard.run
  uint32_t connectMs = 2000;     // opening a connection to a shard
  uint32_t drainMs = 0;  // on SIGTERM: /readyz says not ready but requests are served this long
};

// What the router does with a token's assignment to an expert that has no available replica
// (config `routing.missing_expert`; router_service/missing_experts.h has the exact rules).
enum class MissingExpertPolicy {
  kError,        // the request fails with Unavailable, naming the layer and the experts
  kRenormalize,  // the assignment is dropped; the token's other weights keep its weight sum
  kReroute,      // the assignment moves to the best-scoring available expert the token lacks
};

// "error" | "renormalize" | "reroute": the config spelling.
std::string_view missingExpertPolicyName(MissingExpertPolicy policy);

// Routing options on top of the model's own rule (config section `routing:`); all off by default.
struct RoutingOptions {
  // Noisy top-k (Shazeer et al. 2017): s_i += n_i · softplus((x·W_noiseᵀ)_i), n_i ~ N(0,1) drawn
  // by routingNoise(seed, layer, token, i) (common/routing_noise.h); W_noise is the checkpoint's
  // noiseWeight(layer). A request may pass its own seed.
  bool noisyTopk = false;
  uint64_t noiseSeed = 0;
  // Capacity: cap = ceil(capacity_factor · T · k / E) assignments per FFN expert and batch; beyond
  // it the expert's lowest-weight assignments are dropped (ties: the later token is dropped).
  // 0 = no cap. Kept weights are rescaled to the token's pre-drop sum only when
  // capacityRenormalize.
  double capacityFactor = 0.0;
  bool capacityRenormalize = false;
  // Degraded routing when every replica of an expert is gone; by default such a request fails.
  MissingExpertPolicy missingExpert = MissingExpertPolicy::kError;
};

// Per-(layer, expert) metric series (config `metrics.per_expert`): the expert-load counters with
// both labels, on the router and the shards. DeepSeek-V3 has 58 × 256 such pairs per metric, so
// past kPerExpertSeriesLimit pairs the default is off; per-layer aggregates (max/mean load,
// imbalance, entropy) are exported either way.
enum class PerExpertMetrics {
  kAuto,  // not set: all when layers × experts ≤ kPerExpertSeriesLimit, else off
  kAll,
  kOff,
};
inline constexpr uint64_t kPerExpertSeriesLimit = 4096;

// "all" | "off" ("auto" for the unset default): the config spelling.
std::string_view perExpertMetricsName(PerExpertMetrics mode);

struct MetricsConfig {
  PerExpertMetrics perExpert = PerExpertMetrics::kAuto;
};

// Bounds on the work and memory one caller can claim (config section `limits:`). Every limit is
// checked before the work it bounds starts; a call over one fails at once with ResourceExhausted
// naming the limit and its value. README "Threat model" says what each one protects against.
struct LimitsConfig {
  // Tokens of one Router.forward call. `router.max_tokens` is the older spelling of the same limit.
  uint32_t maxTokensPerRequest = 8192;
  // Rows of one ExpertShard.run call. Default: the most a router batch can hold (the larger of
  // max_tokens_per_request and router.batching.max_tokens); never less than that.
  uint32_t maxRowsPerShardCall = 8192;
  // Segments of one ExpertShard.run call. A shard also refuses an expert named twice, so its work
  // per call is bounded by rows × (experts it holds + a shared expert) whatever this says.
  uint32_t maxSegmentsPerShardCall = 1024;
  // Largest RPC message a process reads (Cap'n Proto traversal limit): a peer declaring larger
  // segments is refused before anything is allocated for them.
  uint64_t maxMessageBytes = uint64_t{512} << 20;
  // Calls a process serves at once (Router.forward on the router, ExpertShard.run on a shard).
  uint32_t maxInflightRequests = 1024;
  // Open RPC connections a process serves; beyond it a new connection is closed at once.
  uint32_t maxConnections = 256;
  // A served connection that neither reads nor writes a byte for this long is closed (a peer that
  // declares a message and sends nothing). Must exceed timeouts.request_ms; unset, it is the
  // larger of 5 minutes and twice timeouts.request_ms.
  uint32_t idleTimeoutMs = 300000;
};

// Mutual TLS (config `tls:` for every RPC port, `admin.tls:` for the admin HTTP planes): PEM
// files, resolved against the YAML file's directory. Read (and checked) by whoever serves or
// connects, so a process names the file it cannot use at start-up.
struct TlsConfig {
  std::string ca;          // CA bundle that signs every peer's certificate
  std::string cert;        // this process's certificate (chain)
  std::string key;         // its private key
  bool clientAuth = true;  // client_auth: servers require a client certificate the CA signed
};

// The admin HTTP planes (config section `admin:`; each service's address stays in router.admin /
// shards[].admin). With `tls:` set and no `admin.tls`, admin addresses must be loopback.
struct AdminPlaneConfig {
  std::optional<TlsConfig> tls;
  // admin.expose_paths: the paths served (e.g. [/metrics, /healthz, /readyz]); unset: all.
  std::optional<std::vector<std::string>> exposePaths;
};

// Why an admin address was refused (config error, and the services' --admin override).
inline constexpr const char* kAdminLoopbackRule =
    "admin plane without admin.tls must listen on loopback when tls: is set (127.0.0.0/8, ::1 or "
    "localhost; or set admin.tls)";

// Whether a "host:port" binds loopback only: 127.0.0.0/8, ::1 (or ::ffff:127.x) or "localhost".
// ":port", 0.0.0.0, [::] and every other address or name are not.
bool isLoopbackAddress(std::string_view hostPort);

// model.dtype: the resident and compute dtype of the experts (shards' and the router's local
// ones). kAuto: the checkpoint's dtype. Accumulation and gate scores are fp32 whatever it is.
// Unset means f32 (the precision the parity suites were written for).
enum class ModelDType { kAuto, kF32, kBF16, kF16 };

// "auto" | "f32" | "bf16" | "f16": the config spelling.
std::string_view modelDTypeName(ModelDType d);

// The dtype experts are held in: `configured`, or for kAuto the checkpoint's `checkpointDtype`
// (f64 checkpoints: f32; FP8 and MXFP4 (u8 blocks) checkpoints: bf16).
DType resolveModelDType(ModelDType configured, DType checkpointDtype);

struct ClusterConfig {
  std::string sourcePath;  // the YAML file it came from
  std::string modelPath;   // checkpoint directory, resolved against the YAML file's directory
  ModelDType modelDtype = ModelDType::kF32;  // model.dtype
  RouterConfig router;
  std::vector<ShardConfig> shards;
  TimeoutConfig timeouts;
  RoutingOptions routing;
  ExpertServiceConfig expertDefaults;  // `expert:`; already merged into each ShardConfig
  MetricsConfig metrics;
  std::optional<TlsConfig> tls;  // `tls:`; unset: plaintext RPC
  AdminPlaneConfig admin;        // `admin:`
  LimitsConfig limits;  // after parsing: maxRowsPerShardCall resolved, router.maxTokens equal to it

  const ShardConfig* findShard(std::string_view name) const;
};

// Parses YAML text; `sourceName` prefixes error messages and `baseDir` resolves relative paths.
Result<ClusterConfig> parseClusterConfig(std::string_view yaml, std::string_view sourceName,
                                         std::string_view baseDir);
Result<ClusterConfig> loadClusterConfig(const std::string& path);

// Checks the placement against the model: expert ids < num experts, layers are MoE layers, and
// every (layer, expert) pair is served by at least one shard.
Status validatePlacement(const ClusterConfig& config, const ModelConfig& model);

// Checks that limits.max_message_bytes holds the largest call and reply the other limits allow for
// this model (rows × hidden in f32, their segments, gate logits), so that no legitimate call is
// cut off as "too large"; FailedPrecondition naming both values otherwise.
Status validateLimits(const ClusterConfig& config, const ModelConfig& model);

// The per-expert mode in force for this model: the configured one, or for kAuto all/off by the
// number of (MoE layer, FFN expert) pairs. `why` (optional) gets a start-up log line for the
// automatic choice of off, and stays empty otherwise.
PerExpertMetrics resolvePerExpertMetrics(const MetricsConfig& config, const ModelConfig& model,
                                         std::string* why = nullptr);

// "host:port" → (host, port); errors name the text.
Result<std::pair<std::string, uint16_t>> parseHostPort(std::string_view text);

}  // namespace moe
