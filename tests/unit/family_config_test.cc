// config.json parsing for the transformers 5 families that reuse the table's recipes
// (deepseek_v32 ... kimi_linear, granitemoe_swa, bailing_hybrid; common/model_families.cc): each
// key under every alias, each optional key's default as the family's configuration_*.py sets it,
// the mlp_layer_types rules, and errors that name the key and the family. The fixtures
// (family_parity_test) write every key, so the defaults and aliases are only checked here.
#include <gtest/gtest.h>

#include <string>
#include <utility>
#include <vector>

#include "common/checkpoint.h"

namespace moe {
namespace {

// A config.json: model_type, hidden_size 64, moe_intermediate_size 24 and `keys` (JSON members).
std::string configJson(const std::string& modelType, const std::string& keys) {
  return R"({"model_type": ")" + modelType +
         R"(", "hidden_size": 64, "moe_intermediate_size": 24, )" + keys + "}";
}

struct Want {
  std::vector<uint32_t> moeLayers;
  RoutingRecipe::Scoring scoring;
  RoutingRecipe::Normalize normalize;
  uint32_t nGroup, topkGroup;
  float scale;
  uint32_t shared;  // shared expert width (0: none)
  bool gated;
};

struct Case {
  const char* name;
  const char* modelType;
  const char* keys;  // config.json members besides configJson's
  uint32_t experts, topK;
  Want want;
};

constexpr auto kSigmoid = RoutingRecipe::Scoring::kSigmoid;
constexpr auto kSoftmax = RoutingRecipe::Scoring::kSoftmax;
constexpr auto kSum = RoutingRecipe::Normalize::kSum;
constexpr auto kNone = RoutingRecipe::Normalize::kNone;

// Only the required keys: every other value is the config class's default.
const std::vector<Case> kDefaults = {
    // DeepseekV32Config: first_k_dense_replace 3, n_group 8, topk_group 4, x 2.5, 1 shared.
    {"deepseek_v32",
     "deepseek_v32",
     R"("num_hidden_layers": 5, "n_routed_experts": 16, "num_experts_per_tok": 2)",
     16,
     2,
     {{3, 4}, kSigmoid, kSum, 8, 4, 2.5f, 24, false}},
    // SarvamMLAConfig (DeepseekV3 decoder): first_k_dense_replace 1, groups 1/1, x 2.5.
    {"sarvam_mla",
     "sarvam_mla",
     R"("num_hidden_layers": 3, "n_routed_experts": 8, "num_experts_per_tok": 2)",
     8,
     2,
     {{1, 2}, kSigmoid, kSum, 1, 1, 2.5f, 24, false}},
    // MiMoV2FlashConfig: mlp_layer_types ["dense"] + sparse, x 1.0, no shared experts.
    {"mimo_v2_flash",
     "mimo_v2_flash",
     R"("num_hidden_layers": 3, "n_routed_experts": 8, "num_experts_per_tok": 2)",
     8,
     2,
     {{1, 2}, kSigmoid, kSum, 1, 1, 1.0f, 0, false}},
    // SolarOpenConfig: every layer, x 1.0, 1 shared.
    {"solar_open",
     "solar_open",
     R"("num_hidden_layers": 3, "n_routed_experts": 8, "num_experts_per_tok": 2)",
     8,
     2,
     {{0, 1, 2}, kSigmoid, kSum, 1, 1, 1.0f, 24, false}},
    // GlmMoeDsaConfig: first_k_dense_replace 3, groups 1/1, x 2.5.
    {"glm_moe_dsa",
     "glm_moe_dsa",
     R"("num_hidden_layers": 5, "n_routed_experts": 8, "num_experts_per_tok": 2)",
     8,
     2,
     {{3, 4}, kSigmoid, kSum, 1, 1, 2.5f, 24, false}},
    // SarvamMoEConfig (Glm4Moe decoder): first_k_dense_replace 1, x 2.5.
    {"sarvam_moe",
     "sarvam_moe",
     R"("num_hidden_layers": 3, "n_routed_experts": 8, "num_experts_per_tok": 2)",
     8,
     2,
     {{1, 2}, kSigmoid, kSum, 1, 1, 2.5f, 24, false}},
    // MellumConfig: every layer sparse, norm_topk_prob true.
    {"mellum",
     "mellum",
     R"("num_hidden_layers": 3, "num_local_experts": 8, "num_experts_per_tok": 2)",
     8,
     2,
     {{0, 1, 2}, kSoftmax, kSum, 1, 1, 1.0f, 0, false}},
    // Qwen3_5MoeTextConfig: every layer, shared_expert_intermediate_size 512, gated.
    {"qwen3_5_moe_text",
     "qwen3_5_moe_text",
     R"("num_hidden_layers": 2, "num_experts": 8, "num_experts_per_tok": 2)",
     8,
     2,
     {{0, 1}, kSoftmax, kSum, 1, 1, 1.0f, 512, true}},
    // ExaoneMoeConfig: first_k_dense_replace 1, x 2.5, num_shared_experts 1.
    {"exaone_moe",
     "exaone_moe",
     R"("num_hidden_layers": 3, "num_experts": 8, "num_experts_per_tok": 2)",
     8,
     2,
     {{1, 2}, kSigmoid, kSum, 1, 1, 2.5f, 24, false}},
    // KimiLinearConfig: first_k_dense_replace 1, x 2.446, 1 shared, moe_renormalize true.
    {"kimi_linear",
     "kimi_linear",
     R"("num_hidden_layers": 3, "num_experts": 8, "num_experts_per_token": 2)",
     8,
     2,
     {{1, 2}, kSigmoid, kSum, 1, 1, 2.446f, 24, false}},
    // BailingHybridConfig: first_k_dense_replace 2, n_group 8, topk_group 4, x 2.5, 1 shared,
    // norm_topk_prob true.
    {"bailing_hybrid",
     "bailing_hybrid",
     R"("num_hidden_layers": 4, "num_local_experts": 16, "num_experts_per_tok": 2)",
     16,
     2,
     {{2, 3}, kSigmoid, kSum, 8, 4, 2.5f, 24, false}},
};

