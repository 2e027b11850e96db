#!/usr/bin/env python3
"""Writes the project-owned MoE family reference fixtures (tests/fixtures/families/, issue #13).

For each MoE family in the installed transformers: a tiny whole model (hidden 64, vocab 64, 8
routed experts of intermediate 24, so that [E, 2I, H] and [E, H, 2I] differ) with fixed-seed random weights, written by transformers' own
`save_pretrained`, and the reference that transformers' own MoE block computes on it: hooks on
the block capture its input and output, hooks on its router capture the chosen experts and their
weights. The C++ parity tests read these files without torch. See
tests/fixtures/families/README.md for the format and each family's routing recipe.

Usage (with the venv that scripts/install-deps.sh makes):
  ~/.cache/moe-cluster/venv/bin/python tools/make_family_fixtures.py            # rewrite all
  ~/.cache/moe-cluster/venv/bin/python tools/make_family_fixtures.py --only mixtral,olmoe
  ~/.cache/moe-cluster/venv/bin/python tools/make_family_fixtures.py --check    # CI
  ... --tf4-path /tmp/tf4   # also write config.transformers4.json with transformers 4.x there
--check regenerates everything into a temporary directory and exits 1 naming the fixture, tensor
and max difference if a reference or a weight moved beyond 1e-6 relative, or a fixture is
missing; exit 77 (ctest's skip code) when torch or transformers cannot be imported.
"""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

SKIP = 77
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT_DEFAULT = os.path.join(ROOT, "tests", "fixtures", "families")
T = 24  # tokens per reference run (batch 1)
REL_TOL = 1e-6

# Attention / embedding shape every family shares; family rows add their MoE keys.
COMMON = dict(vocab_size=64, hidden_size=64, num_attention_heads=2, num_key_value_heads=2,
              head_dim=16, max_position_embeddings=128, tie_word_embeddings=False)
MLA = dict(kv_lora_rank=16, q_lora_rank=32, qk_nope_head_dim=16, qk_rope_head_dim=8, v_head_dim=16,
           head_dim=8)


def fam(model_type, cfg, block, router, *, num_experts=8, top_k=2, layouts=None, notes="",
        v4=None, v4_model_type="", common=True, extra_hooks=None, drop=(), fused=True, v4_extra=None,
        seed_index=None, vlm=False, forward="", base_model=False):
    """A family row. cfg: config kwargs (v5 names); block: MoE block class name(s); router: the
    block's attribute that routes; layouts: None = decide from what save_pretrained writes;
    v4: {v5 key: v4 key} renames (None value = drop the key) for the transformers 4.x config;
    extra_hooks: {reference tensor suffix: attribute of the decoder layer} captured as well;
    seed_index: the row's seed slot (default: its position in FAMILIES), so rows added in parallel
    keep their weights whatever order they are merged in; vlm: the whole vision-language model
    (AutoModelForImageTextToText, or the class named; cfg holds text_config and a minimal
    vision_config), as the hub ships it, whose text tower's MoE blocks are captured; forward: the
    submodule run for the reference ("" = the model; the omni wrapper has no forward of its own);
    base_model: the text model has no ForCausalLM class (only the VLM has a head), so the fixture
    is its AutoModel (tensors under `layers.`, no `model.` prefix)."""
    c = dict(COMMON) if common else {}
    for k in drop:
        c.pop(k, None)
    c.update(cfg)
    return dict(model_type=model_type, cfg=c, block=block if isinstance(block, (list, tuple)) else [block],
                router=router, num_experts=num_experts, top_k=top_k, layouts=layouts, notes=notes,
                v4=v4 or {}, v4_model_type=model_type if v4_model_type == "" else v4_model_type,
                extra_hooks=extra_hooks or {}, fused=fused, v4_extra=v4_extra or {},
                seed_index=seed_index, vlm=vlm, forward=forward, base_model=base_model)


# The minimal Qwen vision tower of the VLM rows (one block of width 16).
VISION_QWEN = dict(depth=1, hidden_size=16, intermediate_size=16, num_heads=1, out_hidden_size=64,
                   patch_size=4, temporal_patch_size=1, spatial_merge_size=1, num_position_embeddings=16)


