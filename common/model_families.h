// The model families the cluster serves, as one declarative table: per config.json model_type,
// the config keys of each quantity with every alias transformers has written (attribute_map, the
// v4 and v5 names), which layers are MoE, the routing recipe, the expert FFN, shared experts and
// the tensor names and layouts. Each row follows the family's transformers modeling_*.py (or, for
// MoE++ and Yuan, their published reference code). Adding a family that reuses known pieces is a
// row here; common/checkpoint.cc reads config.json and the tensors through it.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace moe {

// How one token's router logits s [E] become (expert ids, weights) [k]:
//   1. scores: softmax(s), sigmoid(s), or (kSoftmaxOverChosen) the chosen logits themselves;
//   2. choice: the scores (+ e_score_correction_bias when choiceBias), or the logits when
//      chooseOnLogits; group limits keep the topk_group best groups (the others' choice score
//      set to groupMask); the k largest, ties to the lower id;
//   3. weights: the chosen scores (MoE++: the zero expert's set to 0); kSoftmaxOverChosen takes
//      softmax over the chosen logits; normalize: w / (max(Σw, normMin) + normEps), or w / ‖w‖_p;
//      then × scale.
// MoE++ may first divide the logits by std(s)/logitsNormStd (unbiased std); Laguna may first
// softcap them (tanh(s / c) · c).
// kSparseMixer (PhiMoE's sparsemixer, eval mode) replaces steps 1-3: e1 = argmax s; w1 =
// softmax(s masked to -inf where (s1 - s_e) / max(|s_e|, s1) > 2·jitterEps)[e1]; then e2 = argmax
// of s with e1 at -inf, and w2 likewise relative to s2 (the factor and the masked-out test use
// the original s); k = 2, no normalization.
struct RoutingRecipe {
  enum class Scoring {
    kSoftmax,
    kSigmoid,
    kSoftmaxOverChosen,
    kSparseMixer,  // PhiMoE sparsemixer (PhimoeTopKRouter, eval)
  };
  enum class Groups { kNone, kMax, kTop2Sum };
  enum class Normalize { kNone, kSum, kPNorm };
  Scoring scoring = Scoring::kSoftmax;
  bool chooseOnLogits = false;  // top-k of the logits (gpt-oss, Granite, Llama 4, MoE++ mixtral)
  Groups groups = Groups::kNone;
  uint32_t nGroup = 1, topkGroup = 1;
  float groupMask = 0.0f;   // choice score of the experts outside the kept groups
  bool choiceBias = false;  // e_score_correction_bias [E]: added to the scores for choosing only
  bool routerBias = false;  // gpt-oss: the router's own bias, part of the logits (gate network)
  Normalize normalize = Normalize::kSum;
  float normEps = 0.0f;  // kSum: w / (max(Σw, normMin) + normEps)
  float normMin = 0.0f;
  float pNorm = 1.0f;  // kPNorm: w / (Σ|w|^p)^(1/p) (DBRX moe_normalize_expert_weights)
  float scale = 1.0f;  // routed_scaling_factor, after normalizing
  std::optional<uint32_t> zeroWeightExpert;  // MoE++: this expert's weight is 0
  float logitsNormStd = 0.0f;                // MoE++ moe_use_logits_norm target std (0: off)
  float jitterEps = 0.0f;  // PhiMoE kSparseMixer: router_jitter_noise (masks gaps > 2·eps)
  // Laguna (LagunaTopKRouter): s = tanh(s / c) · c before scoring and choosing (0: off).
  float logitSoftcap = 0.0f;

  // One line naming each step, e.g. "softmax, top-k, renormalize"; Router.info reports it.
  std::string describe() const;
};

// The plain recipes several families share (the table's pieces; tests build configs from them).
RoutingRecipe softmaxTopkRecipe(bool renormalize);
// DeepSeek-V2 (transformers 5 DeepseekV2TopkRouter): softmax; greedy or group_limited_greedy
// (group score = max, others masked to 0.0); never renormalized (transformers 5 does not read
// norm_topk_prob; deepseek-ai's original code did), always × routed_scaling_factor.
RoutingRecipe deepseekV2Recipe(float scale, bool groupLimited, uint32_t nGroup, uint32_t topkGroup);
// DeepSeek-V3 noaux_tc (DeepseekV3TopkRouter, also GLM-4-MoE and dots.llm1): σ(s) (or softmax),
// + bias for choice, group score = sum of the group's top-2, others masked to -inf; w = σ_sel,
// normalized (+1e-20) when norm_topk_prob, then × scale.
RoutingRecipe deepseekV3Recipe(bool sigmoid, bool normTopkProb, float scale, uint32_t nGroup,
                               uint32_t topkGroup);