// Aliases and explicit values (each the family's attribute_map or BC name).
const std::vector<Case> kKeys = {
    {"kimi_linear_v5_names",
     "kimi_linear",
     R"("num_hidden_layers": 2, "num_experts": 8, "num_experts_per_token": 3,
        "num_expert_group": 4, "topk_group": 2, "moe_renormalize": false,
        "num_shared_experts": 2, "routed_scaling_factor": 1.5, "first_k_dense_replace": 0)",
     8,
     3,
     {{0, 1}, kSigmoid, kNone, 4, 2, 1.5f, 48, false}},
    {"kimi_linear_attribute_names",
     "kimi_linear",
     R"("num_hidden_layers": 2, "num_local_experts": 8, "num_experts_per_tok": 3,
        "n_group": 4, "topk_group": 2, "norm_topk_prob": false, "n_shared_experts": 2,
        "routed_scaling_factor": 1.5, "first_k_dense_replace": 0)",
     8,
     3,
     {{0, 1}, kSigmoid, kNone, 4, 2, 1.5f, 48, false}},
    {"kimi_linear_both_names_agree",
     "kimi_linear",
     R"("num_hidden_layers": 2, "num_experts": 8, "num_local_experts": 8,
        "num_experts_per_token": 2, "num_expert_group": 2, "n_group": 2,
        "mlp_layer_types": ["sparse", "dense"])",
     8,
     2,
     {{0}, kSigmoid, kSum, 2, 1, 2.446f, 24, false}},
    {"sarvam_moe_original_names",
     "sarvam_moe",
     R"("num_hidden_layers": 3, "num_experts": 8, "num_experts_per_tok": 2,
        "num_shared_experts": 2, "first_k_dense_replace": 2)",
     8,
     2,
     {{2}, kSigmoid, kSum, 1, 1, 2.5f, 48, false}},
    {"sarvam_mla_original_names",
     "sarvam_mla",
     R"("num_hidden_layers": 3, "num_experts": 8, "num_experts_per_tok": 2,
        "num_shared_experts": 0, "norm_topk_prob": false)",
     8,
     2,
     {{1, 2}, kSigmoid, kNone, 1, 1, 2.5f, 0, false}},
    {"deepseek_v32_num_experts",
     "deepseek_v32",
     R"("num_hidden_layers": 3, "num_experts": 8, "num_experts_per_tok": 2, "n_group": 2,
        "topk_group": 1, "first_k_dense_replace": 1)",
     8,
     2,
     {{1, 2}, kSigmoid, kSum, 2, 1, 2.5f, 24, false}},
    {"glm_moe_dsa_layer_types_win",
     "glm_moe_dsa",
     R"("num_hidden_layers": 2, "num_local_experts": 8, "num_experts_per_tok": 2,
        "first_k_dense_replace": 3, "mlp_layer_types": ["dense", "sparse"])",
     8,
     2,
     {{1}, kSigmoid, kSum, 1, 1, 2.5f, 24, false}},
    {"exaone_moe_first_k_dense",
     "exaone_moe",
     R"("num_hidden_layers": 4, "num_experts": 8, "num_experts_per_tok": 2,
        "first_k_dense_replace": 2, "num_shared_experts": 0)",
     8,
     2,
     {{2, 3}, kSigmoid, kSum, 1, 1, 2.5f, 0, false}},
    {"mimo_v2_flash_null_scale",
     "mimo_v2_flash",
     R"("num_hidden_layers": 2, "n_routed_experts": 8, "num_experts_per_tok": 2,
        "routed_scaling_factor": null, "n_group": 4, "topk_group": 2)",
     8,
     2,
     {{1}, kSigmoid, kSum, 4, 2, 1.0f, 0, false}},
    {"mellum_num_experts_no_renorm",
     "mellum",
     R"("num_hidden_layers": 2, "num_experts": 8, "num_experts_per_tok": 2,
        "norm_topk_prob": false, "mlp_layer_types": ["dense", "sparse"])",
     8,
     2,
     {{1}, kSoftmax, kNone, 1, 1, 1.0f, 0, false}},
    // Qwen3_5MoeTopKRouter always renormalizes: a stray norm_topk_prob changes nothing.
    {"qwen3_5_moe_text_always_renormalizes",
     "qwen3_5_moe_text",
     R"("num_hidden_layers": 2, "num_experts": 8, "num_experts_per_tok": 2,
        "norm_topk_prob": false, "shared_expert_intermediate_size": 32)",
     8,
     2,
     {{0, 1}, kSoftmax, kSum, 1, 1, 1.0f, 32, true}},
    // BailingHybridConfig.attribute_map: the names its checkpoints (and save_pretrained) write.
    {"bailing_hybrid_attribute_map_names",
     "bailing_hybrid",
     R"("num_hidden_layers": 2, "num_experts": 8, "num_experts_per_token": 3,
        "num_expert_group": 4, "topk_group": 2, "moe_renormalize": false,
        "num_shared_experts": 2, "routed_scaling_factor": 1.5, "mlp_layer_types": ["dense", "sparse"])",
     8,
     3,
     {{1}, kSigmoid, kNone, 4, 2, 1.5f, 48, false}},
    {"bailing_hybrid_v5_names",
     "bailing_hybrid",
     R"("num_hidden_layers": 2, "num_local_experts": 8, "num_experts_per_tok": 3, "n_group": 4,
        "topk_group": 2, "norm_topk_prob": false, "n_shared_experts": 2,
        "routed_scaling_factor": 1.5, "first_k_dense_replace": 1)",
     8,
     3,
     {{1}, kSigmoid, kNone, 4, 2, 1.5f, 48, false}},
    // GraniteMoeSWAConfig: Granite-MoE-Shared's keys; top-k of the logits, softmax over them.
    {"granitemoe_swa",
     "granitemoe_swa",
     R"("num_hidden_layers": 2, "intermediate_size": 24, "num_local_experts": 8,
        "num_experts_per_tok": 2, "shared_intermediate_size": 32)",
     8,
     2,
     {{0, 1}, RoutingRecipe::Scoring::kSoftmaxOverChosen, kNone, 1, 1, 1.0f, 32, false}},
    // Qwen4ExpTextConfig: every layer, norm_topk_prob true, shared expert 512 gated.
    {"qwen4_exp_text",
     "qwen4_exp_text",
     R"("num_hidden_layers": 2, "num_experts": 8, "num_experts_per_tok": 2)",
     8,
     2,
     {{0, 1}, kSoftmax, kSum, 1, 1, 1.0f, 512, true}},
    // Qwen4ExpTextTopKRouter reads norm_topk_prob (unlike Qwen3.5-MoE's router).
    {"qwen4_exp_text_no_renormalize",
     "qwen4_exp_text",
     R"("num_hidden_layers": 2, "num_experts": 8, "num_experts_per_tok": 2,
        "norm_topk_prob": false, "shared_expert_intermediate_size": 32)",
     8,
     2,
     {{0, 1}, kSoftmax, kNone, 1, 1, 1.0f, 32, true}},
};