# Priority order (issue #13 part 3), then the other FFN-expert MoE families.
FAMILIES = [
    fam("mixtral", dict(num_hidden_layers=2, intermediate_size=24, num_local_experts=8,
                        num_experts_per_tok=2), "MixtralSparseMoeBlock", "gate"),
    fam("qwen2_moe", dict(num_hidden_layers=2, intermediate_size=48, moe_intermediate_size=24,
                          shared_expert_intermediate_size=32, num_experts=8, num_experts_per_tok=2,
                          decoder_sparse_step=1, mlp_only_layers=[0], norm_topk_prob=False),
        "Qwen2MoeSparseMoeBlock", "gate"),
    fam("qwen3_moe", dict(num_hidden_layers=2, intermediate_size=48, moe_intermediate_size=24,
                          num_local_experts=8, num_experts_per_tok=2, decoder_sparse_step=1,
                          mlp_only_layers=[0], norm_topk_prob=True),
        "Qwen3MoeSparseMoeBlock", "gate", v4={"num_local_experts": "num_experts"}),
    fam("olmoe", dict(num_hidden_layers=2, intermediate_size=24, num_experts=8, num_experts_per_tok=2,
                      norm_topk_prob=False), "OlmoeSparseMoeBlock", "gate", drop=("head_dim",)),
    fam("deepseek_v2", dict(MLA, num_hidden_layers=2, intermediate_size=48, moe_intermediate_size=24,
                            n_routed_experts=8, num_experts_per_tok=2, n_shared_experts=1,
                            first_k_dense_replace=1, topk_method="group_limited_greedy", n_group=4,
                            topk_group=2, routed_scaling_factor=1.5),
        "DeepseekV2Moe", "gate"),
    fam("deepseek_v3", dict(MLA, num_hidden_layers=2, intermediate_size=48, moe_intermediate_size=24,
                            n_routed_experts=8, num_experts_per_tok=2, n_shared_experts=1,
                            first_k_dense_replace=1, n_group=4, topk_group=2, norm_topk_prob=True,
                            routed_scaling_factor=2.5),
        "DeepseekV3MoE", "gate"),
    fam("glm4_moe", dict(num_hidden_layers=2, intermediate_size=48, moe_intermediate_size=24,
                         n_routed_experts=8, num_experts_per_tok=2, n_shared_experts=1,
                         first_k_dense_replace=1, n_group=1, topk_group=1, norm_topk_prob=True,
                         routed_scaling_factor=2.5),
        "Glm4MoeMoE", "gate"),
    fam("dots1", dict(num_hidden_layers=2, intermediate_size=48, moe_intermediate_size=24,
                      n_routed_experts=8, num_experts_per_tok=2, n_shared_experts=1,
                      first_k_dense_replace=1, n_group=1, topk_group=1, norm_topk_prob=True,
                      routed_scaling_factor=2.5),
        "Dots1MoE", "gate"),
    fam("qwen3_next", dict(num_hidden_layers=2, intermediate_size=48, moe_intermediate_size=24,
                           shared_expert_intermediate_size=32, num_experts=8, num_experts_per_tok=2,
                           decoder_sparse_step=1, mlp_only_layers=[0], norm_topk_prob=True,
                           layer_types=["linear_attention", "full_attention"],
                           linear_key_head_dim=16, linear_value_head_dim=16, linear_num_key_heads=2,
                           linear_num_value_heads=2),
        "Qwen3NextSparseMoeBlock", "gate",
        notes="layer 0 is a gated-delta-net linear-attention layer (torch fallback, no fla kernels)"),
    fam("minimax", dict(num_hidden_layers=2, intermediate_size=24, num_local_experts=8,
                        num_experts_per_tok=2, layer_types=["linear_attention", "full_attention"],
                        block_size=8),
        "MiniMaxSparseMoeBlock", "gate", notes="layer 0 is a lightning (linear) attention layer"),
    fam("hunyuan_v1_moe", dict(num_hidden_layers=2, intermediate_size=24, num_experts=8, moe_topk=2),
        "HunYuanMoEV1Moe", "gate"),
    fam("ernie4_5_moe", dict(num_hidden_layers=2, intermediate_size=48, moe_intermediate_size=24,
                             moe_num_experts=8, moe_k=2, moe_num_shared_experts=1,
                             moe_layer_start_index=1, moe_layer_end_index=1, moe_layer_interval=1),
        "Ernie4_5_MoeSparseMoeBlock", "gate"),
    fam("jamba", dict(num_hidden_layers=2, intermediate_size=24, num_experts=8, num_experts_per_tok=2,
                      expert_layer_period=2, expert_layer_offset=1, attn_layer_period=2,
                      attn_layer_offset=0, use_mamba_kernels=False, mamba_d_state=8, mamba_dt_rank=8,
                      mamba_expand=2),
        "JambaSparseMoeBlock", "router", drop=("head_dim",),
        notes="layer 0: attention + dense MLP; layer 1: mamba mixer (torch path, use_mamba_kernels=False) + MoE"),
    fam("granitemoe", dict(num_hidden_layers=2, intermediate_size=24, num_local_experts=8,
                           num_experts_per_tok=2), "GraniteMoeMoE", "router", drop=("head_dim",)),
    fam("granitemoeshared", dict(num_hidden_layers=2, intermediate_size=24, num_local_experts=8,
                                 num_experts_per_tok=2, shared_intermediate_size=32),
        "GraniteMoeSharedMoE", "router", drop=("head_dim",), extra_hooks={"shared_output": "shared_mlp"},
        notes="the shared MLP sits in the decoder layer beside the MoE block (layer adds both): "
              "layers.L.output is the routed block only, layers.L.shared_output the shared MLP on the same input"),
    fam("dbrx", dict(d_model=64, n_heads=2, n_layers=2, max_seq_len=128, vocab_size=64,
                     attn_config=dict(kv_n_heads=2, rope_theta=10000.0, clip_qkv=8.0),
                     ffn_config=dict(ffn_hidden_size=24, moe_num_experts=8, moe_top_k=2,
                                     moe_normalize_expert_weights=1.0)),
        "DbrxFFN", "experts", common=False,
        notes="DbrxRouter returns logits only; expert ids and weights are captured as the arguments the "
              "block passes to DbrxExperts"),
    fam("llama4_text", dict(num_hidden_layers=2, intermediate_size=24, intermediate_size_mlp=48,
                            num_local_experts=8, num_experts_per_tok=1, interleave_moe_layer_step=2,
                            attention_chunk_size=8, no_rope_layer_interval=2),
        "Llama4TextMoe", "router", top_k=1,
        notes="Llama4ForCausalLM text model (model_type llama4_text); layer 0 dense (interleave step 2) "
              "with chunked attention (chunk 8); Llama4Router returns dense sigmoid scores [T,E], expert ids "
              "are their non-zero entries"),
    fam("gpt_oss", dict(num_hidden_layers=2, intermediate_size=24, num_local_experts=8,
                        num_experts_per_tok=2, layer_types=["sliding_attention", "full_attention"],
                        sliding_window=8), "GptOssMLP", "router"),
    fam("phimoe", dict(num_hidden_layers=2, intermediate_size=24, num_local_experts=8,
                       num_experts_per_tok=2, router_jitter_noise=0.3), "PhimoeSparseMoeBlock", "router",
        notes="router_jitter_noise 0.3 (Phi-3.5-MoE: 0.01) so sparsemixer's eval-mode threshold "
              "(relative gap > 2*eps is masked) keeps several logits in some softmaxes and not in others"),
    # --- the other FFN-expert MoE families of transformers 5.24 ---
    fam("minimax_m2", dict(num_hidden_layers=2, intermediate_size=24, num_local_experts=8,
                           num_experts_per_tok=2), "MiniMaxM2SparseMoeBlock", "gate"),
    fam("glm4_moe_lite", dict(MLA, num_hidden_layers=2, intermediate_size=48, moe_intermediate_size=24,
                              n_routed_experts=8, num_experts_per_tok=2, n_shared_experts=1,
                              mlp_layer_types=["dense", "sparse"], n_group=1, topk_group=1,
                              norm_topk_prob=True, routed_scaling_factor=1.8),
        "Glm4MoeLiteMoE", "gate"),
    fam("qwen3_5_moe_text", dict(num_hidden_layers=2, moe_intermediate_size=24,
                                 shared_expert_intermediate_size=32, num_experts=8, num_experts_per_tok=2,
                                 layer_types=["linear_attention", "full_attention"],
                                 linear_key_head_dim=16, linear_value_head_dim=16, linear_num_key_heads=2,
                                 linear_num_value_heads=2),
        "Qwen3_5MoeSparseMoeBlock", "gate",
        notes="text model of Qwen3.5-MoE (Qwen3_5MoeForCausalLM); layer 0 is gated-delta-net linear attention"),
    fam("flex_olmo", dict(num_hidden_layers=2, intermediate_size=24, num_experts=8, num_experts_per_tok=2, pad_token_id=1,
                          norm_topk_prob=False), "FlexOlmoSparseMoeBlock", "gate", drop=("head_dim",)),
    fam("lfm2_moe", dict(num_hidden_layers=2, intermediate_size=48, moe_intermediate_size=24,
                         num_experts=8, num_experts_per_tok=2, num_dense_layers=1, use_expert_bias=True,
                         routed_scaling_factor=1.5, norm_topk_prob=True,
                         layer_types=["conv", "full_attention"]),
        "Lfm2MoeSparseMoeBlock", "gate", drop=("head_dim",), notes="layer 0 is a short-conv layer"),
    fam("exaone_moe", dict(num_hidden_layers=2, intermediate_size=48, moe_intermediate_size=24,
                           num_experts=8, num_experts_per_tok=2, num_shared_experts=1,
                           first_k_dense_replace=1, mlp_layer_types=["dense", "sparse"], n_group=1,
                           topk_group=1, norm_topk_prob=True, routed_scaling_factor=2.5,
                           layer_types=["sliding_attention", "full_attention"], sliding_window=8),
        "ExaoneMoeSparseMoEBlock", "gate"),
    fam("afmoe", dict(num_hidden_layers=2, intermediate_size=48, moe_intermediate_size=24, num_experts=8,
                      num_experts_per_tok=2, num_shared_experts=1, num_dense_layers=1, route_scale=1.5,
                      layer_types=["sliding_attention", "full_attention"], sliding_window=8),
        "AfmoeSparseMoeBlock", "router"),
    fam("longcat_flash", dict(MLA, num_layers=1, ffn_hidden_size=48, expert_ffn_hidden_size=24,
                              n_routed_experts=8, zero_expert_num=2, moe_topk=2,
                              routed_scaling_factor=1.5),
        "LongcatFlashMoE", "router", v4_extra=dict(num_hidden_layers=2),
        notes="LongCat-Flash: one decoder layer holds two attention+MLP sublayers and one MoE (num_layers 1); "
              "8 FFN experts + 2 zero-compute (identity) experts: ids 8, 9 return the input times their weight"),
    fam("deepseek_v32", dict(MLA, num_hidden_layers=2, intermediate_size=48, moe_intermediate_size=24,
                             n_routed_experts=8, num_experts_per_tok=2, n_shared_experts=1,
                             first_k_dense_replace=1, mlp_layer_types=["dense", "sparse"], n_group=4,
                             topk_group=2, norm_topk_prob=True, routed_scaling_factor=2.5,
                             index_topk=8, index_head_dim=16, index_n_heads=2),
        "DeepseekV32MoE", "gate", notes="DeepSeek-V3.2 sparse (indexed) attention with index_topk 8"),
    fam("sarvam_moe", dict(num_hidden_layers=2, intermediate_size=48, moe_intermediate_size=24,
                           n_routed_experts=8, num_experts_per_tok=2, n_shared_experts=1,
                           first_k_dense_replace=1, n_group=1, topk_group=1, norm_topk_prob=True,
                           routed_scaling_factor=2.5),
        "Glm4MoeMoE", "gate", fused=False,
        notes="Sarvam-30B: its own config class, served by Glm4MoeForCausalLM (the glm4_moe block)"),
    fam("sarvam_mla", dict(MLA, num_hidden_layers=2, intermediate_size=48, moe_intermediate_size=24,
                           n_routed_experts=8, num_experts_per_tok=2, n_shared_experts=1,
                           first_k_dense_replace=1, n_group=1, topk_group=1, norm_topk_prob=True,
                           routed_scaling_factor=2.5, q_lora_rank=None),
        "DeepseekV3MoE", "gate", fused=False,
        notes="Sarvam-105B: its own config class, served by DeepseekV3ForCausalLM (the deepseek_v3 block)"),
    # --- later additions: f32 (as saved) + bf16 only where the fused layout is an already-covered pattern
    fam("nemotron_h", dict(num_hidden_layers=2, layer_types=["attention", "moe"], intermediate_size=48,
                           moe_intermediate_size=24, moe_shared_expert_intermediate_size=32,
                           n_routed_experts=8, num_experts_per_tok=2, n_group=1, topk_group=1,
                           norm_topk_prob=True, routed_scaling_factor=2.5, use_mamba_kernels=False,
                           mamba_num_heads=4, mamba_head_dim=16, n_groups=1, ssm_state_size=8,
                           chunk_size=8),
        "NemotronHMoE", "gate", notes="layer 0 attention, layer 1 MoE (layers_block_type)"),
    fam("granitemoehybrid", dict(num_hidden_layers=2, intermediate_size=24, num_local_experts=8,
                                 num_experts_per_tok=2, shared_intermediate_size=32,
                                 layer_types=["mamba", "attention"], mamba_n_heads=4, mamba_d_head=32,
                                 mamba_d_state=8, mamba_chunk_size=8, mamba_n_groups=1),
        "GraniteMoeHybridMoE", "router", drop=("head_dim",), fused=False,
        extra_hooks={"shared_output": "shared_mlp"},
        notes="Granite 4.0-H: layer 0 mamba2 (torch path), layer 1 attention; shared MLP beside the block as in "
              "granitemoeshared (layers.L.shared_output)"),
    fam("cohere2_moe", dict(num_hidden_layers=2, intermediate_size=24, num_experts=8, num_experts_per_tok=2,
                            num_shared_experts=1, shared_expert_combination_strategy="average",
                            layer_types=["sliding_attention", "full_attention"], sliding_window=8),
        "Cohere2MoeSparseMoeBlock", "gate", fused=False),
    fam("glm_moe_dsa", dict(MLA, num_hidden_layers=2, intermediate_size=48, moe_intermediate_size=24,
                            n_routed_experts=8, num_experts_per_tok=2, n_shared_experts=1,
                            mlp_layer_types=["dense", "sparse"], n_group=1, topk_group=1,
                            norm_topk_prob=True, routed_scaling_factor=2.5, index_topk=8,
                            index_head_dim=16, index_n_heads=2),
        "GlmMoeDsaMoE", "gate", fused=False),
    fam("solar_open", dict(num_hidden_layers=2, moe_intermediate_size=24, n_routed_experts=8,
                           num_experts_per_tok=2, n_shared_experts=1, n_group=1, topk_group=1,
                           norm_topk_prob=True, routed_scaling_factor=1.5),
        "SolarOpenMoE", "gate", fused=False),
    fam("mellum", dict(num_hidden_layers=2, intermediate_size=48, moe_intermediate_size=24,
                       num_local_experts=8, num_experts_per_tok=2, norm_topk_prob=True,
                       mlp_layer_types=["dense", "sparse"], layer_types=["full_attention", "full_attention"]),
        "MellumSparseMoeBlock", "gate", fused=False),
    fam("hy_v3", dict(num_hidden_layers=2, intermediate_size=48, moe_intermediate_size=24, num_experts=8,
                      num_experts_per_tok=2, num_shared_experts=1, router_scaling_factor=2.0,
                      mlp_layer_types=["dense", "sparse"]),
        "HYV3MoE", "gate", fused=False),
    fam("mimo_v2_flash", dict(num_hidden_layers=2, intermediate_size=48, moe_intermediate_size=24,
                              n_routed_experts=8, num_experts_per_tok=2, n_group=4, topk_group=2,
                              norm_topk_prob=True, routed_scaling_factor=1.5,
                              mlp_layer_types=["dense", "sparse"],
                              layer_types=["full_attention", "sliding_attention"], sliding_window=8,
                              v_head_dim=16, num_key_value_heads=1),
        "MiMoV2FlashMoE", "gate", fused=False),
    fam("kimi_linear", dict(MLA, num_hidden_layers=2, intermediate_size=48, moe_intermediate_size=24,
                            num_experts=8, num_experts_per_token=2, num_shared_experts=1,
                            num_expert_group=1, topk_group=1, moe_renormalize=True,
                            routed_scaling_factor=2.0, mlp_layer_types=["dense", "sparse"],
                            layer_types=["full_attention", "full_attention"], q_lora_rank=None, pad_token_id=1),
        "KimiLinearMoE", "gate", fused=False,
        notes="both layers full (MLA) attention: the KDA linear-attention layers need the fla hub kernel"),
    # Vision-language MoE models saved whole (issue #13): the text tower under
    # model.language_model.layers., a one-block vision tower of width 16 to keep the files small;
    # one f32 fixture (the hub layout) + one bf16 each.
    fam("qwen3_5_moe", dict(
            text_config=dict(COMMON, num_hidden_layers=2, moe_intermediate_size=24,
                             shared_expert_intermediate_size=32, num_experts=8, num_experts_per_tok=2,
                             layer_types=["linear_attention", "full_attention"], linear_key_head_dim=16,
                             linear_value_head_dim=16, linear_num_key_heads=2, linear_num_value_heads=2),
            vision_config=VISION_QWEN, tie_word_embeddings=False),
        "Qwen3_5MoeSparseMoeBlock", "gate", common=False, vlm=True, fused=False, seed_index=140,
        notes="whole VLM (Qwen3_5MoeForConditionalGeneration): text tower under "
              "model.language_model.layers.; layer 0 is gated-delta-net linear attention"),
    fam("qwen3_vl_moe", dict(
            text_config=dict(COMMON, num_hidden_layers=2, intermediate_size=48, moe_intermediate_size=24,
                             num_experts=8, num_experts_per_tok=2, decoder_sparse_step=1, mlp_only_layers=[0]),
            vision_config=dict(VISION_QWEN, deepstack_visual_indexes=[]), tie_word_embeddings=False),
        "Qwen3VLMoeTextSparseMoeBlock", "gate", common=False, vlm=True, seed_index=141,
        notes="whole VLM (Qwen3VLMoeForConditionalGeneration): text tower under "
              "model.language_model.layers.; layer 0 dense (mlp_only_layers)"),
    fam("glm4v_moe", dict(
            text_config=dict(COMMON, num_hidden_layers=2, intermediate_size=48, moe_intermediate_size=24,
                             n_routed_experts=8, num_experts_per_tok=2, n_shared_experts=1,
                             first_k_dense_replace=1, n_group=2, topk_group=1, norm_topk_prob=True,
                             routed_scaling_factor=1.5,
                             rope_parameters=dict(rope_type="default", rope_theta=10000.0,
                                                  partial_rotary_factor=0.5, mrope_section=[2, 1, 1])),
            vision_config=dict(depth=1, hidden_size=16, intermediate_size=16, num_heads=1, out_hidden_size=64,
                               patch_size=4, temporal_patch_size=1, spatial_merge_size=1, image_size=8),
            tie_word_embeddings=False),
        "Glm4vMoeTextMoE", "gate", common=False, vlm=True, fused=False, seed_index=142,
        notes="whole VLM (Glm4vMoeForConditionalGeneration): text tower under "
              "model.language_model.layers.; layer 0 dense (first_k_dense_replace)"),
    fam("qwen3_omni_moe", dict(
            enable_audio_output=False,
            thinker_config=dict(
                text_config=dict(COMMON, num_hidden_layers=2, intermediate_size=48, moe_intermediate_size=24,
                                 num_experts=8, num_experts_per_tok=2, norm_topk_prob=False,
                                 rope_parameters=dict(rope_type="default", rope_theta=10000.0,
                                                      mrope_section=[2, 3, 3])),
                vision_config=dict(VISION_QWEN, deepstack_visual_indexes=[]),
                audio_config=dict(num_mel_bins=8, encoder_layers=1, encoder_attention_heads=1,
                                  encoder_ffn_dim=16, d_model=16, output_dim=64, downsample_hidden_size=8,
                                  max_source_positions=32))),
        "Qwen3OmniMoeThinkerTextSparseMoeBlock", "gate", common=False, fused=False, seed_index=143,
        vlm="Qwen3OmniMoeForConditionalGeneration", forward="thinker",
        notes="whole omni model without the talker (enable_audio_output false; "
              "Qwen3OmniMoeForConditionalGeneration): thinker text tower under thinker.model.layers., "
              "tiny vision and audio towers"),
    fam("granitemoe_swa", dict(num_hidden_layers=2, intermediate_size=24, num_local_experts=8,
                               num_experts_per_tok=2, shared_intermediate_size=32,
                               layer_types=["full_attention", "sliding_attention"], sliding_window=8),
        "GraniteMoeSWAMoE", "router", drop=("head_dim",), extra_hooks={"shared_output": "shared_mlp"},
        seed_index=110,
        notes="Granite SWA: layer 1 sliding-window attention with sinks; saved as the in-memory "
              "experts.gate_up_proj/down_proj (no conversion mapping); shared MLP beside the block as in "
              "granitemoeshared (layers.L.shared_output)"),
    fam("bailing_hybrid", dict(MLA, num_hidden_layers=2, intermediate_size=48, moe_intermediate_size=24,
                               num_local_experts=8, num_experts_per_tok=2, n_shared_experts=1,
                               mlp_layer_types=["dense", "sparse"], n_group=4, topk_group=2,
                               norm_topk_prob=True, routed_scaling_factor=2.5,
                               layer_types=["full_attention", "full_attention"], pad_token_id=1,
                               eos_token_id=2),
        "BailingHybridMoE", "gate", fused=False, seed_index=111,
        notes="Ling hybrid: both layers full (MLA) attention here (its linear-attention layers are not "
              "the MoE block's part); layer 0 dense, layer 1 MoE (mlp_layer_types)"),
    fam("laguna", dict(num_hidden_layers=2, intermediate_size=48, moe_intermediate_size=24, num_experts=8,
                       num_experts_per_tok=2, shared_expert_intermediate_size=32,
                       moe_routed_scaling_factor=1.5, moe_router_logit_softcapping=1.5,
                       layer_types=["full_attention", "sliding_attention"], sliding_window=8),
        "LagunaSparseMoeBlock", "gate", fused=False, seed_index=112,
        notes="router logits softcapped (moe_router_logit_softcapping 1.5: tanh(s/1.5)*1.5, which "
              "bends logits of std ~2) before the sigmoid; layer 0 dense (mlp_layer_types default)"),
    fam("jetmoe", dict(num_hidden_layers=2, intermediate_size=24, num_local_experts=8, num_experts_per_tok=2,
                       kv_channels=16),
        "JetMoeMoE", "router", drop=("num_attention_heads", "head_dim"), fused=False, seed_index=113,
        notes="the MLP MoE (JetMoeMoE: Granite-style input_linear/output_linear experts, top-k of logits, "
              "softmax over k) adds a learned output bias mlp.bias [H] after the expert sum; attention is "
              "JetMoeMoA (a mixture of attention heads), not captured"),
    fam("aria_text", dict(num_hidden_layers=2, intermediate_size=24, moe_num_experts=8, moe_topk=2,
                          moe_num_shared_experts=2),
        "AriaTextMoELayer", "router", seed_index=130,
        notes="AriaTextForCausalLM (the text model of aria); every layer is MoE"),
    fam("axk1", dict(MLA, num_hidden_layers=2, intermediate_size=48, moe_intermediate_size=24,
                     n_routed_experts=8, num_experts_per_tok=2, n_shared_experts=1, n_group=4,
                     topk_group=2, norm_topk_prob=True, routed_scaling_factor=2.5,
                     mlp_layer_types=["dense", "sparse"]),
        "AXK1MoE", "gate", seed_index=131,
        notes="DeepSeek-V3's block + post_mlp_layernorm (RMSNorm) on the block's output"),
    fam("qwen4_exp_text", dict(num_hidden_layers=2, moe_intermediate_size=24,
                               shared_expert_intermediate_size=32, num_experts=8, num_experts_per_tok=2,
                               norm_topk_prob=False, layer_types=["linear_attention", "full_attention"],
                               linear_key_head_dim=16, linear_value_head_dim=16, linear_num_key_heads=2,
                               linear_num_value_heads=2, hc_count=2, hc_lowrank=8, indexer_n_heads=2,
                               indexer_kv_heads=1, indexer_head_dim=16, indexer_budget=8,
                               indexer_compress_ratio=2),
        "Qwen4ExpTextSparseMoeBlock", "gate", fused=False, seed_index=100,
        notes="text model of Qwen4-Exp (Qwen4ExpForCausalLM); layer 0 gated-delta-net linear attention, "
              "layer 1 indexed attention; hyper-connection streams around every block"),
    fam("mistral_large4_text", dict(MLA, num_hidden_layers=2, intermediate_size=48, moe_intermediate_size=24,
                                    n_routed_experts=8, num_experts_per_tok=2, n_shared_experts=1,
                                    first_k_dense_replace=1, n_group=4, topk_group=2,
                                    routed_scaling_factor=1.5, index_topk=8, index_head_dim=16,
                                    index_n_heads=2),
        "MistralLarge4TextMoE", "gate", fused=False, seed_index=101, base_model=True,
        notes="text model of Mistral-Large-4 (MistralLarge4TextModel: 5.24 has no text ForCausalLM); "
              "softmax group-limited routing (groups masked to 0.0), always renormalized"),
    fam("beam", dict(num_hidden_layers=2, intermediate_size=48, moe_intermediate_size=24, num_experts=8,
                     num_experts_per_tok=2, n_group=4, topk_group=2, norm_topk_prob=True,
                     routed_scaling_factor=1.5, mlp_layer_types=["dense", "sparse"],
                     layer_types=["sliding_attention", "full_attention"], sliding_window=8),
        "BeamMoE", "gate", seed_index=120),
    fam("lara_mini", dict(num_hidden_layers=2, moe_intermediate_size=24, shared_expert_intermediate_size=32,
                          num_experts=8, num_experts_per_tok=2, norm_topk_prob=True,
                          layer_types=["sliding_attention", "full_attention"], sliding_window=8),
        "LaraMiniSparseMoeBlock", "gate", seed_index=121,
        notes="both layers attention here (no gated-delta-net layer); every layer MoE"),
    fam("flint", dict(num_hidden_layers=2, intermediate_size=48, moe_intermediate_size=24,
                      shared_expert_intermediate_size=32, num_experts=8, num_experts_per_tok=2,
                      norm_topk_prob=True, decoder_sparse_step=1, mlp_only_layers=[0],
                      layer_types=["full_attention", "sliding_attention"], sliding_window=8),
        "FlintSparseMoeBlock", "gate", seed_index=122),
]
BY_NAME = {f["model_type"]: f for f in FAMILIES}
VLM_CLASSES = {f["model_type"]: f["vlm"] if isinstance(f["vlm"], str) else "AutoModelForImageTextToText"
               for f in FAMILIES if f["vlm"]}


