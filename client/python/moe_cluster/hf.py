"""Offload the MoE blocks of a transformers model to a moe-cluster.

    model = AutoModelForCausalLM.from_pretrained(path)
    moe_cluster.hf.offload(model, "127.0.0.1:7100")
    model.generate(ids)            # every MoE block now calls the cluster

``offload`` finds every MoE block (a decoder layer's child with a ``gate`` and ``experts``:
Mixtral, Qwen2-MoE, Qwen3-MoE, OLMoE, DeepSeek-V2, DeepSeek-V3 and the families built the same
way), checks that the cluster serves the same model, and replaces each block with a
:class:`ClusterMoeBlock` that sends the block's input to ``Router.forward`` for that layer and
returns what the block returned: a tensor (transformers 5), or ``(hidden, router_logits)`` where
the block returned that pair (transformers 4). Router logits recorded by
``output_router_logits=True`` come from the cluster. Inference only: no gradient flows through an
offloaded block. The original blocks (and their expert weights) are dropped.

What "the same model" means, checked before anything is replaced (``ModelMismatch`` otherwise):
family (``model_type``), hidden size, expert count, top-k, the number of layers and which are MoE
layers; the model
fingerprint, when the model was loaded from a local checkpoint directory (README "Model
fingerprint"); and, unless ``verify=False``, each layer's output on a few random tokens computed
by the original block and by the cluster (so two checkpoints with the same shapes are told apart
even when no files are at hand).
"""

from __future__ import annotations

import os

import torch
from torch import nn

from ._client import Client, DEFAULT_TIMEOUT_S
from ._fingerprint import checkpoint_files, model_fingerprint
from .errors import InvalidArgument

__all__ = ["offload", "ClusterMoeBlock", "ModelMismatch", "find_moe_blocks"]

# The config.json keys each family keeps its routed-expert count under (transformers 4 and 5).
_EXPERT_KEYS = ("num_local_experts", "num_experts", "n_routed_experts")

try:  # transformers >= 5 records router logits through hooks on the gate while collecting
    from transformers.utils.output_capturing import _active_collector as _COLLECTOR
except Exception:  # pragma: no cover - transformers 4 or a future layout: always pass them on
    _COLLECTOR = None


class ModelMismatch(InvalidArgument):
    """The cluster at the given address does not serve the model being offloaded."""


def _text_config(config):
    get = getattr(config, "get_text_config", None)
    return get() if callable(get) else config


def _experts_of(config):
    for key in _EXPERT_KEYS:
        v = getattr(config, key, None)
        if isinstance(v, int) and v > 0:
            return v
    return None


def _decoder_layers(model) -> nn.ModuleList:
    """The model's decoder layers: the ModuleList of num_hidden_layers entries named `layers`."""
    n = getattr(_text_config(model.config), "num_hidden_layers", None)
    best = None
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and name.split(".")[-1] == "layers":
            if n is None or len(module) == n:
                if best is None or name.count(".") < best[0].count("."):
                    best = (name, module)
    if best is None:
        raise ModelMismatch(f"{type(model).__name__}: no decoder layer list "
                            f"(a ModuleList 'layers' of {n} entries) found")
    return best[1]


def _is_moe_block(module) -> bool:
    return (isinstance(module, nn.Module) and not isinstance(module, ClusterMoeBlock)
            and isinstance(getattr(module, "gate", None), nn.Module)
            and isinstance(getattr(module, "experts", None), nn.Module))


def find_moe_blocks(model) -> list[tuple[int, nn.Module, str, nn.Module]]:
    """(decoder layer index, decoder layer, attribute name, block) of every MoE block."""
    found = []
    for i, layer in enumerate(_decoder_layers(model)):
        for name, child in layer.named_children():
            if _is_moe_block(child) or isinstance(child, ClusterMoeBlock):
                found.append((i, layer, name, child))
    return found


def _gate_recorder(gate: nn.Module) -> nn.Module:
    """What stands where the block's gate stood: an instance of the gate's class (without its
    weights, with its hooks), so that transformers' output recording (``output_router_logits``),
    which hooks modules of that class, records the cluster's router logits. Calling it returns
    what it is given."""
    cls = type(gate)
    recorder = cls.__new__(cls)
    nn.Module.__init__(recorder)
    for hooks in ("_forward_hooks", "_forward_hooks_with_kwargs", "_forward_hooks_always_called",
                  "_forward_pre_hooks", "_forward_pre_hooks_with_kwargs"):
        if hasattr(gate, hooks):
            setattr(recorder, hooks, getattr(gate, hooks))
    recorder.forward = lambda outputs: outputs
    return recorder


class ClusterMoeBlock(nn.Module):
    """One MoE block served by the cluster: ``forward(hidden_states)`` returns what the original
    block returned, computed by ``Router.forward(layer, hidden_states)``."""

    def __init__(self, client: Client, layer: int, hidden_size: int, returns_tuple: bool,
                 gate_outputs: int, gate: nn.Module | None):
        super().__init__()
        self.layer = layer
        self.hidden_size = hidden_size
        self.returns_tuple = returns_tuple
        self.gate_outputs = gate_outputs
        self.gate = gate
        object.__setattr__(self, "client", client)  # not a submodule

    def extra_repr(self) -> str:
        return f"layer={self.layer}, address={self.client.address!r}"

    def _wants_logits(self) -> bool:
        if self.returns_tuple:
            return True
        if self.gate is None or not self.gate._forward_hooks:
            return False
        if _COLLECTOR is None:
            return True
        collected = _COLLECTOR.get()
        return collected is not None and "router_logits" in collected

    def forward(self, hidden_states, *args, **kwargs):
        shape = hidden_states.shape
        x = hidden_states.detach().reshape(-1, shape[-1])
        wants = self._wants_logits()
        result = self.client.forward(self.layer, x, return_routing=wants)
        out = result.output.view(shape)
        if not wants:
            return out
        logits = result.logits.to(hidden_states.dtype)
        if self.gate is not None and self.gate._forward_hooks:
            self.gate((logits,) + (None,) * (self.gate_outputs - 1) if self.gate_outputs > 1
                      else logits)
        return (out, logits) if self.returns_tuple else out