void expectParses(const Case& c) {
  SCOPED_TRACE(c.name);
  auto parsed = parseModelConfig(configJson(c.modelType, c.keys), "config.json");
  ASSERT_TRUE(parsed.isOk()) << parsed.error();
  const ModelConfig& m = parsed.value();
  EXPECT_EQ(m.numExperts, c.experts);
  EXPECT_EQ(m.numFfnExperts, c.experts);
  EXPECT_EQ(m.topK, c.topK);
  EXPECT_EQ(m.intermediateSize, 24u);
  EXPECT_EQ(m.moeLayers, c.want.moeLayers);
  EXPECT_EQ(m.routing.scoring, c.want.scoring);
  EXPECT_EQ(m.routing.normalize, c.want.normalize);
  EXPECT_FLOAT_EQ(m.routing.scale, c.want.scale);
  EXPECT_EQ(m.sharedIntermediateSize, c.want.shared);
  EXPECT_EQ(m.sharedExpertGated, c.want.gated);
  if (c.want.scoring == kSigmoid) {  // DeepseekV3TopkRouter: bias for choice, top-2-sum groups
    EXPECT_TRUE(m.routing.choiceBias);
    EXPECT_EQ(m.routing.groups, RoutingRecipe::Groups::kTop2Sum);
    EXPECT_EQ(m.routing.nGroup, c.want.nGroup);
    EXPECT_EQ(m.routing.topkGroup, c.want.topkGroup);
    EXPECT_FLOAT_EQ(m.routing.normEps, 1e-20f);
  } else {
    EXPECT_FALSE(m.routing.choiceBias);
    EXPECT_EQ(m.routing.groups, RoutingRecipe::Groups::kNone);
  }
}

