"""moe_cluster.hf.offload on small transformers models written by save_pretrained with random
weights and served by a real cluster: the same logits (fp32, rel <= 1e-5), the same router logits
and the same greedy tokens as the model alone, for every family the cluster serves; refusals when
the cluster serves another model."""

import contextlib
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch is not installed (scripts/install-deps.sh "
                            "installs it into the test venv)")
transformers = pytest.importorskip("transformers", reason="transformers is not installed "
                                   "(scripts/install-deps.sh installs it into the test venv)")

import moe_cluster  # noqa: E402
import moe_cluster.hf  # noqa: E402
from conftest import cluster  # noqa: E402

COMMON = dict(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
              num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
              initializer_range=0.1, tie_word_embeddings=False)
DEEPSEEK = dict(moe_intermediate_size=32, n_shared_experts=1, first_k_dense_replace=1,
                kv_lora_rank=16, q_lora_rank=None, qk_rope_head_dim=8, qk_nope_head_dim=8,
                v_head_dim=16, num_hidden_layers=3)

FAMILIES = {
    "mixtral": dict(num_local_experts=4, num_experts_per_tok=2),
    # 3 layers, layer 1 dense: the MoE layers are 0 and 2
    "qwen2_moe": dict(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32,
                      shared_expert_intermediate_size=48, num_hidden_layers=3,
                      mlp_only_layers=[1]),
    "qwen3_moe": dict(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32,
                      norm_topk_prob=True, head_dim=16),
    "olmoe": dict(num_experts=4, num_experts_per_tok=2),
    "deepseek_v2": dict(n_routed_experts=8, num_experts_per_tok=2, topk_method="group_limited_greedy",
                        n_group=4, topk_group=2, routed_scaling_factor=1.5, **DEEPSEEK),
    "deepseek_v3": dict(n_routed_experts=8, num_experts_per_tok=2, n_group=2, topk_group=1,
                        routed_scaling_factor=2.5, norm_topk_prob=True, **DEEPSEEK),
}

def save_model(family, directory, seed=0, **extra):
    cfg = transformers.AutoConfig.for_model(family, **{**COMMON, **FAMILIES[family], **extra})
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(cfg)
    with torch.no_grad():
        for name, buf in model.named_buffers():
            if name.endswith("e_score_correction_bias"):  # DeepSeek-V3: choose on σ + bias
                buf.copy_(torch.randn(buf.shape) * 0.3)
    model.save_pretrained(directory)
    return directory


def load(directory):
    return transformers.AutoModelForCausalLM.from_pretrained(directory).float().eval()


def moe_zeroed_logits(model, ids):
    """The logits with every MoE block's output replaced by zeros: shows the blocks matter."""
    hooks = []
    for _, _, _, block in moe_cluster.hf.find_moe_blocks(model):
        def zero(module, args, out):
            return (torch.zeros_like(out[0]),) + tuple(out[1:]) if isinstance(out, tuple) \
                else torch.zeros_like(out)
        hooks.append(block.register_forward_hook(zero))
    try:
        with torch.no_grad():
            return model(ids).logits
    finally:
        for h in hooks:
            h.remove()


def rel(a, b):
    return float((a - b).abs().max() / b.abs().max())


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_offload_gives_the_models_own_logits_and_tokens(family, work):
    directory = save_model(family, os.path.join(work, f"hf-{family}"))
    model = load(directory)
    ids = torch.randint(0, 128, (2, 6), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    with torch.no_grad():
        want = model(ids, attention_mask=mask, output_router_logits=True)
        want_tokens = model.generate(ids, attention_mask=mask, max_new_tokens=8, do_sample=False,
                                     pad_token_id=0)
    assert rel(moe_zeroed_logits(model, ids), want.logits) > 1e-2, "MoE blocks barely matter"
    moe_layers = [i for i, *_ in moe_cluster.hf.find_moe_blocks(model)]

    with contextlib.ExitStack() as stack:
        address = stack.enter_context(cluster(work, directory))
        assert moe_cluster.hf.offload(model, address) is model
        blocks = moe_cluster.hf.find_moe_blocks(model)
        assert [i for i, *_ in blocks] == moe_layers
        assert all(isinstance(b, moe_cluster.hf.ClusterMoeBlock) for *_, b in blocks)
        assert not any("experts" in n for n, _ in model.named_parameters())  # weights dropped
        with torch.no_grad():
            got = model(ids, attention_mask=mask, output_router_logits=True)
            tokens = model.generate(ids, attention_mask=mask, max_new_tokens=8, do_sample=False,
                                    pad_token_id=0)
    assert rel(got.logits, want.logits) <= 1e-5
    assert torch.equal(tokens, want_tokens)
    assert len(got.router_logits) == len(want.router_logits) == len(moe_layers)
    for g, w in zip(got.router_logits, want.router_logits):
        assert g.shape == w.shape and rel(g, w) <= 1e-5


def test_offload_refuses_another_model(work):
    served = save_model("mixtral", os.path.join(work, "hf-served"), seed=0)
    other = save_model("mixtral", os.path.join(work, "hf-other"), seed=1)  # same shapes
    with cluster(work, served) as address:
        # loaded from its directory: the fingerprints differ
        model = load(other)
        with pytest.raises(moe_cluster.hf.ModelMismatch, match="fingerprint"):
            moe_cluster.hf.offload(model, address)
        assert not moe_cluster.hf.find_moe_blocks(model)[0][3].__class__.__name__.startswith(
            "Cluster")  # nothing replaced
        # no directory to hash: the outputs on random tokens differ
        cfg = transformers.AutoConfig.for_model("mixtral", **{**COMMON, **FAMILIES["mixtral"]})
        torch.manual_seed(2)
        fresh = transformers.AutoModelForCausalLM.from_config(cfg).eval()
        with pytest.raises(moe_cluster.hf.ModelMismatch, match="differs"):
            moe_cluster.hf.offload(fresh, address)
        # another family and shape: refused before any probe
        olmoe = transformers.AutoModelForCausalLM.from_config(transformers.AutoConfig.for_model(
            "olmoe", **{**COMMON, **FAMILIES["olmoe"], "num_experts": 8}))
        with pytest.raises(moe_cluster.hf.ModelMismatch) as e:
            moe_cluster.hf.offload(olmoe, address)
        assert "family" in str(e.value) and "experts: model 8, cluster 4" in str(e.value)
        assert isinstance(e.value, moe_cluster.InvalidArgument)
        # the served model itself is accepted
        moe_cluster.hf.offload(load(served), address)


def test_offload_a_bf16_model(work):
    directory = os.path.join(work, "hf-mixtral")
    if not os.path.isdir(directory):
        save_model("mixtral", directory)
    model = load(directory).to(torch.bfloat16)
    ids = torch.randint(0, 128, (1, 5), generator=torch.Generator().manual_seed(3))
    with cluster(work, directory) as address:
        moe_cluster.hf.offload(model, address)
        with torch.no_grad():
            out = model(ids).logits
    assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()
    assert np.isfinite(out.float().numpy()).all()