# ---------------------------------------------------------------------------------------------
def fail_skip(msg):
    print(f"SKIP: {msg}")
    sys.exit(SKIP)


def import_stack():
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
        import safetensors  # noqa: F401
    except Exception as e:  # any import failure means "no torch stack here"
        fail_skip(f"torch/transformers/safetensors not importable ({e}); "
                  "run scripts/install-deps.sh for the venv with torch")


def randomize(model, torch, seed):
    """Fixed-seed weights with spread: router logits of std ~2 so top-k choices are not near ties,
    norms around 1, biases and choice biases small but non-zero."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        named = list(model.named_parameters()) + [
            (n, b) for n, b in model.named_buffers() if n.endswith(("e_score_correction_bias", "expert_bias"))]
        for name, p in sorted(named, key=lambda x: x[0]):
            if not p.dtype.is_floating_point:
                continue
            leaf = name.split(".")[-1]
            r = torch.randn(p.shape, generator=g, dtype=torch.float32)
            if "mamba" in name or "linear_attn" in name or leaf in ("A_log", "D", "dt_bias"):
                continue  # keep the recurrent layers' own init (stable decay rates)
            if leaf in ("e_score_correction_bias", "expert_bias"):
                v = 0.05 * r
            elif "norm" in name and p.ndim == 1:
                v = 1.0 + 0.1 * r
            elif p.ndim == 1:
                v = 0.1 * r
            elif "embed" in name or "wte" in name:
                v = r
            elif re.search(r"(\.gate|\.router|\.wg)(\.layer)?(\.weight)?$", name) or leaf == "router":
                v = r * (2.0 / 8.0)  # [E, H] with unit-scale inputs -> logits std ~2
            else:
                fan_in = p.shape[-1] if p.ndim == 2 else min(p.shape[-1], p.shape[-2])
                v = r / (fan_in ** 0.5)
            p.copy_(v.to(p.dtype))


def auto_class(f):
    import transformers
    return transformers.AutoModel if f and f.get("base_model") else transformers.AutoModelForCausalLM


def model_class(model_type, f):
    """The class a fixture is built and reloaded with: the VLM's for wrapper rows, else the text
    model's (AutoModel for base_model rows)."""
    import transformers
    if model_type in VLM_CLASSES:
        return getattr(transformers, VLM_CLASSES[model_type])
    return auto_class(f)