TEST(FamilyConfig, OptionalKeysTakeTheConfigClassDefaults) {
  for (const Case& c : kDefaults) expectParses(c);
}

TEST(FamilyConfig, EveryAliasReadsTheSameQuantity) {
  for (const Case& c : kKeys) expectParses(c);
}

struct ErrorCase {
  const char* modelType;
  const char* keys;
  const char* error;  // the whole message after "config.json: "
};

const std::vector<ErrorCase> kErrors = {
    {"kimi_linear", R"("num_hidden_layers": 2, "num_experts_per_token": 2)",
     "key 'num_experts' missing (Kimi-Linear; also read as 'num_local_experts')"},
    {"kimi_linear", R"("num_hidden_layers": 2, "num_experts": 8)",
     "key 'num_experts_per_token' missing (Kimi-Linear; also read as 'num_experts_per_tok')"},
    {"exaone_moe", R"("num_hidden_layers": 2, "num_experts_per_tok": 2)",
     "key 'num_experts' missing (EXAONE-MoE)"},
    {"qwen3_5_moe_text", R"("num_hidden_layers": 2, "num_local_experts": 8,
                            "num_experts_per_tok": 2)",
     "key 'num_experts' missing (Qwen3.5-MoE)"},
    {"sarvam_moe", R"("num_hidden_layers": 2, "num_experts_per_tok": 2)",
     "key 'n_routed_experts' missing (Sarvam-MoE; also read as 'num_local_experts', "
     "'num_experts')"},
    {"mellum", R"("num_experts": 8, "num_experts_per_tok": 2)",
     "key 'num_hidden_layers' missing (Mellum)"},
    {"kimi_linear", R"("num_hidden_layers": 2, "num_experts": 8, "num_experts_per_token": 2,
                       "num_expert_group": 2, "n_group": 4)",
     "keys 'num_expert_group' (2) and 'n_group' (4) contradict each other (Kimi-Linear reads "
     "them as one quantity)"},
    {"kimi_linear", R"("num_hidden_layers": 2, "num_experts": 8, "num_experts_per_token": 2,
                       "moe_renormalize": true, "norm_topk_prob": false)",
     "keys 'moe_renormalize' (true) and 'norm_topk_prob' (false) contradict each other "
     "(Kimi-Linear reads them as one quantity)"},
    {"kimi_linear", R"("num_hidden_layers": 2, "num_experts": 8, "num_experts_per_token": 2,
                       "num_expert_group": 3)",
     "num_expert_group 3 must divide num_experts (8)"},
    {"kimi_linear", R"("num_hidden_layers": 2, "num_experts": 8, "num_experts_per_token": 2,
                       "moe_renormalize": 1)",
     "key 'moe_renormalize' must be true or false (got 1)"},
    {"sarvam_mla", R"("num_hidden_layers": 2, "n_routed_experts": 8, "num_experts_per_tok": 2,
                      "num_shared_experts": 1, "n_shared_experts": 2)",
     "keys 'n_shared_experts' (2) and 'num_shared_experts' (1) contradict each other "
     "(Sarvam-MLA reads them as one quantity)"},
    {"deepseek_v32", R"("num_hidden_layers": 2, "n_routed_experts": 8, "num_experts_per_tok": 2)",
     "topk_method noaux_tc needs at least 2 experts per group (n_routed_experts 8 / n_group 8)"},
    {"exaone_moe", R"("num_hidden_layers": 2, "num_experts": 8, "num_experts_per_tok": 2,
                      "mlp_layer_types": ["sparse"])",
     "key 'mlp_layer_types' must list \"dense\" or \"sparse\" for each of the 2 layers "
     "(EXAONE-MoE; got [\"sparse\"])"},
    {"mellum", R"("num_hidden_layers": 2, "num_experts": 8, "num_experts_per_tok": 2,
                  "mlp_layer_types": ["dense", "moe"])",
     "key 'mlp_layer_types' entry 1 must be \"dense\" or \"sparse\" (Mellum; got \"moe\")"},
    {"glm_moe_dsa", R"("num_hidden_layers": 2, "n_routed_experts": 8, "num_experts_per_tok": 2,
                       "first_k_dense_replace": -1)",
     "key 'first_k_dense_replace' must be a non-negative integer (got -1)"},
    // The experts' ACT2FN key: another activation than SiLU is refused, never served as SwiGLU.
    {"qwen3_moe", R"("num_hidden_layers": 2, "num_experts": 8, "num_experts_per_tok": 2,
                    "hidden_act": "gelu")",
     "key 'hidden_act' is \"gelu\", but Qwen3-MoE experts are served as SwiGLU with SiLU only "
     "(\"silu\" or \"swish\")"},
    {"dbrx", R"("n_layers": 2, "ffn_config": {"ffn_hidden_size": 24, "moe_num_experts": 8,
               "moe_top_k": 2, "ffn_act_fn": {"name": "relu"}})",
     "key 'ffn_config.ffn_act_fn.name' is \"relu\", but DBRX experts are served as SwiGLU with "
     "SiLU only (\"silu\" or \"swish\")"},
    {"bailing_hybrid", R"("num_hidden_layers": 2, "num_experts": 8, "num_experts_per_token": 2,
                          "num_expert_group": 1, "scoring_func": "softmax")",
     "key 'scoring_func' is \"softmax\", but Bailing-Hybrid is served only with \"sigmoid\": "
     "transformers' BailingHybridTopkRouter always scores with sigmoid (it has no scoring_func)"},
    {"bailing_hybrid", R"("num_hidden_layers": 2, "num_experts": 8, "num_experts_per_tok": 2,
                          "num_experts_per_token": 4)",
     "keys 'num_experts_per_tok' (2) and 'num_experts_per_token' (4) contradict each other "
     "(Bailing-Hybrid reads them as one quantity)"},
    {"laguna", R"("num_hidden_layers": 2, "num_experts": 8, "num_experts_per_tok": 2,
                  "moe_router_logit_softcapping": -1)",
     "key 'moe_router_logit_softcapping' must be a non-negative number (got -1) (Laguna)"},
    {"laguna", R"("num_hidden_layers": 2, "num_experts": 8, "num_experts_per_tok": 2,
                  "moe_apply_router_weight_on_input": true)",
     "key 'moe_apply_router_weight_on_input' is true, but Laguna is served only with false: "
     "transformers' LagunaConfig refuses it (NotImplementedError)"},
};