// Which decoder layers hold a sparse MoE block.
enum class LayerRule {
  kAll,                  // every layer
  kSparseStep,           // Qwen: not in mlp_only_layers and (l + 1) % decoder_sparse_step == 0
  kFirstKDense,          // DeepSeek: l >= first_k_dense_replace and l % moe_layer_freq == 0
  kErnieRange,           // ERNIE: (l + 1) % moe_layer_interval == 0, start <= l <= end (-1: last)
  kPeriodOffset,         // Jamba: l % expert_layer_period == expert_layer_offset (num_experts > 1)
  kListOrInterleave,     // Llama 4: moe_layers, else every interleave_moe_layer_step-th from step-1
  kMoePlusPlusInterval,  // MoE++: moe_expert_interval == 1 or (l + 1) % interval == 0
  kLayerTypes,           // GLM-4-MoE-Lite: mlp_layer_types[l] == "sparse" (default: all but 0;
                         // with FamilySpec::denseLayersKey: all but the first N)
  // DeepSeek-V3.2, GLM-MoE-DSA, EXAONE-MoE, Kimi-Linear: mlp_layer_types[l] == "sparse"; absent,
  // every layer from first_k_dense_replace (its default: FamilySpec::firstKDenseDefault) on.
  kLayerTypesOrFirstKDense,
  kLayerTypesOrAll,  // Mellum: mlp_layer_types[l] == "sparse"; absent, every layer
  kFirstNDense,      // LFM2-MoE, AFMoE: l >= N, N = FamilySpec::denseLayersKey (num_dense_layers)
  // NemotronH: layers_block_type (alias layer_types; legacy hybrid_override_pattern "M*E-")[l] ==
  // "moe"; the list's length is the layer count (num_hidden_layers is ignored, as there).
  kBlockTypes
};

// How the routing recipe is read from config.json.
enum class RoutingPiece {
  kSoftmaxTopk,        // softmax, top-k; renormalized as `renormalize` says
  kDeepseekV2,         // deepseekV2Recipe from topk_method, n_group, ...
  kDeepseekV3,         // deepseekV3Recipe from scoring_func, topk_method, n_group, ...
  kSigmoidBiasChoice,  // MiniMax-M2: σ, + bias for choice, renormalized (no eps)
  kErnie,              // softmax, + bias for choice, w / clamp(Σw, min=moe_norm_min)
  kDbrx,               // softmax, top-k, w / ‖w‖_p (moe_normalize_expert_weights; null: none)
  kSoftmaxOverTopLogits,  // top-k of the logits, softmax over them (Granite, gpt-oss)
  kSigmoidTopLogits,      // Llama 4: top-k of the logits, σ of them, no normalization
  kMoePlusPlus,           // MoE++ gating()
  kSparseMixer,           // PhiMoE: sparsemixer, top-2, router_jitter_noise (eval: no noise)
  // LFM2-MoE (Lfm2MoeTopKRouter), AFMoE (AfmoeTokenChoiceRouter), HY-V3 (HYV3TopKRouter): σ,
  // + bias for choice (FamilySpec::choiceBiasKey may switch it off), w / (Σw + normEps) as
  // `renormalize` says, × the FamilySpec::scaleKeys factor.
  kSigmoidBiasScaled,
  // Cohere2-MoE (Cohere2MoeTopKRouter): top-k of the logits; expert_selection_fn "softmax":
  // softmax over the k; "sigmoid": σ of them, renormalized (no eps) iff norm_topk_prob.
  kTopLogitsSelectionFn,
  // LongCat-Flash (LongcatFlashTopkRouter): softmax over all E + zero_expert_num, + bias for
  // choice, weights = p gathered, never renormalized, × routed_scaling_factor; router_bias key.
  kSoftmaxBiasChoiceScaled,
  // Mistral-Large-4 (MistralLarge4TextTopkRouter): softmax(f32 logits), no correction bias,
  // group score = sum of the group's top-2, other groups masked to 0.0; w = p gathered, always
  // w / (Σw + 1e-20), × routed_scaling_factor; n_group / topk_group as DeepSeek.
  kSoftmaxGroupsRenormScaled,
};

enum class Renormalize { kAlways, kNever, kKey };  // kKey: norm_topk_prob (table default)

// Shared experts: one FFN every token goes through.
enum class SharedKind {
  kNone,
  kGated,              // Qwen2-MoE / Qwen3-Next: width key, × sigmoid(x·w_gate)
  kTimesRouted,        // DeepSeek/GLM/dots/ERNIE: count key × the routed width, ungated
  kWidth,              // Hunyuan/Granite-shared: width key (0 or absent: none), ungated
  kAlwaysRoutedWidth,  // Llama 4: always, the routed experts' width, ungated
  kRequiredWidth       // NemotronH: always, width key (required), ungated
};

