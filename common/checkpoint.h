// A HuggingFace-layout MoE checkpoint directory: config.json plus model.safetensors, or shards
// listed in model.safetensors.index.json. Each process asks only for the tensors it needs; weights
// (F32, BF16, F16, F64, FP8 E4M3/E5M2 with DeepSeek-V3 128×128 block scales, or gpt-oss MXFP4
// *_blocks/*_scales) are converted to fp32 on load and checked against the shapes config.json
// implies.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "common/model_families.h"
#include "common/result.h"
#include "common/safetensors.h"

namespace moe {

// How a layer's router turns a token into logits over the experts.
//   kLinear:       s = x·Wgᵀ (every family but the two below)
//   kTwoLayerTanh: s = W2·tanh(W1·x) [+ Wmap·s_prev] (MoE++ with moe_2layer_gate)
//   kAttention:    Yuan 2.0-M32's attention router over the expert axis
enum class GateKind { kLinear, kTwoLayerTanh, kAttention };

// The routed experts' FFN (the family's MLP), with x the expert's input row:
//   kSwiglu:        w2·(silu(w1·x) ⊙ (w3·x))                                  (every family but)
//   kClampedSwiglu: gpt-oss: g = min(w1·x + b1, limit), u = clamp(w3·x + b3, -limit, limit),
//                   w2·((u + 1) ⊙ g ⊙ σ(alpha·g)) + b2
//   kRelu2:         NemotronH (mlp_hidden_act relu2): w2·relu(w3·x)², non-gated: no w1 at all
// Biases (b1, b3, b2) are present only when ModelConfig::expertBias.
enum class ExpertActivation { kSwiglu, kClampedSwiglu, kRelu2 };

// MoE++ zero-computation experts: of N experts the first N-4 are FFNs, then 2 constant experts,
// 1 copy expert and the zero expert (index N-1). LongCat-Flash: every id past the FFN experts is
// an identity (copy) expert. Every other family has only FFN experts.
enum class ExpertKind { kFfn, kConstant, kCopy, kZero };
inline constexpr uint32_t kMoePlusPlusZeroComputeExperts = 4;

// The model facts the cluster needs, read from config.json with each family's field names.
struct ModelConfig {
  std::string modelType;            // config.json model_type
  std::string familyName;           // the family table's name for it (model_families.h)
  uint32_t hiddenSize = 0;          // hidden_size (aliases: the family table)
  uint32_t intermediateSize = 0;    // one routed expert's FFN width (intermediate_size or
                                    // moe_intermediate_size, as the family names it)
  uint32_t numExperts = 0;          // num_local_experts | num_experts | n_routed_experts | ...
  uint32_t topK = 0;                // num_experts_per_tok | moe_k | moe_topk | ...
  uint32_t numLayers = 0;           // num_hidden_layers
  std::vector<uint32_t> moeLayers;  // layers with a sparse MoE block (the family's LayerRule);
                                    // other layers are dense
  // How a token's logits become its experts and weights (the family's recipe, with the
  // config's values: norm_topk_prob, n_group, routed_scaling_factor, ...).
  RoutingRecipe routing;
  // Shared experts: one FFN of this width applied to every token (0: none), ungated or gated by
  // sigmoid(x·w_gate) (Qwen2-MoE, Qwen3-Next).
  uint32_t sharedIntermediateSize = 0;
  bool sharedExpertGated = false;
  // The routed experts' FFN and where the routing weight applies.
  ExpertActivation expertActivation = ExpertActivation::kSwiglu;
  float swigluAlpha = 1.702f;  // kClampedSwiglu: σ(alpha·g)
  float swigluLimit = 7.0f;    // kClampedSwiglu: the clamp
  bool expertBias = false;     // experts carry b1/b3/b2 (gpt-oss)
  // Llama 4: a token's routing weight scales the expert's input (FFN(w·x)) instead of its output
  // (w·FFN(x)).
  bool weightOnInput = false;

  GateKind gateKind = GateKind::kLinear;
  // Experts that are FFNs and live on shards: ids [0, numFfnExperts). Equal to numExperts except
  // for MoE++, whose last 4 ids are the zero-computation experts evaluated on the router.
  uint32_t numFfnExperts = 0;
  // MoE++ (configuration_moe_plus_plus.py keys; topK is fixed at 2 there, MOE_TOP_K):
  bool gatingResidual = false;       // gate_map: s += Wmap·s_prev (MoE++ always has it)
  bool moeMixtralGating = false;     // moe_use_mixtral_gating: top-k of logits, softmax over them,
                                     // no zero-expert masking, no input scaling
  bool moeLogitsNorm = false;        // moe_use_logits_norm: s /= std(s) / moe_gate_norm_std
  float moeGateNormStd = 1.0f;       // moe_gate_norm_std
  bool moeFeatureNoMulTopk = false;  // moe_feature_no_mul_topk: experts see x, not k·x
  // How the block adds its shared expert (Cohere2-MoE shared_expert_combination_strategy).
  SharedCombine sharedCombine = SharedCombine::kSum;