TEST(FamilyConfig, ErrorsNameTheKeyAndTheFamily) {
  for (const ErrorCase& e : kErrors) {
    SCOPED_TRACE(std::string(e.modelType) + ": " + e.keys);
    auto parsed = parseModelConfig(configJson(e.modelType, e.keys), "config.json");
    ASSERT_FALSE(parsed.isOk());
    EXPECT_EQ(parsed.error(), std::string("config.json: ") + e.error);
  }
}

// SiLU under either name is served; gpt-oss's experts ignore hidden_act (clamped SwiGLU).
TEST(FamilyConfig, SiluUnderEitherNameAndFixedActivationsAreServed) {
  for (const char* keys : {R"("num_hidden_layers": 2, "num_experts": 8, "num_experts_per_tok": 2,
                              "hidden_act": "swish")",
                           R"("num_hidden_layers": 2, "num_experts": 8, "num_experts_per_tok": 2,
                              "hidden_act": "silu")"}) {
    auto parsed = parseModelConfig(configJson("qwen3_moe", keys), "config.json");
    EXPECT_TRUE(parsed.isOk()) << parsed.error();
  }
  auto gptOss =
      parseModelConfig(configJson("gpt_oss", R"("num_hidden_layers": 2, "intermediate_size": 24,
                              "num_local_experts": 8, "num_experts_per_tok": 2,
                              "hidden_act": "gelu")"),
                       "config.json");
  EXPECT_TRUE(gptOss.isOk()) << gptOss.error();
}