// Routed experts stored one tensor set per expert, under "<block><expertsDir>{e}.": gate/up/down
// names (".weight" appended), or (up empty) one fused [2I, H] gate|up matrix per expert, or (gate
// empty) a non-gated FFN with up/down only (NemotronH).
struct PerExpertNames {
  const char* gate;
  const char* up;  // "" when `gate` is the fused [2I, H] matrix
  const char* down;
};

// Routed experts stored as one tensor per layer for all experts.
enum class FusedKind {
  kNone,
  kGateUp,   // experts.gate_up_proj + experts.down_proj (transformers 5 in-memory layout)
  kGranite,  // input_linear.weight [E, 2I, H] + output_linear.weight [E, H, I]
  kDbrx,     // experts.mlp.w1 / v1 / w2, each [E·I, H] (w2 used transposed)
  kUp,       // NemotronH (non-gated): experts.up_proj [E, I, H] + experts.down_proj [E, H, I]
};
// kGateUp: [E, 2I, H] with down [E, H, I] (linear weights), or [E, H, 2I] with down [E, I, H]
// (x @ W, gpt-oss and Llama 4); gate|up halves concatenated (chunk) or interleaved (::2, 1::2).
enum class FusedOrientation { kOutIn, kInOut };
enum class FusedHalves { kConcat, kInterleaved };

enum class GateKindSpec { kLinear, kMoePlusPlus, kYuanAttention };

// How a block adds its shared expert to the routed experts' sum: y = routed + shared, or
// (Cohere2-MoE shared_expert_combination_strategy "average") y = (routed + shared) / 2.
enum class SharedCombine { kSum, kAverage };

// A config key the row's computation assumes a value of, because transformers' modeling code
// ignores it (an earlier version honoured it) or the row does not implement the alternative.
// Absent or null is accepted; any other value is refused with `why` (refuseThisValue: only `json`
// itself is refused).
struct PinnedKey {
  const char* key;
  const char* json;  // the value as JSON text: "true", "\"sigmoid\"", "0"
  const char* why;
  bool refuseThisValue = false;
};