  // quantization_config.quant_method ("" when none): gpt-oss's "mxfp4" experts are dequantized
  // at load; a method the loader does not know is named in the errors of the tensors it lacks.
  std::string quantMethod;
  // NemotronH: the shared expert is the same non-gated relu² FFN as the routed ones (every other
  // family's shared expert is SwiGLU).
  ExpertActivation sharedActivation = ExpertActivation::kSwiglu;
  // LongCat-Flash (LongcatFlashExperts): ids [numFfnExperts, numExperts) are zero_expert_num
  // identity experts, output += weight · x, computed on the router; x is not scaled by k.
  bool identityZeroExperts = false;
  // Vision-language wrappers (model_families.h WrapperSpec): config.json's own model_type (e.g.
  // qwen3_5_moe) when modelType is its nested text model's; "" for a text-only checkpoint.
  std::string wrapperType;

  ExpertKind expertKind(uint32_t expert) const {
    if (expert < numFfnExperts) return ExpertKind::kFfn;
    if (identityZeroExperts) return ExpertKind::kCopy;
    const uint32_t j = expert - numFfnExperts;  // MoE++: 0,1 constant; 2 copy; 3 zero
    return j < 2 ? ExpertKind::kConstant : j == 2 ? ExpertKind::kCopy : ExpertKind::kZero;
  }
  // The factor on the block's whole output, routed + shared: 1/2 when a shared expert is
  // averaged in (Cohere2-MoE: (routed + shared) / 2), else 1.
  float blockOutputScale() const {
    return sharedCombine == SharedCombine::kAverage && sharedIntermediateSize > 0 ? 0.5f : 1.0f;
  }
  // The factor MoE++ scales expert inputs by (k unless mixtral gating or feature_no_mul_topk);
  // 1 for every other family.
  float expertInputScale() const {
    return numFfnExperts < numExperts && !identityZeroExperts && !moeMixtralGating &&
                   !moeFeatureNoMulTopk
               ? static_cast<float>(topK)
               : 1.0f;
  }
};

struct ExpertTensors {
  std::vector<float> w1;  // [I, H]; empty for a non-gated (kRelu2) FFN, which has up/down only
  std::vector<float> w3;  // [I, H]
  std::vector<float> w2;  // [H, I]
  // Biases, only when ModelConfig::expertBias (else empty).
  std::vector<float> b1;  // [I]
  std::vector<float> b3;  // [I]
  std::vector<float> b2;  // [H]
};

// MoE++ two-layer gate: logits = w2 · tanh(w1 · x).
struct TwoLayerGateTensors {
  std::vector<float> w1;  // [8N, H]  (mlp.moe.gate.wg.0.weight)
  std::vector<float> w2;  // [N, 8N]  (mlp.moe.gate.wg.2.weight)
};

// MoE++ constant expert: [a1, a2] = softmax(wc · x̃); output a1·x̃ + a2·v.
struct ConstantExpertTensors {
  std::vector<float> wc;  // [2, H]  (experts.experts.{e}.wg.weight)
  std::vector<float> v;   // [H]     (experts.experts.{e}.constant)
};

// MoE++ gating()'s recipe from the config's flags: mixtral gating is top-k of the logits then
// softmax over them; the default gating is softmax, top-k, the zero expert (id N-1) weighted 0,
// renormalized; either after the optional logits norm.
RoutingRecipe moePlusPlusRecipe(const ModelConfig& m);

// config.json's text parsed and validated through the family table; `where` names it in errors.
Result<ModelConfig> parseModelConfig(const std::string& jsonText, const std::string& where);

class Checkpoint {
 public:
  // Reads and validates config.json and the safetensors header(s). Errors name the file and the
  // key or tensor at fault.
  static Result<std::unique_ptr<Checkpoint>> open(const std::string& dir);

  const ModelConfig& config() const { return config_; }
  const std::string& dir() const { return dir_; }
  // Every safetensors file of the checkpoint, each once (in index or opening order).
  const std::vector<std::unique_ptr<SafetensorsFile>>& files() const { return files_; }