// LagunaTopKRouter: σ of the (softcapped) logits, + bias for choice, w / Σw without eps or
// groups; the table's defaults from LagunaConfig.
TEST(FamilyConfig, LagunaReadsSoftcapScaleAndSharedWidth) {
  struct LagunaCase {
    const char* name;
    const char* keys;
    std::vector<uint32_t> moeLayers;
    float softcap, scale;
    uint32_t shared;
  };
  const std::vector<LagunaCase> cases = {
      {"defaults", R"("num_hidden_layers": 3)", {1, 2}, 0.0f, 1.0f, 512},
      {"explicit",
       R"("num_hidden_layers": 2, "mlp_layer_types": ["sparse", "dense"],
          "shared_expert_intermediate_size": 0, "moe_routed_scaling_factor": 2.0,
          "moe_router_logit_softcapping": 30.0)",
       {0},
       30.0f,
       2.0f,
       0},
      {"null softcap",
       R"("num_hidden_layers": 2, "moe_router_logit_softcapping": null)",
       {1},
       0.0f,
       1.0f,
       512},
  };
  for (const LagunaCase& c : cases) {
    SCOPED_TRACE(c.name);
    auto parsed = parseModelConfig(
        configJson("laguna",
                   std::string(R"("num_experts": 8, "num_experts_per_tok": 2, )") + c.keys),
        "config.json");
    ASSERT_TRUE(parsed.isOk()) << parsed.error();
    const ModelConfig& m = parsed.value();
    EXPECT_EQ(m.familyName, "Laguna");
    EXPECT_EQ(m.moeLayers, c.moeLayers);
    EXPECT_EQ(m.routing.scoring, kSigmoid);
    EXPECT_TRUE(m.routing.choiceBias);
    EXPECT_EQ(m.routing.groups, RoutingRecipe::Groups::kNone);
    EXPECT_EQ(m.routing.normalize, kSum);
    EXPECT_EQ(m.routing.normEps, 0.0f);
    EXPECT_EQ(m.routing.logitSoftcap, c.softcap);
    EXPECT_FLOAT_EQ(m.routing.scale, c.scale);
    EXPECT_EQ(m.sharedIntermediateSize, c.shared);
    EXPECT_FALSE(m.sharedExpertGated);
  }
}