struct FamilySpec {
  std::vector<std::string> modelTypes;  // config.json model_type values
  std::string name;                     // the family as the README and Router.info name it
  // Config keys, each with every alias (dotted: a nested object's key). Two aliases present with
  // different values are a contradiction.
  std::vector<std::string> hiddenKeys, intermediateKeys, expertsKeys, topKKeys, layersKeys;
  LayerRule layerRule = LayerRule::kAll;
  RoutingPiece routing = RoutingPiece::kSoftmaxTopk;
  Renormalize renormalize = Renormalize::kAlways;
  bool renormalizeDefault = false;  // kKey: norm_topk_prob when absent
  SharedKind shared = SharedKind::kNone;
  std::vector<std::string> sharedKeys;  // kGated/kWidth: width; kTimesRouted: count
  // Tensor names. Layer L's modules live under layerRoot + L + "."; the MoE block is the first of
  // `blocks` under which a router weight exists.
  std::string layerRoot = "model.layers.";
  std::vector<std::string> blocks;           // e.g. {"block_sparse_moe.", "mlp."}
  std::vector<std::string> routerNames;      // under the block, e.g. {"gate.weight"}
  std::vector<std::string> choiceBiasNames;  // under the block (e_score_correction_bias)
  std::string routerBiasName;                // under the block (gpt-oss router.bias)
  std::string expertsDir = "experts.";       // per-expert tensors: <block><expertsDir>{e}.
  std::vector<PerExpertNames> perExpert;     // candidates, tried in order
  FusedKind fused = FusedKind::kNone;
  FusedOrientation orientation = FusedOrientation::kOutIn;
  FusedHalves halves = FusedHalves::kConcat;
  // Shared expert: prefix under the layer (e.g. "mlp.shared_experts."), gate/up/down names or a
  // fused input_linear/output_linear pair, and the sigmoid gate's name under the layer.
  std::string sharedPrefix;
  PerExpertNames sharedNames{"gate_proj", "up_proj", "down_proj"};
  std::string sharedGateName;
  GateKindSpec gate = GateKindSpec::kLinear;
  bool clampedSwiglu = false;  // gpt-oss experts (swiglu_alpha fixed 1.702, swiglu_limit key)
  bool expertBias = false;     // gpt-oss gate_up_proj_bias / down_proj_bias
  bool weightOnInput = false;  // Llama 4
  std::string notes;           // what the README says about the row
  // The rows of issue #13's second round (DeepSeek-V3.2 ... Kimi-Linear) take each optional key's
  // default from their configuration_*.py, and the DeepSeek router keys under every alias
  // (Kimi-Linear's attribute_map); the older rows keep these fallbacks (0/1/1/1.0/0).
  // first_k_dense_replace when absent (kFirstKDense, kLayerTypesOrFirstKDense).
  uint32_t firstKDenseDefault = 0;
  uint32_t nGroupDefault = 1, topkGroupDefault = 1;
  float scaleDefault = 1.0f;   // routed_scaling_factor
  uint32_t sharedDefault = 0;  // sharedKeys absent: the count (kTimesRouted) or width (kGated)
  std::vector<std::string> nGroupKeys{"n_group"}, topkGroupKeys{"topk_group"},
      normKeys{"norm_topk_prob"};
  // LFM2-MoE / AFMoE / HY-V3 / Cohere2-MoE (issue #13):
  // kFirstNDense (and kLayerTypes without mlp_layer_types): the first N layers are dense, N =
  // this key (num_dense_layers, first_k_dense_replace), denseLayersDefault when absent.
  std::string denseLayersKey;
  uint32_t denseLayersDefault = 1;
  // kSigmoidBiasScaled: the weights' scale factor (aliases) and its default; w / (Σw + normEps);
  // the bool key that turns the choice bias on ("" = always on; default true).
  std::vector<std::string> scaleKeys;
  float normEps = 0.0f;
  std::string choiceBiasKey;
  // More prefixes of the shared expert under the layer, tried after sharedPrefix (HY-V3 saves
  // mlp.shared_mlp., transformers 5 holds mlp.shared_experts. in memory).
  std::vector<std::string> sharedPrefixAliases;
  // The key naming how the shared expert is combined ("sum" | "average"); "" = always summed.
  std::string sharedCombineKey;
  std::string sharedCombineDefault = "sum";
  std::vector<PinnedKey> pinnedKeys;
  // The config keys naming the experts' activation (ACT2FN[...] in the modeling file): the table's
  // SwiGLU rows are served only when it is SiLU ("silu" / "swish"); another value is refused with
  // the key, never computed as SwiGLU. Empty: the family's activation is fixed in its code.
  std::vector<std::string> siluActKeys;
  // NemotronH: routed and shared experts are non-gated relu² FFNs (mlp_hidden_act "relu2").
  bool relu2Experts = false;
  // Also tried, in order, when no tensor lives under layerRoot (NemotronH: "backbone.layers." as
  // saved, "model.layers." in transformers 5's memory).
  std::vector<std::string> altLayerRoots;
  // LongCat-Flash: the count of identity experts after the FFN experts (zero_expert_num). The
  // router scores all of them; the fused experts.gate_up_proj has a row block for each as well
  // ([E + Z, 2I, H], unused), experts.down_proj only for the FFN experts ([E, H, I]).
  std::string zeroExpertsKey;
  // LongCat-Flash: a key that, when present, must be twice the layer count (num_hidden_layers =
  // 2 × num_layers: two attention sublayers per decoder layer).
  std::string twiceLayersKey;
  // Laguna: the router logits' tanh softcap c (moe_router_logit_softcapping; absent or 0: off).
  std::string logitSoftcapKey;
  // Aria (AriaExperts, conversion_mapping.py "aria_text"): the names save_pretrained writes for the
  // fused kGateUp pair under the block, tried before experts.gate_up_proj / experts.down_proj
  // ("experts.fc1.weight" [E, H, 2I], "experts.fc2.weight" [E, I, H]).
  std::string savedGateUpName, savedDownName;
  // Flint (FlintTopKRouter), kSigmoidBiasScaled: σ scores chosen as they are, no expert bias.
  bool noChoiceBias = false;
  // kSparseStep: mlp_only_layers when absent or null (Flint: [0, 1], FlintConfig.__post_init__).
  std::vector<uint32_t> mlpOnlyLayersDefault;
};

// A vision-language (or omni) checkpoint whose config.json is the whole model: its model_type
// names the wrapper, the text model's config is nested (e.g. text_config, with its own model_type
// that the family table serves) and the text model's layers live under another prefix (e.g.
// model.language_model.layers.). The cluster serves the text tower's MoE blocks through the
// text model's family row; the wrapper only says where to find its config and tensors.
struct WrapperSpec {
  std::string modelType;                // the wrapper's config.json model_type
  std::string name;                     // as the README names it
  std::vector<std::string> configPath;  // keys from the top to the text config object
  std::vector<std::string> layerRoots;  // tried in order before the text row's own roots
};

// The table, in README order.
const std::vector<FamilySpec>& modelFamilies();
// The wrapper row for a model_type, or nullptr.
const WrapperSpec* findWrapper(const std::string& modelType);
// "qwen3_5_moe, ...": every wrapper model_type (for errors).
std::string supportedWrapperTypes();
// The row for a model_type, or nullptr.
const FamilySpec* findFamily(const std::string& modelType);
// "mixtral, qwen2_moe, ...": every model_type the table serves (for errors).
std::string supportedModelTypes();

}  // namespace moe