def build_model(f, torch, seed):
    import transformers
    cfg = transformers.AutoConfig.for_model(f["model_type"], **f["cfg"])
    torch.manual_seed(seed)
    kw = dict(attn_implementation="eager", experts_implementation="eager")
    cls = model_class(f["model_type"], f)
    model = cls.from_config(cfg, **kw) if cls.__name__.startswith("Auto") else cls._from_config(cfg, **kw)
    randomize(model, torch, seed)
    return model.eval()


def load_model(path, torch, dtype=None, f=None):
    kw = dict(attn_implementation="eager", experts_implementation="eager")
    if dtype is not None:
        kw["dtype"] = dtype
    with open(os.path.join(path, "config.json")) as fh:
        mt = json.load(fh).get("model_type")
    return model_class(mt, f).from_pretrained(path, **kw).eval()


def layer_of(name):
    m = re.search(r"(?:layers|blocks)\.(\d+)\.", name + ".")
    return int(m.group(1)) if m else None


def capture(model, f, torch, input_ids):
    """Runs the model once; returns {tensor name: F32 tensor} captured from the family's modules."""
    blocks = [(n, m) for n, m in model.named_modules() if type(m).__name__ in f["block"]]
    if not blocks:
        raise RuntimeError(f"{f['model_type']}: no module of class {f['block']}")
    out, handles, from_experts = {}, [], {}

    def first(x):
        return x[0] if isinstance(x, (tuple, list)) else x

    for name, block in blocks:
        L = layer_of(name)

        def pre(mod, args, kwargs, L=L):
            h = args[0] if args else next(iter(kwargs.values()))
            out[f"layers.{L}.input"] = h.detach().reshape(-1, h.shape[-1]).float().clone()

        def post(mod, args, kwargs, res, L=L):
            y = first(res)
            out[f"layers.{L}.output"] = y.detach().reshape(-1, y.shape[-1]).float().clone()

        handles.append(block.register_forward_pre_hook(pre, with_kwargs=True))
        handles.append(block.register_forward_hook(post, with_kwargs=True))

        experts = getattr(block, "experts", None)
        if experts is not None:
            def exp_pre(mod, args, kwargs, L=L):
                vals = list(args[1:]) + [v for k, v in kwargs.items() if k != "hidden_states"]
                ints = [v for v in vals if torch.is_tensor(v) and not v.dtype.is_floating_point]
                flts = [v for v in vals if torch.is_tensor(v) and v.dtype.is_floating_point]
                if ints:
                    from_experts[L] = (ints[0].detach().clone(), flts[0].detach().float().clone() if flts else None)
            handles.append(experts.register_forward_pre_hook(exp_pre, with_kwargs=True))

        router = getattr(block, f["router"]) if f["router"] != "experts" else None
        if router is not None:
            def r_post(mod, args, res, L=L):
                ts = list(res) if isinstance(res, (tuple, list)) else [res]
                ints = [t for t in ts if torch.is_tensor(t) and not t.dtype.is_floating_point]
                if ints:
                    ids = ints[0].detach().reshape(-1, ints[0].shape[-1])
                    w = [t for t in ts if torch.is_tensor(t) and t.dtype.is_floating_point
                         and t.numel() == ids.numel()]
                    out[f"layers.{L}.expert_ids"] = ids.float().clone()
                    if w:
                        out[f"layers.{L}.expert_weights"] = w[0].detach().reshape(ids.shape).float().clone()
                elif f["model_type"] == "llama4_text":
                    # Llama4Router: (scores [T,E] = sigmoid of the top-k logits, 0 elsewhere, logits)
                    s = ts[0].detach().float()
                    nz = s != 0
                    k = int(nz.sum(dim=-1).max())
                    if not bool((nz.sum(dim=-1) == k).all()):
                        raise RuntimeError("llama4 router scores: rows with differing non-zero counts")
                    ids = torch.stack([row.nonzero().flatten() for row in nz])
                    out[f"layers.{L}.expert_ids"] = ids.float()
                    out[f"layers.{L}.expert_weights"] = s.gather(1, ids)
            handles.append(router.register_forward_hook(r_post))

        for suffix, attr in f["extra_hooks"].items():
            layer = model.get_submodule(name.rsplit(".", 1)[0])
            sub = getattr(layer, attr, None)
            if sub is None:
                continue

            def x_post(mod, args, res, L=L, suffix=suffix):
                y = first(res)
                out[f"layers.{L}.{suffix}"] = y.detach().reshape(-1, y.shape[-1]).float().clone()
            handles.append(sub.register_forward_hook(x_post))

    try:
        with torch.no_grad():
            (model.get_submodule(f["forward"]) if f["forward"] else model)(input_ids=input_ids, use_cache=False)
    finally:
        for h in handles:
            h.remove()
    for L, (ids, w) in from_experts.items():
        ids = ids.reshape(-1, ids.shape[-1])
        key = f"layers.{L}.expert_ids"
        if key in out:  # router and experts agree (the router is the source; this is a check)
            if not torch.equal(out[key], ids.float()):
                raise RuntimeError(f"{f['model_type']} layer {L}: router ids differ from the experts' input")
        else:
            out[key] = ids.float().clone()
            if w is not None:
                out[f"layers.{L}.expert_weights"] = w.reshape(ids.shape).float().clone()
    layers = sorted({int(k.split(".")[1]) for k in out})
    for L in layers:
        for s in ("input", "output", "expert_ids"):
            if f"layers.{L}.{s}" not in out:
                raise RuntimeError(f"{f['model_type']} layer {L}: nothing captured for {s}")
    return {k: v.contiguous() for k, v in out.items()}, layers