// Every layer dense is no MoE model: refused, not served empty.
TEST(FamilyConfig, AllDenseLayerTypesAreRefused) {
  for (const char* type :
       {"deepseek_v32", "glm_moe_dsa", "exaone_moe", "kimi_linear", "mellum", "mimo_v2_flash"}) {
    SCOPED_TRACE(type);
    const std::string experts = std::string(type) == "kimi_linear"
                                    ? R"("num_experts": 8, "num_experts_per_token": 2)"
                                    : R"("num_experts": 8, "num_local_experts": 8,
                                         "n_routed_experts": 8, "num_experts_per_tok": 2)";
    auto parsed =
        parseModelConfig(configJson(type, R"("num_hidden_layers": 2, "n_group": 1, "topk_group": 1,
                            "mlp_layer_types": ["dense", "dense"], )" +
                                              experts),
                         "config.json");
    ASSERT_FALSE(parsed.isOk());
    EXPECT_NE(parsed.error().find("no MoE layers"), std::string::npos) << parsed.error();
  }
}

}  // namespace
// Vision-language wrappers (model_families.h WrapperSpec): the nested text config is read through
// the text model's row; the wrapper's model_type is kept as wrapperType.
struct WrapperCase {
  const char* config;  // the whole config.json
  const char *modelType, *wrapperType;
  uint32_t experts, topK;
  std::vector<uint32_t> moeLayers;
  uint32_t shared;
};

const std::vector<WrapperCase> kWrappers = {
    {R"({"model_type": "qwen3_5_moe", "vision_config": {"model_type": "qwen3_5_moe_vision"},
         "text_config": {"model_type": "qwen3_5_moe_text", "hidden_size": 64,
           "moe_intermediate_size": 24, "num_hidden_layers": 2, "num_experts": 8,
           "num_experts_per_tok": 2}})",
     "qwen3_5_moe_text",
     "qwen3_5_moe",
     8,
     2,
     {0, 1},
     512},
    {R"({"model_type": "qwen3_vl_moe", "text_config": {"model_type": "qwen3_vl_moe_text",
           "hidden_size": 64, "moe_intermediate_size": 24, "num_hidden_layers": 3,
           "num_experts": 4, "num_experts_per_tok": 2, "mlp_only_layers": [1]}})",
     "qwen3_vl_moe_text",
     "qwen3_vl_moe",
     4,
     2,
     {0, 2},
     0},
    {R"({"model_type": "glm4v_moe", "text_config": {"model_type": "glm4v_moe_text",
           "hidden_size": 64, "moe_intermediate_size": 24, "num_hidden_layers": 3,
           "n_routed_experts": 8, "num_experts_per_tok": 2}})",
     "glm4v_moe_text",
     "glm4v_moe",
     8,
     2,
     {1, 2},
     24},
    {R"({"model_type": "qwen3_omni_moe", "enable_audio_output": false, "thinker_config": {
           "text_config": {"model_type": "qwen3_omni_moe_text", "hidden_size": 64,
           "moe_intermediate_size": 24, "num_hidden_layers": 2, "num_experts": 8,
           "num_experts_per_tok": 2}}})",
     "qwen3_omni_moe_text",
     "qwen3_omni_moe",
     8,
     2,
     {0, 1},
     0},
    // A text-only checkpoint has no wrapper.
    {R"({"model_type": "qwen3_5_moe_text", "hidden_size": 64, "moe_intermediate_size": 24,
         "num_hidden_layers": 1, "num_experts": 8, "num_experts_per_tok": 2})",
     "qwen3_5_moe_text",
     "",
     8,
     2,
     {0},
     512},
};