  // Tensor names and layouts come from the family table (model_families.h): per-expert tensors
  // (experts.{E}.gate_proj/up_proj/down_proj, w1/w3/w2, or MoE++/Yuan's fused [2I, H] gate|up
  // per expert) or one tensor per layer for all experts (experts.gate_up_proj [E, 2I, H] or
  // [E, H, 2I] with concatenated or interleaved halves, Granite's input_linear/output_linear,
  // DBRX's experts.mlp.w1/v1/w2, NemotronH's non-gated experts.up_proj [E, I, H] +
  // experts.down_proj), recognized from the header's names and checked against the shapes
  // config.json implies. The gate half becomes w1, the linear half w3, down w2 [H, I]; a
  // non-gated (relu2) expert has no w1.
  // A dense layer or an expert id out of range (for expert(): not an FFN expert) is an error
  // naming it.
  Result<std::vector<float>> gateWeight(uint32_t layer) const;          // [E, H] (kLinear)
  Result<ExpertTensors> expert(uint32_t layer, uint32_t expert) const;  // w1=gate, w3=up, w2=down
  Result<TwoLayerGateTensors> twoLayerGate(uint32_t layer) const;       // kTwoLayerTanh
  Result<std::vector<float>> gateResidualMap(uint32_t layer) const;     // [E, E] MoE++ gate_map
  Result<ConstantExpertTensors> constantExpert(uint32_t layer, uint32_t expert) const;  // MoE++
  // Yuan attention router: [3E, H], rows [0,E) = mlp.gate.query.weight, [E,2E) = key, [2E,3E) =
  // value (the order torch.chunk(query_key_value(x), 3) splits in the reference).
  Result<std::vector<float>> attentionRouter(uint32_t layer) const;
  // Noisy top-k's W_noise [E, H]: the MoE block's "w_noise.weight" (e.g.
  // model.layers.{L}.block_sparse_moe.w_noise.weight); any family, present only when written.
  Result<std::vector<float>> noiseWeight(uint32_t layer) const;
  // Shared expert FFN [Is, H]/[Is, H]/[H, Is] (Qwen2-MoE mlp.shared_expert.*, DeepSeek
  // mlp.shared_experts.*); an error when the model has none.
  Result<ExpertTensors> sharedExpert(uint32_t layer) const;
  Result<std::vector<float>> sharedExpertGate(uint32_t layer) const;  // [1, H] Qwen2-MoE
  // [E] the correction bias added for choosing (DeepSeek-V3, GLM-4-MoE, dots1, MiniMax-M2,
  // ERNIE-4.5's moe_statics [1, E])
  Result<std::vector<float>> scoreCorrectionBias(uint32_t layer) const;
  Result<std::vector<float>> routerBias(uint32_t layer) const;  // [E] gpt-oss router.bias
  const FamilySpec& family() const { return *spec_; }

  // The stored dtype of the routed experts' weights (the first expert tensor of the checkpoint;
  // f32 when there is none; u8 for MXFP4 blocks): what model.dtype auto resolves from.
  DType expertsDType() const;

  // Any tensor by name, widened to fp32, with its shape checked ("tensor X: shape [a,b] expected,
  // file has [c,d]"; "tensor X missing from <dir>").
  Result<std::vector<float>> loadF32(const std::string& name,
                                     const std::vector<uint64_t>& expectedShape) const;

 private:
  Checkpoint() = default;
  const FamilySpec* spec_ = nullptr;
  std::string dir_;
  std::string layerRoot_;  // the first of the wrapper's layerRoots, the row's layerRoot and
                           // altLayerRoots that holds tensors
  ModelConfig config_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, const SafetensorsFile*, std::less<>> tensorFile_;
  // Multiplies an FP8 tensor's values by its DeepSeek-V3 `_scale_inv` 128×128 block scales.
  Status applyBlockScales(const std::string& name, const TensorInfo& info,
                          std::vector<float>& values) const;
  bool has(const std::string& name) const { return tensorFile_.count(name) != 0; }
  const TensorInfo* info(const std::string& name) const;
  // Layer `layer`'s MoE block prefix ("model.layers.3.mlp."): the first of the family's blocks
  // holding a router weight (the first block when none does, so errors name the usual tensor).
  std::string blockPrefix(uint32_t layer) const;
  std::string layerPrefix(uint32_t layer) const;
  // Rows [first, first + count) of the leading axis of a tensor of shape `shape`, in fp32.
  Result<std::vector<float>> loadSlice(const std::string& name, const std::vector<uint64_t>& shape,
                                       uint64_t first, uint64_t count) const;
  Result<ExpertTensors> fusedExpert(const std::string& block, uint32_t expert) const;
  // One expert's [rows, cols] weight (linear-weight orientation) from the MXFP4 pair
  // `<name>_blocks` U8 [E, rows, cols/32, 16] + `<name>_scales` U8 [E, rows, cols/32].
  Result<std::vector<float>> loadMxfp4(const std::string& name, uint64_t rows, uint64_t cols,
                                       uint32_t expert) const;
  Result<ExpertTensors> loadFfn(const std::string& prefix, const PerExpertNames& names,
                                uint64_t inter) const;
};

}  // namespace moe
