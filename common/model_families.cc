// The family table; see model_families.h. Each row cites the transformers 5 modeling file it
// follows (class names), so a reviewer can check the row against the definition.
#include "common/model_families.h"

#include <algorithm>
#include <cmath>
#include <sstream>

namespace moe {
namespace {

using S = std::vector<std::string>;

const PerExpertNames kQwenNames{"gate_proj", "up_proj", "down_proj"};
const PerExpertNames kMixtralNames{"w1", "w3", "w2"};

// The transformers families whose blocks follow Qwen2-MoE (conversion_mapping.py maps them to
// the qwen2_moe pattern): router mlp.gate.weight, experts.{e}.gate_proj/up_proj/down_proj, or the
// fused experts.gate_up_proj [E, 2I, H] + experts.down_proj [E, H, I].
FamilySpec qwenLike(S types, std::string name) {
  FamilySpec f;
  f.modelTypes = std::move(types);
  f.name = std::move(name);
  f.hiddenKeys = {"hidden_size"};
  f.intermediateKeys = {"moe_intermediate_size"};
  f.expertsKeys = {"num_experts", "num_local_experts"};
  f.topKKeys = {"num_experts_per_tok"};
  f.layersKeys = {"num_hidden_layers"};
  f.blocks = {"mlp."};
  f.routerNames = {"gate.weight"};
  f.perExpert = {kQwenNames};
  f.fused = FusedKind::kGateUp;
  f.siluActKeys = {"hidden_act"};
  return f;
}

// Mixtral-pattern blocks: block_sparse_moe on disk (mlp in transformers 5's memory), experts
// w1/w3/w2.
FamilySpec mixtralLike(S types, std::string name) {
  FamilySpec f = qwenLike(std::move(types), std::move(name));
  f.intermediateKeys = {"intermediate_size"};
  f.expertsKeys = {"num_local_experts", "num_experts"};
  f.blocks = {"block_sparse_moe.", "mlp."};
  f.perExpert = {kMixtralNames};
  return f;
}

FamilySpec deepseekLike(S types, std::string name, RoutingPiece piece) {
  FamilySpec f = qwenLike(std::move(types), std::move(name));
  f.expertsKeys = {"n_routed_experts", "num_local_experts", "num_experts"};
  f.layerRule = LayerRule::kFirstKDense;
  f.routing = piece;
  f.shared = SharedKind::kTimesRouted;
  f.sharedKeys = {"n_shared_experts"};
  f.sharedPrefix = "mlp.shared_experts.";
  f.choiceBiasNames = {"gate.e_score_correction_bias"};
  return f;
}

std::vector<FamilySpec> buildTable() {
  std::vector<FamilySpec> t;
  {  // MixtralSparseMoeBlock: softmax, top-k, always renormalized.
    FamilySpec f = mixtralLike({"mixtral"}, "Mixtral");
    t.push_back(f);
  }
  {  // Qwen2MoeSparseMoeBlock: norm_topk_prob; shared_expert × sigmoid(shared_expert_gate).
    FamilySpec f = qwenLike({"qwen2_moe"}, "Qwen2-MoE");
    f.layerRule = LayerRule::kSparseStep;
    f.renormalize = Renormalize::kKey;
    f.shared = SharedKind::kGated;
    f.sharedKeys = {"shared_expert_intermediate_size"};
    f.sharedPrefix = "mlp.shared_expert.";
    f.sharedGateName = "mlp.shared_expert_gate.weight";
    t.push_back(f);
  }
  {  // Qwen3MoeSparseMoeBlock; transformers 5 writes num_local_experts (attribute_map).
    FamilySpec f = qwenLike({"qwen3_moe"}, "Qwen3-MoE");
    f.layerRule = LayerRule::kSparseStep;
    f.renormalize = Renormalize::kKey;
    t.push_back(f);
  }
  {  // Qwen3NextSparseMoeBlock: Qwen2-MoE's block (norm_topk_prob defaults to true).
    FamilySpec f = t[1];
    f.modelTypes = {"qwen3_next"};
    f.name = "Qwen3-Next";
    f.renormalizeDefault = true;
    f.notes = "MoE blocks only (its linear-attention layers are not the cluster's part)";
    t.push_back(f);
  }
  {  // OlmoeSparseMoeBlock: norm_topk_prob (default false); intermediate_size is the expert's.
    FamilySpec f = qwenLike({"olmoe"}, "OLMoE");
    f.intermediateKeys = {"intermediate_size"};
    f.renormalize = Renormalize::kKey;
    t.push_back(f);
  }
  {  // FlexOlmoSparseMoeBlock: OLMoE's block.
    FamilySpec f = *std::find_if(
        t.begin(), t.end(), [](const FamilySpec& r) { return r.modelTypes.front() == "olmoe"; });
    f.modelTypes = {"flex_olmo"};
    f.name = "FlexOlmo";
    t.push_back(f);
  }
  t.push_back(deepseekLike({"deepseek_v2"}, "DeepSeek-V2", RoutingPiece::kDeepseekV2));
  {  // DeepseekV3TopkRouter: norm_topk_prob defaults to true (DeepseekV3Config).
    FamilySpec f = deepseekLike({"deepseek_v3"}, "DeepSeek-V3", RoutingPiece::kDeepseekV3);
    f.renormalizeDefault = true;
    t.push_back(f);
  }
  {  // Glm4MoeTopkRouter = DeepSeek-V3 noaux_tc (sigmoid, no scoring_func key).
    FamilySpec f = deepseekLike({"glm4_moe"}, "GLM-4-MoE", RoutingPiece::kDeepseekV3);
    f.expertsKeys = {"n_routed_experts", "num_local_experts"};
    f.renormalizeDefault = true;  // Glm4MoeConfig.norm_topk_prob
    t.push_back(f);
  }
  {  // Glm4MoeLiteMoE = GLM-4-MoE's block; sparse layers from mlp_layer_types.
    FamilySpec f = t.back();
    f.modelTypes = {"glm4_moe_lite"};
    f.name = "GLM-4-MoE-Lite";
    f.layerRule = LayerRule::kLayerTypes;
    t.push_back(f);
  }
  {  // Dots1TopkRouter = DeepSeek-V3 noaux_tc.
    FamilySpec f = deepseekLike({"dots1"}, "dots.llm1", RoutingPiece::kDeepseekV3);
    f.expertsKeys = {"n_routed_experts", "num_local_experts"};
    t.push_back(f);
  }
  {  // MiniMaxSparseMoeBlock: Mixtral's block.
    FamilySpec f = mixtralLike({"minimax"}, "MiniMax");
    f.notes = "MoE blocks only (its lightning-attention layers are not the cluster's part)";
    t.push_back(f);
  }
  {  // MiniMaxM2SparseMoeBlock: σ, + e_score_correction_bias (the block's) for choice,
     // renormalized without eps.
    FamilySpec f = mixtralLike({"minimax_m2"}, "MiniMax-M2");
    f.routing = RoutingPiece::kSigmoidBiasChoice;
    f.choiceBiasNames = {"e_score_correction_bias"};
    t.push_back(f);
  }
  {  // HunYuanMoEV1Moe: gate.wg, softmax top-k renormalized; shared_mlp (intermediate_size)
     // always on, ungated.
    FamilySpec f = qwenLike({"hunyuan_v1_moe"}, "Hunyuan-MoE-V1");
    f.intermediateKeys = {"intermediate_size"};
    f.topKKeys = {"moe_topk", "num_experts_per_tok"};
    f.routerNames = {"gate.wg.weight"};
    f.shared = SharedKind::kAlwaysRoutedWidth;
    f.sharedPrefix = "mlp.shared_mlp.";
    t.push_back(f);
  }
  {  // Ernie4_5_MoeSparseMoeBlock: softmax; choice + moe_statics bias; w / clamp(Σ, norm_min);
     // shared_experts (moe_num_shared_experts × moe_intermediate_size).
    FamilySpec f = qwenLike({"ernie4_5_moe"}, "ERNIE-4.5-MoE");
    f.expertsKeys = {"moe_num_experts", "num_experts", "num_local_experts"};
    f.topKKeys = {"moe_k", "num_experts_per_tok"};
    f.layerRule = LayerRule::kErnieRange;
    f.routing = RoutingPiece::kErnie;
    f.choiceBiasNames = {"gate.moe_statics.e_score_correction_bias",
                         "moe_statics.e_score_correction_bias"};
    f.shared = SharedKind::kTimesRouted;
    f.sharedKeys = {"moe_num_shared_experts"};
    f.sharedPrefix = "mlp.shared_experts.";
    t.push_back(f);
  }
  {  // JambaSparseMoeBlock: router, softmax top-k, never renormalized; every
     // expert_layer_period-th layer from expert_layer_offset.
    FamilySpec f = qwenLike({"jamba"}, "Jamba");
    f.intermediateKeys = {"intermediate_size"};
    f.layerRule = LayerRule::kPeriodOffset;
    f.renormalize = Renormalize::kNever;
    f.blocks = {"feed_forward."};
    f.routerNames = {"router.weight"};
    f.notes = "MoE layers only (its Mamba layers are not the cluster's part)";
    t.push_back(f);
  }
  {  // GraniteMoeMoE: top-k of the logits, softmax over them; input_linear/output_linear.
    FamilySpec f = mixtralLike({"granitemoe"}, "Granite-MoE");
    f.routing = RoutingPiece::kSoftmaxOverTopLogits;
    f.routerNames = {"router.layer.weight", "router.weight"};
    f.perExpert = {};
    f.fused = FusedKind::kGranite;
    t.push_back(f);
  }
  {  // GraniteMoeSharedDecoderLayer: + shared_mlp (shared_intermediate_size, fused input_linear)
     // beside the block, ungated.
    FamilySpec f = t.back();
    f.modelTypes = {"granitemoeshared"};
    f.name = "Granite-MoE-Shared";
    f.shared = SharedKind::kWidth;
    f.sharedKeys = {"shared_intermediate_size"};
    f.sharedPrefix = "shared_mlp.";
    f.sharedNames = {"input_linear", "", "output_linear"};
    t.push_back(f);
  }
  {  // GraniteMoeHybridDecoderLayer: Granite-MoE-Shared's MoE + shared_mlp (its Mamba layers are
     // not the cluster's part).
    FamilySpec f = t.back();
    f.modelTypes = {"granitemoehybrid"};
    f.name = "Granite-MoE-Hybrid";
    f.notes = "MoE blocks only (its Mamba layers are not the cluster's part)";
    t.push_back(f);
  }
  {  // DbrxFFN: router.layer, softmax, top-k, / ‖w‖_p; experts.mlp.w1/v1/w2 [E·I, H].
    FamilySpec f = qwenLike({"dbrx"}, "DBRX");
    f.siluActKeys = {"ffn_config.ffn_act_fn.name"};  // DbrxExpertGLU
    f.hiddenKeys = {"d_model", "hidden_size"};
    f.intermediateKeys = {"ffn_config.ffn_hidden_size"};
    f.expertsKeys = {"ffn_config.moe_num_experts"};
    f.topKKeys = {"ffn_config.moe_top_k"};
    f.layersKeys = {"n_layers", "num_hidden_layers"};
    f.routing = RoutingPiece::kDbrx;
    f.layerRoot = "transformer.blocks.";
    f.blocks = {"ffn."};
    f.routerNames = {"router.layer.weight"};
    f.perExpert = {};
    f.fused = FusedKind::kDbrx;
    t.push_back(f);
  }
  {  // Llama4TextMoe: top-k of the logits, σ; weight on the expert's input; shared_expert.
    FamilySpec f = qwenLike({"llama4_text"}, "Llama-4");
    f.intermediateKeys = {"intermediate_size"};
    f.expertsKeys = {"num_local_experts", "num_experts"};
    f.layerRule = LayerRule::kListOrInterleave;
    f.routing = RoutingPiece::kSigmoidTopLogits;
    f.blocks = {"feed_forward."};
    f.routerNames = {"router.weight"};
    f.perExpert = {};
    f.orientation = FusedOrientation::kInOut;
    f.shared = SharedKind::kAlwaysRoutedWidth;
    f.sharedPrefix = "feed_forward.shared_expert.";
    f.weightOnInput = true;
    t.push_back(f);
  }
  {  // GptOssMLP: router with bias, top-k of the logits, softmax; experts with biases, clamped
     // SwiGLU, interleaved gate/up in [E, H, 2I].
    FamilySpec f = qwenLike({"gpt_oss"}, "gpt-oss");
    f.siluActKeys = {};  // GptOssExperts: its clamped SwiGLU, whatever hidden_act says
    f.intermediateKeys = {"intermediate_size"};
    f.expertsKeys = {"num_local_experts", "num_experts"};
    f.routing = RoutingPiece::kSoftmaxOverTopLogits;
    f.routerNames = {"router.weight"};
    f.routerBiasName = "router.bias";
    f.perExpert = {};
    f.orientation = FusedOrientation::kInOut;
    f.halves = FusedHalves::kInterleaved;
    f.clampedSwiglu = true;
    f.expertBias = true;
    t.push_back(f);
  }
  {  // PhimoeSparseMoeBlock / PhimoeTopKRouter: sparsemixer in eval mode (top-2 whatever
     // num_experts_per_tok says; router_jitter_noise is its threshold, input_jitter_noise is
     // training-only); Mixtral's experts, router block_sparse_moe.gate (v4) or mlp.router (v5).
    FamilySpec f = mixtralLike({"phimoe"}, "PhiMoE");
    f.expertsKeys = {"num_local_experts"};  // PhimoeConfig has no attribute_map
    f.routing = RoutingPiece::kSparseMixer;
    f.routerNames = {"gate.weight", "router.weight"};
    t.push_back(f);
  }
  // transformers 5 families that reuse the recipes above (issue #13). Defaults are their
  // configuration_*.py's; every router here is DeepseekV3TopkRouter's code or Qwen's top-k router.
  {  // DeepseekV32MoE / DeepseekV32TopkRouter: DeepSeek-V3's block; DSA attention is not ours.
    FamilySpec f = deepseekLike({"deepseek_v32"}, "DeepSeek-V3.2", RoutingPiece::kDeepseekV3);
    f.layerRule = LayerRule::kLayerTypesOrFirstKDense;  // DeepseekV32Config.mlp_layer_types
    f.renormalizeDefault = true;
    f.firstKDenseDefault = 3;
    f.nGroupDefault = 8;
    f.topkGroupDefault = 4;
    f.scaleDefault = 2.5f;
    f.sharedDefault = 1;
    t.push_back(f);
  }
  {  // SarvamMLAConfig served by DeepseekV3ForCausalLM (modeling_auto); original config names
     // num_experts / num_shared_experts (attribute_map).
    FamilySpec f = deepseekLike({"sarvam_mla"}, "Sarvam-MLA", RoutingPiece::kDeepseekV3);
    f.sharedKeys = {"n_shared_experts", "num_shared_experts"};
    f.renormalizeDefault = true;
    f.firstKDenseDefault = 1;
    f.scaleDefault = 2.5f;
    f.sharedDefault = 1;
    t.push_back(f);
  }
  {  // MiMoV2FlashMoE: DeepseekV3MoE without shared experts; sparse layers from mlp_layer_types
     // (default ["dense"] + ["sparse"] * (L - 1)); routed_scaling_factor null means 1.0.
    FamilySpec f = deepseekLike({"mimo_v2_flash"}, "MiMo-V2-Flash", RoutingPiece::kDeepseekV3);
    f.expertsKeys = {"n_routed_experts", "num_local_experts"};
    f.layerRule = LayerRule::kLayerTypes;
    f.renormalizeDefault = true;
    f.shared = SharedKind::kNone;
    f.sharedKeys = {};
    f.sharedPrefix = "";
    f.notes = "MoE blocks only (its sliding-window attention with sinks is not the cluster's part)";
    t.push_back(f);
  }
  {  // SolarOpenMoE: GLM-4-MoE's block in every layer (SolarOpenDecoderLayer).
    FamilySpec f = deepseekLike({"solar_open"}, "Solar-Open", RoutingPiece::kDeepseekV3);
    f.expertsKeys = {"n_routed_experts", "num_local_experts"};
    f.layerRule = LayerRule::kAll;
    f.renormalizeDefault = true;
    f.sharedDefault = 1;
    t.push_back(f);
  }
  {  // GlmMoeDsaMoE: GLM-4-MoE's block; sparse layers from mlp_layer_types (default: from
     // first_k_dense_replace, 3); DSA attention is not ours.
    FamilySpec f = deepseekLike({"glm_moe_dsa"}, "GLM-MoE-DSA", RoutingPiece::kDeepseekV3);
    f.layerRule = LayerRule::kLayerTypesOrFirstKDense;
    f.renormalizeDefault = true;
    f.firstKDenseDefault = 3;
    f.scaleDefault = 2.5f;
    f.sharedDefault = 1;
    t.push_back(f);
  }
  {  // SarvamMoEConfig served by Glm4MoeForCausalLM (modeling_auto); original config names
     // num_experts / num_shared_experts; the router bias is saved as gate.expert_bias
     // (conversion_mapping.py renames it to gate.e_score_correction_bias in memory).
    FamilySpec f = deepseekLike({"sarvam_moe"}, "Sarvam-MoE", RoutingPiece::kDeepseekV3);
    f.sharedKeys = {"n_shared_experts", "num_shared_experts"};
    f.renormalizeDefault = true;
    f.firstKDenseDefault = 1;
    f.scaleDefault = 2.5f;
    f.sharedDefault = 1;
    f.choiceBiasNames = {"gate.expert_bias", "gate.e_score_correction_bias"};
    t.push_back(f);
  }
  {  // MellumSparseMoeBlock: Qwen3-MoE's router (norm_topk_prob, default true); sparse layers from
     // mlp_layer_types (default: all).
    FamilySpec f = qwenLike({"mellum"}, "Mellum");
    f.expertsKeys = {"num_local_experts", "num_experts"};
    f.layerRule = LayerRule::kLayerTypesOrAll;
    f.renormalize = Renormalize::kKey;
    f.renormalizeDefault = true;
    t.push_back(f);
  }
  {  // Qwen3_5MoeSparseMoeBlock (text model): Qwen2-MoE's block, but Qwen3_5MoeTopKRouter always
     // renormalizes (it has no norm_topk_prob); every layer; shared expert width default 512.
    FamilySpec f = qwenLike({"qwen3_5_moe_text"}, "Qwen3.5-MoE");
    f.expertsKeys = {"num_experts"};
    f.shared = SharedKind::kGated;
    f.sharedKeys = {"shared_expert_intermediate_size"};
    f.sharedDefault = 512;
    f.sharedPrefix = "mlp.shared_expert.";
    f.sharedGateName = "mlp.shared_expert_gate.weight";
    f.notes = "MoE blocks only (its gated-delta-net layers are not the cluster's part)";
    t.push_back(f);
  }
  {  // ExaoneMoeSparseMoEBlock: DeepSeek-V3's block under its own keys (num_experts,
     // num_shared_experts; no attribute_map); the bias is saved as mlp.e_score_correction_bias.
    FamilySpec f = deepseekLike({"exaone_moe"}, "EXAONE-MoE", RoutingPiece::kDeepseekV3);
    f.expertsKeys = {"num_experts"};
    f.sharedKeys = {"num_shared_experts"};
    f.layerRule = LayerRule::kLayerTypesOrFirstKDense;
    f.renormalizeDefault = true;
    f.firstKDenseDefault = 1;
    f.scaleDefault = 2.5f;
    f.sharedDefault = 1;
    f.choiceBiasNames = {"e_score_correction_bias", "gate.e_score_correction_bias"};
    t.push_back(f);
  }
  {  // KimiLinearMoE: DeepSeek-V3's block, saved under Mixtral's names (block_sparse_moe,
     // experts.{e}.w1/w3/w2); KimiLinearConfig.attribute_map aliases.
    FamilySpec f = deepseekLike({"kimi_linear"}, "Kimi-Linear", RoutingPiece::kDeepseekV3);
    f.expertsKeys = {"num_experts", "num_local_experts"};
    f.topKKeys = {"num_experts_per_token", "num_experts_per_tok"};
    f.nGroupKeys = {"num_expert_group", "n_group"};
    f.normKeys = {"moe_renormalize", "norm_topk_prob"};
    f.sharedKeys = {"num_shared_experts", "n_shared_experts"};
    f.layerRule = LayerRule::kLayerTypesOrFirstKDense;
    f.renormalizeDefault = true;
    f.firstKDenseDefault = 1;
    f.scaleDefault = 2.446f;
    f.sharedDefault = 1;
    f.blocks = {"block_sparse_moe.", "mlp."};
    f.perExpert = {kMixtralNames};
    f.sharedPrefix = "block_sparse_moe.shared_experts.";
    f.notes = "MoE blocks only (its KDA linear-attention layers are not the cluster's part)";
    t.push_back(f);
  }
  {  // Lfm2MoeSparseMoeBlock / Lfm2MoeTopKRouter: σ(logits); + expert_bias for choice iff
     // use_expert_bias; w / (Σw + 1e-6) iff norm_topk_prob; × routed_scaling_factor. Block
     // feed_forward., experts w1/w3/w2 (or fused); layers < num_dense_layers are dense
     // (Lfm2MoeDecoderLayer).
    FamilySpec f = mixtralLike({"lfm2_moe"}, "LFM2-MoE");
    f.siluActKeys = {};  // Lfm2MoeMLP: F.silu, no key
    f.intermediateKeys = {"moe_intermediate_size"};
    f.expertsKeys = {"num_experts"};  // Lfm2MoeConfig has no attribute_map
    f.layerRule = LayerRule::kFirstNDense;
    f.denseLayersKey = "num_dense_layers";
    f.denseLayersDefault = 2;
    f.routing = RoutingPiece::kSigmoidBiasScaled;
    f.renormalize = Renormalize::kKey;
    f.renormalizeDefault = true;
    f.normEps = 1e-6f;
    f.scaleKeys = {"routed_scaling_factor"};
    f.choiceBiasKey = "use_expert_bias";
    f.blocks = {"feed_forward."};
    f.choiceBiasNames = {"expert_bias"};  // on the block, passed to the router
    f.notes = "MoE blocks only (its short-conv layers are not the cluster's part)";
    t.push_back(f);
  }
  {  // AfmoeSparseMoeBlock / AfmoeTokenChoiceRouter: σ(f32 logits), + expert_bias for choice,
     // w / (Σw + 1e-20) × route_scale; shared_experts (moe_intermediate_size × num_shared_experts)
     // ungated; layers < num_dense_layers are dense (AfmoeDecoderLayer).
    FamilySpec f = qwenLike({"afmoe"}, "AFMoE");
    f.expertsKeys = {"num_experts"};
    f.layerRule = LayerRule::kFirstNDense;
    f.denseLayersKey = "num_dense_layers";
    f.denseLayersDefault = 1;
    f.routing = RoutingPiece::kSigmoidBiasScaled;
    f.normEps = 1e-20f;
    f.scaleKeys = {"route_scale"};
    f.routerNames = {"router.gate.weight"};
    f.choiceBiasNames = {"expert_bias"};
    f.shared = SharedKind::kTimesRouted;
    f.sharedKeys = {"num_shared_experts"};
    f.sharedDefault = 2;
    f.sharedPrefix = "mlp.shared_experts.";
    // transformers' first AfmoeConfig had score_func (softmax: no renormalization) and
    // route_norm; 5.x ignores both and always computes σ renormalized.
    f.pinnedKeys = {
        {"score_func", "\"sigmoid\"",
         "transformers 5's AfmoeTokenChoiceRouter always scores with sigmoid (it ignores "
         "score_func)"},
        {"route_norm", "true",
         "transformers 5's AfmoeTokenChoiceRouter always renormalizes (it ignores route_norm)"}};
    t.push_back(f);
  }
  {  // HYV3MoE / HYV3TopKRouter: σ(f32 logits), + bias for choice, w / (Σw + 1e-20) ×
     // router_scaling_factor; shared experts (moe_intermediate_size × num_shared_experts)
     // ungated; sparse layers from mlp_layer_types (default all but layer 0). Saved names
     // (router.gate, expert_bias, shared_mlp) first, transformers 5's in-memory names after.
    FamilySpec f = qwenLike({"hy_v3"}, "HY-V3");
    f.expertsKeys = {"num_experts", "num_local_experts"};  // attribute_map
    f.layerRule = LayerRule::kLayerTypes;
    f.routing = RoutingPiece::kSigmoidBiasScaled;
    f.normEps = 1e-20f;
    f.scaleKeys = {"router_scaling_factor"};
    f.scaleDefault = 2.826f;
    f.routerNames = {"router.gate.weight", "gate.weight"};
    f.choiceBiasNames = {"expert_bias", "e_score_correction_bias"};
    f.shared = SharedKind::kTimesRouted;
    f.sharedKeys = {"num_shared_experts"};
    f.sharedDefault = 1;
    f.sharedPrefix = "mlp.shared_mlp.";
    f.sharedPrefixAliases = {"mlp.shared_experts."};
    f.pinnedKeys = {
        {"mlp_bias", "false",
         "its shared expert would carry biases (HYV3MLP), which are not loaded"},
        // HYV3MLP takes `intermediate_size or config.intermediate_size`: a width of 0 becomes the
        // dense width, an always-on shared expert no other family has.
        {"num_shared_experts", "0",
         "transformers' HYV3MLP then falls back to a shared expert of intermediate_size",
         /*refuseThisValue=*/true}};
    t.push_back(f);
  }
  {  // Cohere2MoeSparseMoeBlock / Cohere2MoeTopKRouter: top-k of the logits, softmax over them
     // or σ (renormalized iff norm_topk_prob); shared_experts (intermediate_size ×
     // num_shared_experts) ungated, summed or averaged (shared_expert_combination_strategy);
     // sparse layers from mlp_layer_types, else all but the first first_k_dense_replace.
    FamilySpec f = qwenLike({"cohere2_moe"}, "Cohere2-MoE");
    f.intermediateKeys = {"intermediate_size"};
    f.expertsKeys = {"num_experts"};
    f.layerRule = LayerRule::kLayerTypes;
    f.denseLayersKey = "first_k_dense_replace";
    f.denseLayersDefault = 0;
    f.routing = RoutingPiece::kTopLogitsSelectionFn;
    f.renormalize = Renormalize::kKey;
    f.renormalizeDefault = true;
    f.shared = SharedKind::kTimesRouted;
    f.sharedKeys = {"num_shared_experts"};
    f.sharedPrefix = "mlp.shared_experts.";
    f.sharedCombineKey = "shared_expert_combination_strategy";
    f.sharedCombineDefault = "average";
    t.push_back(f);
  }
  {  // NemotronHMoE: NemotronHTopkRouter (DeepSeek-V3 noaux_tc: sigmoid, bias for choice,
     // groups, renorm iff norm_topk_prob, × routed_scaling_factor); NemotronHExperts non-gated
     // down(relu²(up(x))); shared_experts (NemotronHMLP, moe_shared_expert_intermediate_size)
     // likewise, ungated; MoE where layers_block_type says "moe".
    FamilySpec f = deepseekLike({"nemotron_h"}, "Nemotron-H", RoutingPiece::kDeepseekV3);
    f.siluActKeys = {};  // mlp_hidden_act, checked with the relu² experts
    f.expertsKeys = {"n_routed_experts", "num_local_experts"};
    f.layersKeys = {};  // the length of layers_block_type
    f.layerRule = LayerRule::kBlockTypes;
    f.renormalizeDefault = true;  // NemotronHConfig.norm_topk_prob
    f.shared = SharedKind::kRequiredWidth;
    f.sharedKeys = {"moe_shared_expert_intermediate_size"};
    f.layerRoot = "backbone.layers.";
    f.altLayerRoots = {"model.layers."};
    f.blocks = {"mixer."};
    f.perExpert = {{"", "up_proj", "down_proj"}};
    f.fused = FusedKind::kUp;
    f.sharedPrefix = "mixer.shared_experts.";
    f.sharedNames = {"", "up_proj", "down_proj"};
    f.relu2Experts = true;
    f.notes = "MoE layers only (its Mamba-2 and attention layers are not the cluster's part)";
    t.push_back(f);
  }
  {  // LongcatFlashMoE: LongcatFlashTopkRouter (softmax over E + zero_expert_num, + bias for
     // choice, no renorm, × routed_scaling_factor); ids >= E are identity experts; SwiGLU experts
     // of expert_ffn_hidden_size. One decoder layer (num_layers) = 2 attention + 2 dense MLP
     // sublayers + this MoE (intermediate_size aliases the dense MLPs' ffn_hidden_size).
    FamilySpec f = qwenLike({"longcat_flash"}, "LongCat-Flash");
    f.intermediateKeys = {"expert_ffn_hidden_size"};
    f.expertsKeys = {"n_routed_experts", "num_local_experts"};
    f.topKKeys = {"moe_topk", "num_experts_per_tok"};
    f.layersKeys = {"num_layers"};
    f.twiceLayersKey = "num_hidden_layers";
    f.routing = RoutingPiece::kSoftmaxBiasChoiceScaled;
    f.routerNames = {"router.classifier.weight"};
    f.routerBiasName = "router.classifier.bias";
    f.choiceBiasNames = {"router.e_score_correction_bias"};
    f.zeroExpertsKey = "zero_expert_num";
    f.notes = "MoE blocks only (the attention and dense MLP sublayers are not the cluster's part)";
    t.push_back(f);
  }
  {  // Qwen3VLMoeTextSparseMoeBlock (text model of Qwen3-VL-MoE): Qwen3-MoE's block, but
     // Qwen3VLMoeTextTopKRouter always renormalizes (no norm_topk_prob); decoder_sparse_step /
     // mlp_only_layers as Qwen3-MoE.
    FamilySpec f = qwenLike({"qwen3_vl_moe_text"}, "Qwen3-VL-MoE");
    f.expertsKeys = {"num_local_experts", "num_experts"};  // attribute_map num_experts
    f.layerRule = LayerRule::kSparseStep;
    f.notes = "text model of the VLM (Qwen3VLMoeForConditionalGeneration)";
    t.push_back(f);
  }
  {  // Glm4vMoeTextMoE (text model of GLM-4.5V): GLM-4-MoE's block (Glm4vMoeTextTopkRouter =
     // DeepSeek-V3 noaux_tc); MoE from first_k_dense_replace (default 1) on; n_shared_experts
     // default 1.
    FamilySpec f = *std::find_if(
        t.begin(), t.end(), [](const FamilySpec& r) { return r.modelTypes.front() == "glm4_moe"; });
    f.modelTypes = {"glm4v_moe_text"};
    f.name = "GLM-4.5V";
    f.firstKDenseDefault = 1;
    f.sharedDefault = 1;
    f.notes = "text model of the VLM (Glm4vMoeForConditionalGeneration)";
    t.push_back(f);
  }
  {  // Qwen3OmniMoeThinkerTextSparseMoeBlock (the Qwen3-Omni thinker's text model): Qwen3-MoE's
     // block; norm_topk_prob defaults to true (Qwen3OmniMoeTextConfig).
    FamilySpec f = *std::find_if(t.begin(), t.end(), [](const FamilySpec& r) {
      return r.modelTypes.front() == "qwen3_moe";
    });
    f.modelTypes = {"qwen3_omni_moe_text"};
    f.name = "Qwen3-Omni-MoE";
    f.expertsKeys = {"num_experts"};
    f.renormalizeDefault = true;
    f.notes = "the thinker's text model (Qwen3OmniMoeForConditionalGeneration)";
    t.push_back(f);
  }
  {  // GraniteMoeSWAMoE (GraniteMoeSWATopKRouter: top-k of the logits, softmax over them) +
     // GraniteMoeSWAMLP shared_mlp beside the block, as Granite-MoE-Shared; no conversion mapping,
     // so checkpoints hold the in-memory experts.gate_up_proj/down_proj and router.weight.
    FamilySpec f = *std::find_if(t.begin(), t.end(), [](const FamilySpec& r) {
      return r.modelTypes.front() == "granitemoeshared";
    });
    f.modelTypes = {"granitemoe_swa"};
    f.name = "Granite-MoE-SWA";
    f.notes = "MoE blocks only (its sliding-window attention with sinks is not the cluster's part)";
    t.push_back(f);
  }
  {  // BailingHybridMoE / BailingHybridTopkRouter: DeepSeek-V3's noaux_tc router (always sigmoid,
     // + bias for choice, top-2-sum groups, renorm + 1e-20 iff norm_topk_prob, × scale) and
     // shared_experts (moe_intermediate_size × n_shared_experts) ungated; sparse layers from
     // mlp_layer_types, else from first_k_dense_replace (2). BailingHybridConfig.attribute_map
     // aliases; the bias is saved as gate.expert_bias (conversion_mapping.py renames it).
    FamilySpec f = deepseekLike({"bailing_hybrid"}, "Bailing-Hybrid", RoutingPiece::kDeepseekV3);
    f.expertsKeys = {"num_local_experts", "num_experts"};
    f.topKKeys = {"num_experts_per_tok", "num_experts_per_token"};
    f.nGroupKeys = {"n_group", "num_expert_group"};
    f.normKeys = {"norm_topk_prob", "moe_renormalize"};
    f.sharedKeys = {"n_shared_experts", "num_shared_experts"};
    f.layerRule = LayerRule::kLayerTypesOrFirstKDense;
    f.renormalizeDefault = true;
    f.firstKDenseDefault = 2;
    f.nGroupDefault = 8;
    f.topkGroupDefault = 4;
    f.scaleDefault = 2.5f;
    f.sharedDefault = 1;
    f.choiceBiasNames = {"gate.expert_bias", "gate.e_score_correction_bias"};
    f.pinnedKeys = {
        {"scoring_func", "\"sigmoid\"",
         "transformers' BailingHybridTopkRouter always scores with sigmoid (it has no "
         "scoring_func)"},
        {"topk_method", "\"noaux_tc\"",
         "transformers' BailingHybridTopkRouter always routes noaux_tc (it has no topk_method)"}};
    f.notes = "MoE blocks only (its linear-attention layers are not the cluster's part)";
    t.push_back(f);
  }
  {  // LagunaSparseMoeBlock / LagunaTopKRouter: logits softcapped (tanh(s / c) · c iff
     // moe_router_logit_softcapping > 0), σ, + e_score_correction_bias for choice, w / Σw (no
     // eps); the routed sum × moe_routed_scaling_factor (here folded into the weights); +
     // shared_experts (shared_expert_intermediate_size, default 512; 0 adds nothing) ungated;
     // sparse layers from mlp_layer_types (default all but layer 0). Saved names (qwen2_moe's
     // per-expert mapping; experts.e_score_correction_bias, shared_expert.) first.
    FamilySpec f = qwenLike({"laguna"}, "Laguna");
    f.expertsKeys = {"num_experts"};  // LagunaConfig has no attribute_map
    f.layerRule = LayerRule::kLayerTypes;
    f.routing = RoutingPiece::kSigmoidBiasScaled;
    f.scaleKeys = {"moe_routed_scaling_factor"};
    f.logitSoftcapKey = "moe_router_logit_softcapping";
    f.choiceBiasNames = {"experts.e_score_correction_bias", "gate.e_score_correction_bias"};
    f.shared = SharedKind::kWidth;
    f.sharedKeys = {"shared_expert_intermediate_size"};
    f.sharedDefault = 512;
    f.sharedPrefix = "mlp.shared_expert.";
    f.sharedPrefixAliases = {"mlp.shared_experts."};
    f.pinnedKeys = {{"moe_apply_router_weight_on_input", "false",
                     "transformers' LagunaConfig refuses it (NotImplementedError)"}};
    t.push_back(f);
  }
  {  // BeamMoE / BeamTopKRouter: DeepSeek-V3 noaux_tc (σ of f32 logits, + bias for choice, group
     // score = top-2 sum, w / (Σw + 1e-20) iff norm_topk_prob) with no shared expert;
     // routed_scaling_factor multiplies the experts' sum (the same as the weights); sparse layers
     // from mlp_layer_types (default: all but the first min(3, L)); BeamConfig has no alias.
    FamilySpec f = deepseekLike({"beam"}, "Beam", RoutingPiece::kDeepseekV3);
    f.expertsKeys = {"num_experts"};
    f.layerRule = LayerRule::kLayerTypes;
    f.denseLayersDefault = 3;
    f.renormalizeDefault = true;
    f.nGroupDefault = 8;
    f.topkGroupDefault = 4;
    f.scaleDefault = 2.5f;
    f.shared = SharedKind::kNone;
    f.sharedKeys = {};
    f.sharedPrefix = "";
    f.pinnedKeys = {
        {"scoring_func", "\"sigmoid\"",
         "transformers' BeamTopKRouter always scores with sigmoid (it has no scoring_func)"},
        {"topk_method", "\"noaux_tc\"",
         "transformers' BeamTopKRouter always routes group-limited noaux_tc (it has no "
         "topk_method)"}};
    f.notes = "MoE blocks only (its gated attention is not the cluster's part)";
    t.push_back(f);
  }
  {  // LaraMiniSparseMoeBlock (= FlintSparseMoeBlock) / LaraMiniTopKRouter: softmax of f32 logits,
     // top-k, renormalized iff norm_topk_prob (default true); + shared_expert
     // (shared_expert_intermediate_size, default 512) ungated; every layer MoE
     // (LaraMiniDecoderLayer); LaraMiniConfig has no attribute_map.
    FamilySpec f = qwenLike({"lara_mini"}, "Lara-Mini");
    f.expertsKeys = {"num_experts"};
    f.renormalize = Renormalize::kKey;
    f.renormalizeDefault = true;
    f.shared = SharedKind::kWidth;
    f.sharedKeys = {"shared_expert_intermediate_size"};
    f.sharedDefault = 512;
    f.sharedPrefix = "mlp.shared_expert.";
    f.notes = "MoE blocks only (its gated-delta-net layers are not the cluster's part)";
    t.push_back(f);
  }
  {  // FlintSparseMoeBlock / FlintTopKRouter: σ(f32 logits), top-k of σ (no expert bias), w / Σw
     // iff norm_topk_prob (default true), no scale; + shared_expert
     // (shared_expert_intermediate_size, default 1024) ungated; MoE layers as Qwen
     // (FlintDecoderLayer: mlp_only_layers, decoder_sparse_step); FlintConfig has no attribute_map.
    FamilySpec f = qwenLike({"flint"}, "Flint");
    f.expertsKeys = {"num_experts"};
    f.layerRule = LayerRule::kSparseStep;
    f.routing = RoutingPiece::kSigmoidBiasScaled;
    f.noChoiceBias = true;
    f.mlpOnlyLayersDefault = {0, 1};
    f.renormalize = Renormalize::kKey;
    f.renormalizeDefault = true;
    f.shared = SharedKind::kWidth;
    f.sharedKeys = {"shared_expert_intermediate_size"};
    f.sharedDefault = 1024;
    f.sharedPrefix = "mlp.shared_expert.";
    f.notes = "MoE blocks only (its attention with sinks is not the cluster's part)";
    t.push_back(f);
  }
  {  // AriaTextMoELayer / AriaTextTopKRouter (aria's text model): top-k of the logits, softmax
     // over them; AriaExperts x @ W ([E, H, 2I] + [E, I, H], saved as experts.fc1/fc2.weight),
     // always SiLU; shared_experts (intermediate_size × moe_num_shared_experts) ungated; every
     // layer is MoE.
    FamilySpec f = qwenLike({"aria_text"}, "Aria");
    f.intermediateKeys = {"intermediate_size"};
    f.expertsKeys = {"moe_num_experts"};
    f.topKKeys = {"moe_topk"};
    f.routing = RoutingPiece::kSoftmaxOverTopLogits;
    f.routerNames = {"router.weight"};
    f.perExpert = {};
    f.orientation = FusedOrientation::kInOut;
    f.savedGateUpName = "experts.fc1.weight";
    f.savedDownName = "experts.fc2.weight";
    f.shared = SharedKind::kTimesRouted;
    f.sharedKeys = {"moe_num_shared_experts"};
    f.sharedDefault = 2;  // AriaTextConfig.moe_num_shared_experts
    f.sharedPrefix = "mlp.shared_experts.";
    f.pinnedKeys = {
        {"mlp_bias", "false", "its shared experts would carry biases, which are not loaded"},
        {"hidden_act", "\"silu\"",
         "AriaSharedExpertsMLP follows hidden_act and the cluster's experts are SiLU-gated"}};
    f.notes =
        "the text model (AriaTextForCausalLM); the vision tower and projector are not the "
        "cluster's part";
    t.push_back(f);
  }
  {  // Qwen4ExpTextSparseMoeBlock (text model): Qwen2-MoE's block in every layer; the router
     // (Qwen4ExpTextTopKRouter) renormalizes iff norm_topk_prob (default true); shared expert width
     // default 512. Its hyper-connection streams, PLE n-gram embeddings (token ids) and
     // attention feed the block's input; the block itself sees hidden states only.
    FamilySpec f = qwenLike({"qwen4_exp_text"}, "Qwen4-Exp");
    f.expertsKeys = {"num_experts"};  // Qwen4ExpTextConfig has no attribute_map for it
    f.renormalize = Renormalize::kKey;
    f.renormalizeDefault = true;
    f.shared = SharedKind::kGated;
    f.sharedKeys = {"shared_expert_intermediate_size"};
    f.sharedDefault = 512;
    f.sharedPrefix = "mlp.shared_expert.";
    f.sharedGateName = "mlp.shared_expert_gate.weight";
    f.notes =
        "MoE blocks only (its gated-delta-net, indexed attention, hyper-connection and n-gram "
        "embedding parts are not the cluster's part)";
    t.push_back(f);
  }
  {  // MistralLarge4TextMoE / MistralLarge4TextTopkRouter: softmax, groups (top-2 sum, others
     // 0.0), no correction bias, always renormalized (+1e-20), × routed_scaling_factor (default
     // 1.0); shared_experts ungated; sparse layers from mlp_layer_types, else from
     // first_k_dense_replace (default 1). Text model: 5.24 has no ForCausalLM for it, so a text
     // checkpoint is MistralLarge4TextModel's (layers.L.), the VLM's is model.language_model.
    FamilySpec f =
        deepseekLike({"mistral_large4_text"}, "Mistral-Large-4", RoutingPiece::kDeepseekV3);
    f.routing = RoutingPiece::kSoftmaxGroupsRenormScaled;
    f.expertsKeys = {"n_routed_experts", "num_local_experts", "num_experts"};
    f.layerRule = LayerRule::kLayerTypesOrFirstKDense;
    f.firstKDenseDefault = 1;
    f.sharedDefault = 1;
    f.choiceBiasNames = {};
    // As 5.24 saves it (Mistral's native names, conversion_mapping.py): layers.L.gate.weight,
    // layers.L.experts.{e}.w1/w3/w2, layers.L.shared_experts.gate_proj/up_proj/down_proj; in
    // memory under mlp. (fused experts.gate_up_proj).
    f.blocks = {"mlp.", ""};
    f.perExpert = {kMixtralNames, kQwenNames};
    f.sharedPrefix = "shared_experts.";
    f.sharedPrefixAliases = {"mlp.shared_experts."};
    f.layerRoot = "layers.";
    f.altLayerRoots = {"model.language_model.layers.", "model.layers."};
    f.pinnedKeys = {{"norm_topk_prob", "true",
                     "transformers 5's MistralLarge4TextTopkRouter always renormalizes"}};
    f.notes = "MoE blocks only (its DSA indexed attention is not the cluster's part)";
    t.push_back(f);
  }
  {  // SkyworkAI MoE++ (moe_plus_plus_layer.py): not a transformers family.
    FamilySpec f;
    f.modelTypes = {"MoE++", "moe_plus_plus"};
    f.name = "MoE++";
    f.hiddenKeys = {"hidden_size"};
    f.expertsKeys = {"num_experts"};
    f.intermediateKeys = {"intermediate_size"};
    f.layersKeys = {"num_hidden_layers"};
    f.layerRule = LayerRule::kMoePlusPlusInterval;
    f.routing = RoutingPiece::kMoePlusPlus;
    f.blocks = {"mlp.moe."};
    f.routerNames = {"gate.wg.weight"};
    f.expertsDir = "experts.experts.";
    f.perExpert = {{"up_proj", "", "down_proj"}};
    f.gate = GateKindSpec::kMoePlusPlus;
    t.push_back(f);
  }
  {  // IEIT Yuan 2.0-M32 (YuanSparseMoeBlock): attention router, softmax top-k renormalized.
    FamilySpec f;
    f.modelTypes = {"yuan"};
    f.name = "Yuan-2.0-M32";
    f.hiddenKeys = {"hidden_size"};
    f.intermediateKeys = {"moe_config.ffn_hidden_size"};
    f.expertsKeys = {"moe_config.moe_num_experts"};
    f.topKKeys = {"moe_config.moe_top_k"};
    f.layersKeys = {"num_hidden_layers"};
    f.blocks = {"mlp."};
    f.perExpert = {{"w1", "", "w2"}};
    f.gate = GateKindSpec::kYuanAttention;
    t.push_back(f);
  }
  return t;
}

std::string fmt(float v) {
  std::ostringstream o;
  o << v;
  return o.str();
}

}  // namespace

const std::vector<FamilySpec>& modelFamilies() {
  static const std::vector<FamilySpec> table = buildTable();
  return table;
}

const FamilySpec* findFamily(const std::string& modelType) {
  for (const FamilySpec& f : modelFamilies()) {
    for (const std::string& t : f.modelTypes) {
      if (t == modelType) return &f;
    }
  }
  return nullptr;
}

std::string supportedModelTypes() {
  std::string out;
  for (const FamilySpec& f : modelFamilies()) {
    for (const std::string& t : f.modelTypes) out += (out.empty() ? "" : ", ") + t;
  }
  return out;
}

namespace {

// The vision-language wrappers (issue #13): config.json's model_type, where the text config is,
// and where save_pretrained writes the text model's layers (each checked on the wrapper's
// save_pretrained output in transformers 5.24).
std::vector<WrapperSpec> buildWrappers() {
  const S lm = {"model.language_model.layers."};
  std::vector<WrapperSpec> w;
  // Qwen3_5MoeForConditionalGeneration (text: qwen3_5_moe_text).
  w.push_back({"qwen3_5_moe", "Qwen3.5-MoE", {"text_config"}, lm});
  // Qwen3VLMoeForConditionalGeneration (text: qwen3_vl_moe_text).
  w.push_back({"qwen3_vl_moe", "Qwen3-VL-MoE", {"text_config"}, lm});
  // Glm4vMoeForConditionalGeneration (text: glm4v_moe_text).
  w.push_back({"glm4v_moe", "GLM-4.5V", {"text_config"}, lm});
  // Qwen3OmniMoeForConditionalGeneration: the thinker's text model (the talker is not served).
  w.push_back({"qwen3_omni_moe",
               "Qwen3-Omni-MoE",
               {"thinker_config", "text_config"},
               {"thinker.model.layers."}});
  return w;
}

}  // namespace

const WrapperSpec* findWrapper(const std::string& modelType) {
  static const std::vector<WrapperSpec> wrappers = buildWrappers();
  for (const WrapperSpec& w : wrappers) {
    if (w.modelType == modelType) return &w;
  }
  return nullptr;
}

std::string supportedWrapperTypes() {
  std::string out;
  for (const WrapperSpec& w : buildWrappers()) out += (out.empty() ? "" : ", ") + w.modelType;
  return out;
}

RoutingRecipe softmaxTopkRecipe(bool renormalize) {
  RoutingRecipe r;
  r.normalize = renormalize ? RoutingRecipe::Normalize::kSum : RoutingRecipe::Normalize::kNone;
  return r;
}

RoutingRecipe deepseekV2Recipe(float scale, bool groupLimited, uint32_t nGroup,
                               uint32_t topkGroup) {
  RoutingRecipe r;
  if (groupLimited) {
    r.groups = RoutingRecipe::Groups::kMax;
    r.nGroup = nGroup;
    r.topkGroup = topkGroup;
  }
  r.normalize = RoutingRecipe::Normalize::kNone;
  r.scale = scale;
  return r;
}

RoutingRecipe deepseekV3Recipe(bool sigmoid, bool normTopkProb, float scale, uint32_t nGroup,
                               uint32_t topkGroup) {
  RoutingRecipe r;
  r.scoring = sigmoid ? RoutingRecipe::Scoring::kSigmoid : RoutingRecipe::Scoring::kSoftmax;
  r.choiceBias = true;
  r.groups = RoutingRecipe::Groups::kTop2Sum;
  r.nGroup = nGroup;
  r.topkGroup = topkGroup;
  r.groupMask = -INFINITY;
  r.normalize = normTopkProb ? RoutingRecipe::Normalize::kSum : RoutingRecipe::Normalize::kNone;
  r.normEps = 1e-20f;
  r.scale = scale;
  return r;
}

std::string RoutingRecipe::describe() const {
  if (scoring == Scoring::kSparseMixer) {
    return "sparsemixer (jitter eps " + fmt(jitterEps) +
           "), top-2, each weight a softmax over the logits within 2*eps of its pick";
  }
  std::string s;
  if (logitsNormStd > 0) s += "logits / (std / " + fmt(logitsNormStd) + "), ";
  if (logitSoftcap > 0) {
    s += "logits softcapped (tanh(s / " + fmt(logitSoftcap) + ") * " + fmt(logitSoftcap) + "), ";
  }
  switch (scoring) {
    case Scoring::kSoftmax:
      s += "softmax";
      break;
    case Scoring::kSigmoid:
      s += "sigmoid";
      break;
    case Scoring::kSoftmaxOverChosen:
      s += "top-k of logits, softmax over the chosen";
      break;
    case Scoring::kSparseMixer:
      break;  // described above
  }
  if (routerBias) s = "router bias, " + s;
  if (choiceBias) s += ", + correction bias for choice";
  if (groups != Groups::kNone) {
    s += std::string(", groups (") + (groups == Groups::kMax ? "max" : "top-2 sum") + ", keep " +
         std::to_string(topkGroup) + " of " + std::to_string(nGroup) + ", others " +
         fmt(groupMask) + ")";
  }
  if (scoring != Scoring::kSoftmaxOverChosen) {
    s += chooseOnLogits ? ", top-k of logits" : ", top-k";
  }
  if (zeroWeightExpert) s += ", zero expert " + std::to_string(*zeroWeightExpert) + " weighs 0";
  if (normalize == Normalize::kSum) {
    s += ", renormalize";
    if (normMin > 0) s += " (sum clamped to >= " + fmt(normMin) + ")";
    if (normEps > 0) s += " (+" + fmt(normEps) + ")";
  } else if (normalize == Normalize::kPNorm) {
    s += ", / " + fmt(pNorm) + "-norm";
  }
  if (scale != 1.0f) s += ", x " + fmt(scale);
  return s;
}

}  // namespace moe
