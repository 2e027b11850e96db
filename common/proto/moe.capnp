# moe-cluster wire contract: the Router service (what clients call) and the ExpertShard service
# (what the router calls). Tensors are little-endian, row-major.
@0xd4a5c6e0b3f1a297;

$import "/capnp/c++.capnp".namespace("moe::proto");

enum DType {
  f32 @0;
  bf16 @1;
  f16 @2;
}

struct Tensor {
  dtype @0 :DType;
  shape @1 :List(UInt32);
  data @2 :Data;
}

struct ServiceInfo {
  version @0 :Text;
  role @1 :Text;            # "router" | "expert"
  name @2 :Text;            # shard name, or "router"
  modelType @3 :Text;
  hiddenSize @4 :UInt32;
  intermediateSize @5 :UInt32;
  numExperts @6 :UInt32;
  topK @7 :UInt32;
  moeLayers @8 :List(UInt32);
  backend @9 :Text;         # "blas", "cuda:0", ...
  maxTokens @10 :UInt32;
  experts @11 :List(LayerExperts);   # what this process serves (router: the whole placement)
  ready @12 :Bool;          # router: every expert reachable on at least one shard
  shards @13 :List(ShardStatus);     # router only
  fingerprint @14 :Text;  # modelFingerprint of the checkpoint this process loaded
  dtype @15 :Text;  # resident/compute dtype of its experts (model.dtype resolved: f32, bf16, f16)
  draining @16 :Bool;  # SIGTERM received: finishing its calls, taking no new ones
  numLayers @17 :UInt32;  # decoder layers of the model (num_hidden_layers); moeLayers are MoE
  familyName @18 :Text;  # the family table's name for modelType ("Qwen3-MoE", "GLM-4-MoE", ...)
  routingRecipe @19 :Text;  # the routing rule in use, e.g. "sigmoid, + correction bias ..., top-k"
}

struct LayerExperts {
  layer @0 :UInt32;
  experts @1 :List(UInt32);
}

struct ShardStatus {
  name @0 :Text;
  address @1 :Text;
  reachable @2 :Bool;
  error @3 :Text;
}

interface Router {
  # Returns the MoE layer output for `hidden` [T, H] (f32, bf16 or f16; output is f32 [T, H]).
  # prevLogits: MoE++ gating residual, the `gateLogits` [T, E] of the previous MoE layer's reply
  # for the same tokens (absent for the first MoE layer; an error for models without a residual).
  # gateLogits: this layer's router logits [T, E] f32 (with the residual, without noise); returned
  # for models with a gating residual, or when options.returnRouting.
  forward @0 (layer :UInt32, hidden :Tensor, prevLogits :Tensor, options :ForwardOptions)
      -> (output :Tensor, stats :ForwardStats, routing :Routing, gateLogits :Tensor);
  info @1 () -> (info :ServiceInfo);
}

struct ForwardOptions {
  returnRouting @0 :Bool;   # fill `routing` (and `gateLogits`) in the reply
  noiseSeed @1 :UInt64;     # noisy top-k: this call's seed (0 = the configured seed)
}

# The routing decision of one call: for token t and slot j < k, experts[t·k + j] with final weight
# weights[t·k + j] (0 when dropped[t·k + j]: over the expert's capacity, or its expert had no
# replica left under routing.missing_expert: renormalize / reroute). `affected` is empty when no
# token of the call lost an expert.
struct Routing {
  k @0 :UInt32;
  experts @1 :List(UInt32);
  weights @2 :List(Float32);
  dropped @3 :List(Bool);
  affected @4 :List(Bool);  # per token: an assignment was dropped or moved because its expert had no replica
}

struct ForwardStats {
  tokens @0 :UInt32;
  shardCalls @1 :UInt32;
  rowsSent @2 :UInt32;      # token rows sent over the network, summed over shards
  gateMicros @3 :UInt64;
  dispatchMicros @4 :UInt64;  # fan-out until every shard answered
  totalMicros @5 :UInt64;
  droppedAssignments @6 :UInt32;  # (token, expert) pairs over capacity, not computed
  routerRows @7 :UInt32;          # MoE++ zero-computation assignments evaluated on the router
  sharedRows @8 :UInt32;          # rows the shared expert ran on (router or shard)
  batchRequests @9 :UInt32;       # requests merged into the batch this one was served in
  batchTokens @10 :UInt32;        # tokens of that batch
}

# One expert's share of a shard call: which rows of `rows` it applies to, with what weight.
struct ExpertSegment {
  expert @0 :UInt32;
  rowIndex @1 :List(UInt32);   # indices into the call's `rows` tensor, distinct
  weight @2 :List(Float32);    # same length as rowIndex
  shared @3 :Bool;             # the layer's shared expert (`expert` is ignored)
}

interface ExpertShard {
  # rows: the unique token rows [R, H] (f32) this shard needs; returns [R, H] f32 where row r is
  # Σ over segments naming r of weight · FFN_expert(rows[r]).
  run @0 (layer :UInt32, rows :Tensor, segments :List(ExpertSegment)) -> (output :Tensor);
  info @1 () -> (info :ServiceInfo);
}