TEST(FamilyConfig, WrappersReadTheNestedTextConfig) {
  for (const WrapperCase& w : kWrappers) {
    SCOPED_TRACE(w.config);
    auto parsed = parseModelConfig(w.config, "config.json");
    ASSERT_TRUE(parsed.isOk()) << parsed.error();
    const ModelConfig& c = parsed.value();
    EXPECT_EQ(c.modelType, w.modelType);
    EXPECT_EQ(c.wrapperType, w.wrapperType);
    EXPECT_EQ(c.numExperts, w.experts);
    EXPECT_EQ(c.topK, w.topK);
    EXPECT_EQ(c.moeLayers, w.moeLayers);
    EXPECT_EQ(c.sharedIntermediateSize, w.shared);
  }
}

const std::vector<std::pair<const char*, const char*>> kWrapperErrors = {
    {R"({"model_type": "qwen3_vl_moe", "vision_config": {}})",
     "key 'text_config' missing (the text model's config of this Qwen3-VL-MoE model, model_type "
     "'qwen3_vl_moe')"},
    {R"({"model_type": "qwen3_omni_moe", "thinker_config": {"text_config": 3}})",
     "thinker_config: key 'text_config' must be a JSON object (the text model's config of this "
     "Qwen3-Omni-MoE model, model_type 'qwen3_omni_moe')"},
    {R"({"model_type": "glm4v_moe", "text_config": {"hidden_size": 64}})",
     "text_config: key 'model_type' missing or not a string (the text model of model_type "
     "'glm4v_moe')"},
    {R"({"model_type": "qwen3_vl_moe", "text_config": {"model_type": "qwen3_vl_moe_text",
         "hidden_size": 64, "moe_intermediate_size": 24, "num_hidden_layers": 2,
         "num_experts_per_tok": 2}})",
     "text_config: key 'num_local_experts' missing (Qwen3-VL-MoE; also read as 'num_experts')"},
};

TEST(FamilyConfig, WrapperErrorsNameTheNestedKey) {
  for (const auto& [config, error] : kWrapperErrors) {
    SCOPED_TRACE(config);
    auto parsed = parseModelConfig(config, "config.json");
    ASSERT_FALSE(parsed.isOk());
    EXPECT_EQ(parsed.error(), std::string("config.json: ") + error);
  }
}

// An unknown wrapper, or a wrapper whose text model the table does not serve, is refused with
// the supported model_types and wrappers listed.
TEST(FamilyConfig, UnknownWrappersAndTextModelsAreRefused) {
  for (const char* config :
       {R"({"model_type": "llava_next_moe", "text_config": {"model_type": "qwen3_moe"}})",
        R"({"model_type": "qwen3_vl_moe", "text_config": {"model_type": "qwen3_vl_text"}})"}) {
    SCOPED_TRACE(config);
    auto parsed = parseModelConfig(config, "config.json");
    ASSERT_FALSE(parsed.isOk());
    EXPECT_NE(parsed.error().find("is not supported (supported: mixtral, "), std::string::npos)
        << parsed.error();
    EXPECT_NE(parsed.error().find("vision-language wrappers: qwen3_5_moe, qwen3_vl_moe"),
              std::string::npos)
        << parsed.error();
  }
}

}  // namespace moe