def expert_keys_per_expert(keys):
    return any(re.search(r"experts\.\d+\.", k) for k in keys)


def save_fused(model, path, torch):
    """Writes the model's in-memory state dict (transformers 5's fused expert tensors) directly."""
    from safetensors.torch import save_file
    os.makedirs(path, exist_ok=True)
    model.config.save_pretrained(path)
    sd = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    # tied or persistent non-weights are fine to include; the loader ignores unexpected buffers
    save_file(sd, os.path.join(path, "model.safetensors"), metadata={"format": "pt"})


def tensor_names(path):
    from safetensors import safe_open
    names = {}
    for fn in sorted(os.listdir(path)):
        if fn.endswith(".safetensors") and fn != "reference.safetensors":
            with safe_open(os.path.join(path, fn), "pt") as f:
                for k in f.keys():
                    names[k] = list(f.get_slice(k).get_shape())
    return names


def write_reference(path, ref):
    from safetensors.torch import save_file
    save_file(ref, os.path.join(path, "reference.safetensors"), metadata={"format": "pt"})


def compare_refs(a, b, torch):
    """max relative diff over tensors (ids must be exact); returns (worst, name)."""
    worst, where = 0.0, None
    if set(a) != set(b):
        return float("inf"), f"tensor sets differ: {sorted(set(a) ^ set(b))}"
    for k in a:
        if a[k].shape != b[k].shape:
            return float("inf"), f"{k} shape {list(a[k].shape)} vs {list(b[k].shape)}"
        d = (a[k] - b[k]).abs().max().item()
        scale = max(b[k].abs().max().item(), 1e-30)
        r = d / scale if "expert_ids" not in k else (float("inf") if d != 0 else 0.0)
        if r > worst:
            worst, where = r, k
    return worst, where