def _probe_tokens(block: nn.Module, hidden: int, tokens: int, seed: int):
    p = next(block.parameters(), None)
    device = p.device if p is not None else torch.device("cpu")
    dtype = p.dtype if p is not None and p.dtype.is_floating_point else torch.float32
    g = torch.Generator(device="cpu").manual_seed(seed)
    x = torch.randn(1, tokens, hidden, generator=g, dtype=torch.float32)
    return x.to(device=device, dtype=dtype)


def _tolerance(dtype) -> float:
    return 1e-4 if dtype in (torch.float32, torch.float64) else 3e-2


def offload(model, address, *, verify: bool = True, fingerprint: bool = True,
            timeout_s: float = DEFAULT_TIMEOUT_S, tls=None, client: Client | None = None):
    """Replaces every MoE block of ``model`` with a module that calls the cluster at
    ``address`` for that layer; returns ``model`` (changed in place).

    Refuses (``ModelMismatch``, nothing replaced) unless the cluster serves the same model: see
    the module's documentation. ``verify=False`` skips the per-layer output check (the
    structural and fingerprint checks stay); ``fingerprint=False`` skips hashing the local
    checkpoint. ``client``: an existing ``moe_cluster.Client`` to share (``address`` is then
    only used in messages)."""
    config = _text_config(model.config)
    blocks = find_moe_blocks(model)
    if client is None:
        client = Client(address, timeout_s=timeout_s, tls=tls)
    info = client.info()
    where = f"cluster at {client.address}"

    mismatches = []
    family = getattr(config, "model_type", None)
    if info.family != family:
        mismatches.append(f"family: model {family!r}, {where} serves {info.family!r}")
    if info.hidden_size != config.hidden_size:
        mismatches.append(f"hidden size: model {config.hidden_size}, cluster {info.hidden_size}")
    experts = _experts_of(config)
    if experts is not None and experts != info.num_experts:
        mismatches.append(f"experts: model {experts}, cluster {info.num_experts}")
    top_k = getattr(config, "num_experts_per_tok", None)
    if top_k is not None and top_k != info.top_k:
        mismatches.append(f"top-k: model {top_k}, cluster {info.top_k}")
    num_layers = getattr(config, "num_hidden_layers", None)
    if info.num_layers and num_layers is not None and num_layers != info.num_layers:
        mismatches.append(f"layers: model {num_layers}, cluster {info.num_layers}")
    layers = tuple(i for i, *_ in blocks)
    if layers != tuple(info.moe_layers):
        mismatches.append(f"MoE layers: model {list(layers)}, cluster {list(info.moe_layers)}")
    if mismatches:
        raise ModelMismatch(f"{where} does not serve this model: " + "; ".join(mismatches))

    source = getattr(config, "_name_or_path", None) or getattr(model, "name_or_path", None)
    if (fingerprint and info.fingerprint and isinstance(source, str) and os.path.isdir(source)
            and checkpoint_files(source) is not None):
        local = model_fingerprint(source)
        if local != info.fingerprint:
            raise ModelMismatch(f"{where} serves another checkpoint: its model fingerprint is "
                                f"{info.fingerprint}, the model's ({source}) is {local}")

    replacements = []
    for i, layer, name, block in blocks:
        if isinstance(block, ClusterMoeBlock):
            replacements.append((layer, name, block))
            continue
        x = _probe_tokens(block, config.hidden_size, 4, seed=1234 + i)
        with torch.no_grad():
            try:
                expected = block(x)
            except Exception:  # weights not materialized (meta device, …): shape unknown
                expected = None
                if verify:
                    raise
            returns_tuple = isinstance(expected, tuple)
            gate_out = block.gate(x.reshape(-1, x.shape[-1])) if expected is not None else None
        gate_outputs = len(gate_out) if isinstance(gate_out, tuple) else 1
        if verify:
            want = (expected[0] if returns_tuple else expected).float().reshape(-1, x.shape[-1])
            got = client.forward(i, x.reshape(-1, x.shape[-1])).output.float()
            scale = float(want.abs().max().clamp_min(1e-30))
            err = float((got.to(want.device) - want).abs().max()) / scale
            if not err <= _tolerance(x.dtype):
                raise ModelMismatch(
                    f"{where}: layer {i}'s output differs from the model's own block on random "
                    f"tokens (max relative error {err:.3g} > {_tolerance(x.dtype):g}): the "
                    "cluster serves other weights")
        recorder = _gate_recorder(block.gate)
        replacements.append((layer, name, ClusterMoeBlock(client, i, config.hidden_size,
                                                          returns_tuple, gate_outputs, recorder)))
    for layer, name, new in replacements:
        setattr(layer, name, new)
    model._moe_cluster_client = client
    return model
