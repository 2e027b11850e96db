"""hf.offload's contract on a model built by hand (torch only, no transformers): MoE blocks in
the transformers-4 style, which return ``(hidden, router_logits)``, come back as that pair, with
the cluster's output and router logits; the checks refuse a model whose shapes differ."""

import os
import types

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch is not installed")
from torch import nn  # noqa: E402

import moe_cluster  # noqa: E402
import moe_cluster.hf  # noqa: E402
from conftest import TINY, read_safetensors  # noqa: E402

H, E, K = TINY["hidden"], TINY["experts"], TINY["top_k"]


class Expert(nn.Module):
    def __init__(self, w, prefix):
        super().__init__()
        self.w1, self.w2, self.w3 = (nn.Linear(1, 1, bias=False) for _ in range(3))
        for name in ("w1", "w2", "w3"):
            getattr(self, name).weight = nn.Parameter(torch.from_numpy(
                np.array(w[f"{prefix}{name}.weight"])))

    def forward(self, x):
        return self.w2(nn.functional.silu(self.w1(x)) * self.w3(x))


class V4MixtralBlock(nn.Module):
    """transformers 4's MixtralSparseMoeBlock: returns (hidden, router_logits)."""

    def __init__(self, w, layer):
        super().__init__()
        p = f"model.layers.{layer}.block_sparse_moe."
        self.gate = nn.Linear(H, E, bias=False)
        self.gate.weight = nn.Parameter(torch.from_numpy(np.array(w[p + "gate.weight"])))
        self.experts = nn.ModuleList(Expert(w, f"{p}experts.{e}.") for e in range(E))

    def forward(self, hidden):
        b, s, h = hidden.shape
        x = hidden.view(-1, h)
        logits = self.gate(x)
        probs = torch.softmax(logits, dim=-1, dtype=torch.float)
        weights, chosen = torch.topk(probs, K, dim=-1)
        weights = weights / weights.sum(-1, keepdim=True)
        out = torch.zeros_like(x)
        for e, expert in enumerate(self.experts):
            w = (weights * (chosen == e)).sum(-1, keepdim=True)
            out = out + w * expert(x)
        return out.view(b, s, h), logits


def hand_built_model(model_dir, layers=TINY["layers"]):
    w = read_safetensors(os.path.join(model_dir, "model.safetensors"))
    model = nn.Module()
    model.config = types.SimpleNamespace(model_type="mixtral", hidden_size=H,
                                         num_local_experts=E, num_experts_per_tok=K,
                                         num_hidden_layers=layers)
    model.model = nn.Module()
    model.model.layers = nn.ModuleList()
    for i in range(layers):
        layer = nn.Module()
        layer.block_sparse_moe = V4MixtralBlock(w, i)
        model.model.layers.append(layer)
    return model


def test_tuple_returning_blocks_get_the_clusters_router_logits(tiny_cluster, tiny_model):
    model = hand_built_model(tiny_model)
    h = torch.randn(2, 3, H, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = [layer.block_sparse_moe(h) for layer in model.model.layers]
    moe_cluster.hf.offload(model, tiny_cluster)
    for layer, (want_out, want_logits) in zip(model.model.layers, want):
        block = layer.block_sparse_moe
        assert isinstance(block, moe_cluster.hf.ClusterMoeBlock)
        out, logits = block(h)
        assert out.shape == (2, 3, H) and logits.shape == (6, E)
        assert float((out - want_out).abs().max() / want_out.abs().max()) < 1e-5
        assert float((logits - want_logits).abs().max() / want_logits.abs().max()) < 1e-5


def test_refuses_other_layer_counts(tiny_cluster, tiny_model):
    model = hand_built_model(tiny_model, layers=1)  # the cluster's model: 2 layers, both MoE
    with pytest.raises(moe_cluster.hf.ModelMismatch) as e:
        moe_cluster.hf.offload(model, tiny_cluster)
    assert "layers: model 1, cluster 2" in str(e.value)
    assert "MoE layers: model [0], cluster [0, 1]" in str(e.value)
    assert isinstance(model.model.layers[0].block_sparse_moe, V4MixtralBlock)