def fixture_meta(f, name, dtype, layout, sharded, layers, notes, torch, transformers):
    return {"model_type": f["model_type"], "fixture": name,
            "transformers_version": transformers.__version__,
            "torch_version": torch.__version__.split("+")[0], "dtype": dtype, "layout": layout,
            "sharded": sharded, "moe_layers": layers, "num_experts": f["num_experts"],
            "top_k": f["top_k"], "notes": notes}


def make_family(f, out_dir, torch, transformers, seed, log):
    """Writes every fixture of one family; returns their index entries."""
    mt = f["model_type"]
    g = torch.Generator().manual_seed(seed + 1)
    input_ids = torch.randint(0, 64, (1, T), generator=g)
    model = build_model(f, torch, seed)
    mem_keys = set(model.state_dict().keys())
    entries = []
    tmp = tempfile.mkdtemp(prefix=f"fx-{mt}-")
    try:
        # 1. what save_pretrained writes (the hub layout), f32
        hub = os.path.join(tmp, "hub")
        model.save_pretrained(hub, safe_serialization=True)
        hub_names = tensor_names(hub)
        hub_is_per_expert = expert_keys_per_expert(hub_names)
        hub_layout = "per_expert" if hub_is_per_expert else "fused"
        two_layouts = set(hub_names) != mem_keys and hub_is_per_expert and f["fused"]
        ref_hub, layers = capture(load_model(hub, torch, torch.float32, f), f, torch, input_ids)
        ref_mem, _ = capture(model, f, torch, input_ids)
        worst, where = compare_refs(ref_hub, ref_mem, torch)
        if worst > 0:
            raise RuntimeError(f"{mt}: reloaded save_pretrained checkpoint differs from the model "
                               f"({where}: {worst:g})")
        base_notes = f["notes"]

        def emit(name, src, dtype, layout, sharded, ref, notes):
            dst = os.path.join(out_dir, name)
            if os.path.exists(dst):
                shutil.rmtree(dst)
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("generation_config.json"))
            write_reference(dst, ref)
            meta = fixture_meta(f, name, dtype, layout, sharded, layers,
                                "; ".join(x for x in (base_notes, notes) if x), torch, transformers)
            with open(os.path.join(dst, "fixture.json"), "w") as fh:
                json.dump(meta, fh, indent=1)
                fh.write("\n")
            entries.append({k: meta[k] for k in ("fixture", "model_type", "dtype", "layout", "sharded")})
            log(f"  {name}: {layout} {dtype}{' sharded' if sharded else ''}, MoE layers {layers}")

        emit(f"{mt}_f32_{hub_layout}", hub, "f32", hub_layout, False, ref_hub,
             "written by save_pretrained")

        # 2. the other layout: the in-memory (fused) state dict, written directly
        if two_layouts:
            fused = os.path.join(tmp, "fused")
            save_fused(model, fused, torch)
            ref_fused, _ = capture(load_model(fused, torch, torch.float32, f), f, torch, input_ids)
            worst, where = compare_refs(ref_fused, ref_hub, torch)
            if worst > 0:
                raise RuntimeError(f"{mt}: fused checkpoint reloads to a different output ({where}: {worst:g})")
            emit(f"{mt}_f32_fused", fused, "f32", "fused", False, ref_fused,
                 "transformers 5 in-memory state dict (fused experts) written with safetensors; "
                 "from_pretrained loads it to the same output as the per-expert checkpoint")

        # 3. bf16: save_pretrained in bf16, reload, upcast, reference in f32
        bf = os.path.join(tmp, "bf16")
        import copy
        copy.deepcopy(model).to(torch.bfloat16).save_pretrained(bf, safe_serialization=True)
        ref_bf, _ = capture(load_model(bf, torch, f=f).float(), f, torch, input_ids)
        emit(f"{mt}_bf16_{hub_layout}", bf, "bf16", hub_layout, False, ref_bf,
             "save_pretrained in bf16; reference = from_pretrained(...).float(): f32 compute on "
             "bf16-rounded weights")

        # 4b. gpt_oss in MXFP4 as the hub ships it (transformers cannot quantize on CPU: we write
        # the blocks/scales, transformers' own Mxfp4 dequantizer reads them for the reference)
        if mt == "gpt_oss":
            mx = os.path.join(tmp, "mxfp4")
            notes = write_gpt_oss_mxfp4(f, mx, torch, seed)
            from transformers import Mxfp4Config
            from transformers import AutoModelForCausalLM
            m4 = AutoModelForCausalLM.from_pretrained(
                mx, quantization_config=Mxfp4Config(dequantize=True), dtype=torch.float32,
                attn_implementation="eager", experts_implementation="eager").eval()
            ref_mx, _ = capture(m4, f, torch, input_ids)
            emit(f"{mt}_mxfp4", mx, "f32", "mxfp4", False, ref_mx, notes)
        # 4. one sharded checkpoint with an index
        if mt == "mixtral":
            sh = os.path.join(tmp, "sharded")
            model.save_pretrained(sh, safe_serialization=True, max_shard_size="100KB")
            if not os.path.exists(os.path.join(sh, "model.safetensors.index.json")):
                raise RuntimeError("mixtral sharded: no index written")
            ref_sh, _ = capture(load_model(sh, torch, torch.float32, f), f, torch, input_ids)
            worst, where = compare_refs(ref_sh, ref_hub, torch)
            if worst > 0:
                raise RuntimeError(f"mixtral sharded differs ({where}: {worst:g})")
            n = len([x for x in os.listdir(sh) if x.endswith(".safetensors")])
            emit(f"{mt}_f32_{hub_layout}_sharded", sh, "f32", hub_layout, True, ref_sh,
                 f"save_pretrained with max_shard_size=100KB: {n} shards + model.safetensors.index.json")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return entries


FP4_VALUES = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0]


def mxfp4_quantize(w, torch):
    """[..., K] f32 -> (blocks uint8 [..., K/32, 16], scales uint8 [..., K/32]): OCP MX, E8M0 scale
    2^(floor(log2 amax) - 2) per 32 values, E2M1 by nearest value, low nibble = even element."""
    *pre, K = w.shape
    g = w.reshape(*pre, K // 32, 32)
    amax = g.abs().amax(dim=-1).clamp(min=2.0 ** -126)
    e = torch.floor(torch.log2(amax)) - 2
    x = g / torch.pow(2.0, e)[..., None]
    lut = torch.tensor(FP4_VALUES)
    idx = (x.abs()[..., None] - lut).abs().argmin(dim=-1)
    code = idx | ((x < 0) & (idx > 0)).to(idx.dtype) << 3
    code = code.to(torch.uint8)
    blocks = code[..., 0::2] | (code[..., 1::2] << 4)
    scales = (e + 127).to(torch.uint8)
    return blocks.contiguous(), scales.contiguous()


def write_gpt_oss_mxfp4(f, path, torch, seed):
    """gpt_oss with intermediate 32 (MXFP4 blocks are 32 wide) and its expert weights in the hub's
    MXFP4 layout: `experts.gate_up_proj_blocks` [E, 2I, H/32, 16] + `_scales` [E, 2I, H/32],
    `experts.down_proj_blocks` [E, H, I/32, 16] + `_scales`, biases and everything else f32."""
    from safetensors.torch import save_file
    g = dict(f, cfg=dict(f["cfg"], intermediate_size=32))
    model = build_model(g, torch, seed)
    os.makedirs(path, exist_ok=True)
    model.config.quantization_config = {
        "quant_method": "mxfp4",
        "modules_to_not_convert": ["model.layers.*.self_attn", "model.layers.*.mlp.router",
                                   "model.embed_tokens", "lm_head"]}
    model.config.save_pretrained(path)
    sd = {}
    for k, v in model.state_dict().items():
        if k.endswith("experts.gate_up_proj") or k.endswith("experts.down_proj"):
            b, sc = mxfp4_quantize(v.detach().float().transpose(1, 2).contiguous(), torch)
            sd[k + "_blocks"], sd[k + "_scales"] = b, sc
        else:
            sd[k] = v.detach().contiguous().clone()
    save_file(sd, os.path.join(path, "model.safetensors"), metadata={"format": "pt"})
    return ("expert weights in MXFP4 (E2M1 values, E8M0 scale per 32) written by this script: "
            "transformers 5.24 cannot quantize to MXFP4 on CPU (its quantizer is the triton hub kernel); "
            "reference = transformers' own dequantization (Mxfp4Config(dequantize=True), f32) and block; "
            "intermediate 32 here (MXFP4 blocks are 32 wide)")


# ---------------------------------------------------------------------------------------------
TF4_SCRIPT = r"""
import json, os, sys
import transformers
from transformers import AutoConfig
req = json.load(sys.stdin)
res = {"version": transformers.__version__, "configs": {}}
for name, (mt, cfg, arch) in req.items():
    try:
        c = AutoConfig.for_model(mt, **cfg)
        c.architectures = [a for a in arch if hasattr(transformers, a)] or None
        # what save_pretrained writes (use_diff=True), as a hub config.json of that version
        res["configs"][name] = json.loads(c.to_json_string(use_diff=True))
    except Exception as e:
        res["configs"][name] = {"__error__": f"{type(e).__name__}: {e}"}
json.dump(res, sys.stdout)
"""


def v4_kwargs(f):
    c = {}
    for k, v in f["cfg"].items():
        if k in f["v4"]:
            if f["v4"][k] is None:
                continue
            k = f["v4"][k]
        c[k] = v
    c.update(f["v4_extra"])
    return c


def write_tf4_configs(tf4_path, out_dir, entries, log):
    """config.transformers4.json for each fixture whose family transformers 4.x has, written by
    that version (a separate interpreter with tf4_path first on PYTHONPATH)."""
    req = {}
    for e in entries:
        f = BY_NAME[e["model_type"]]
        c5 = json.load(open(os.path.join(out_dir, e["fixture"], "config.json")))
        kw = v4_kwargs(f)
        if e["layout"] == "mxfp4":  # the MXFP4 variant's own shape and quantization_config
            kw.update(intermediate_size=c5["intermediate_size"], quantization_config=c5["quantization_config"])
        req[e["fixture"]] = (f["v4_model_type"], kw, c5.get("architectures") or [])
    env = dict(os.environ, PYTHONPATH=tf4_path + os.pathsep + os.environ.get("PYTHONPATH", ""))
    p = subprocess.run([sys.executable, "-c", TF4_SCRIPT], input=json.dumps(req), env=env,
                       capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"transformers 4.x config writer failed: {p.stderr[-2000:]}")
    res = json.loads(p.stdout)
    ver = res["version"]
    if not ver.startswith("4."):
        raise RuntimeError(f"--tf4-path gave transformers {ver}, not 4.x")
    from transformers import AutoConfig
    for name, cfg in res["configs"].items():
        d = os.path.join(out_dir, name)
        meta_p = os.path.join(d, "fixture.json")
        meta = json.load(open(meta_p))
        if "__error__" in cfg:
            meta["transformers4_version"] = None
            meta["transformers4_note"] = f"transformers {ver} has no such config: {cfg['__error__'][:200]}"
            log(f"  {name}: no 4.x config ({cfg['__error__'][:80]})")
        else:
            if meta["dtype"] == "bf16":
                cfg["torch_dtype"] = "bfloat16"
            with open(os.path.join(d, "config.transformers4.json"), "w") as fh:
                json.dump(cfg, fh, indent=2, sort_keys=True)
                fh.write("\n")
            # the 4.x config must load in 5.x to the same MoE shape as the 5.x config
            chk = tempfile.mkdtemp()
            try:
                shutil.copy(os.path.join(d, "config.transformers4.json"), os.path.join(chk, "config.json"))
                c4 = AutoConfig.from_pretrained(chk).to_dict()
                c5 = AutoConfig.from_pretrained(d).to_dict()
            finally:
                shutil.rmtree(chk)
            diff = [k for k in c5 if re.search(r"expert|moe|top|dense|sparse|mlp_only|intermediate|"
                                                 r"ffn|group|scaling|layers", k)
                    and k in c4 and c4[k] != c5[k]]
            if diff:
                raise RuntimeError(f"{name}: 4.x config loads in 5.x with different {diff}")
            meta["transformers4_version"] = ver
        with open(meta_p, "w") as fh:
            json.dump(meta, fh, indent=1)
            fh.write("\n")


# ---------------------------------------------------------------------------------------------
def generate(out_dir, names, seed, log):
    import torch
    import transformers
    torch.set_num_threads(min(2, torch.get_num_threads()))
    torch.use_deterministic_algorithms(True, warn_only=True)
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    os.makedirs(out_dir, exist_ok=True)
    entries, skipped = [], {}
    for i, f in enumerate(FAMILIES):
        if names and f["model_type"] not in names:
            continue
        log(f"{f['model_type']}:")
        slot = i if f["seed_index"] is None else f["seed_index"]
        entries += make_family(f, out_dir, torch, transformers, seed + 1000 * slot, log)
    return entries, skipped


def read_ref(path):
    from safetensors.torch import load_file
    return load_file(path)


def check(out_dir, seed, names):
    import torch
    tmp = tempfile.mkdtemp(prefix="family-fixtures-check-")
    problems = []
    try:
        entries, _ = generate(tmp, names, seed, lambda s: None)
        index = json.load(open(os.path.join(out_dir, "index.json")))
        committed = {e["fixture"] for e in index["fixtures"]
                     if not names or e["model_type"] in names}
        fresh = {e["fixture"] for e in entries}
        for miss in sorted(fresh - committed):
            problems.append(f"{miss}: generated now but not in tests/fixtures/families (regenerate)")
        for miss in sorted(committed - fresh):
            problems.append(f"{miss}: committed but no longer generated")
        for name in sorted(fresh & committed):
            a_dir, b_dir = os.path.join(tmp, name), os.path.join(out_dir, name)
            if not os.path.exists(os.path.join(b_dir, "reference.safetensors")):
                problems.append(f"{name}: reference.safetensors missing")
                continue
            fresh_ref = read_ref(os.path.join(a_dir, "reference.safetensors"))
            old_ref = read_ref(os.path.join(b_dir, "reference.safetensors"))
            worst, where = compare_refs(fresh_ref, old_ref, torch)
            if worst > REL_TOL and where in fresh_ref and where.endswith("expert_ids"):
                a, b = fresh_ref[where].sort(dim=1).values, old_ref[where].sort(dim=1).values
                n = int((a != b).any(dim=1).sum())
                problems.append(f"{name}: reference {where}: {n} of {a.shape[0]} tokens now choose "
                                f"other experts" if n else f"{name}: reference {where}: same experts, other order")
            elif worst > REL_TOL:
                problems.append(f"{name}: reference {where} moved, max relative diff {worst:.3g}")
            a_w, b_w = tensor_names(a_dir), tensor_names(b_dir)
            if a_w != b_w:
                problems.append(f"{name}: checkpoint tensor names/shapes changed: "
                                f"{sorted(set(a_w.items()) ^ set(b_w.items()), key=str)[:4]}")
                continue
            from safetensors import safe_open
            for fn in sorted(os.listdir(a_dir)):
                if not fn.endswith(".safetensors") or fn == "reference.safetensors":
                    continue
                if not os.path.exists(os.path.join(b_dir, fn)):
                    problems.append(f"{name}: {fn} missing")
                    continue
                with safe_open(os.path.join(a_dir, fn), "pt") as fa, safe_open(os.path.join(b_dir, fn), "pt") as fb:
                    for k in fa.keys():
                        x, y = fa.get_tensor(k).float(), fb.get_tensor(k).float()
                        d = (x - y).abs().max().item() / max(y.abs().max().item(), 1e-30)
                        if d > REL_TOL:
                            problems.append(f"{name}: weight {k} moved, max relative diff {d:.3g}")
                            break
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return problems


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=OUT_DEFAULT)
    ap.add_argument("--only", default="", help="comma-separated model_types")
    ap.add_argument("--check", action="store_true")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--tf4-path", default="", help="a --target dir holding transformers 4.x")
    args = ap.parse_args()
    import_stack()
    names = {n for n in args.only.split(",") if n}
    unknown = names - set(BY_NAME)
    if unknown:
        sys.exit(f"unknown family {sorted(unknown)}; known: {', '.join(BY_NAME)}")
    if args.check:
        problems = check(args.out, args.seed, names)
        for p in problems:
            print(f"FAIL: {p}")
        if problems:
            print("regenerate with tools/make_family_fixtures.py if the change is intended")
            sys.exit(1)
        print("family fixtures: current")
        return
    entries, _ = generate(args.out, names, args.seed, print)
    if args.tf4_path:
        write_tf4_configs(args.tf4_path, args.out, entries, print)
    idx_p = os.path.join(args.out, "index.json")
    old = json.load(open(idx_p))["fixtures"] if os.path.exists(idx_p) else []
    keep = [e for e in old if e["fixture"] not in {x["fixture"] for x in entries}
            and e["model_type"] not in {x["model_type"] for x in entries}]
    import torch
    import transformers
    allf = sorted(keep + entries, key=lambda e: ([f["model_type"] for f in FAMILIES].index(e["model_type"])
                                                  if e["model_type"] in BY_NAME else 999, e["fixture"]))
    with open(idx_p, "w") as fh:
        json.dump({"transformers_version": transformers.__version__,
                   "torch_version": torch.__version__.split("+")[0], "fixtures": allf}, fh, indent=1)
        fh.write("\n")


if __name__ == "__main__":
    main()
