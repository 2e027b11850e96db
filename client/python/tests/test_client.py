"""moe_cluster.Client against a real cluster: info, numpy and torch in and out, routing, the
schema shipped in the package, one copy per direction, threads, close."""

import os
import threading
import tracemalloc

import numpy as np
import pytest

import moe_cluster
from moe_cluster._fingerprint import model_fingerprint
from conftest import TINY, max_rel_err

H = TINY["hidden"]


def tokens(t, seed=0, dtype=np.float32):
    return np.random.default_rng(seed).standard_normal((t, H)).astype(dtype)


def test_schema_ships_inside_the_package():
    from moe_cluster import _schema
    assert os.path.dirname(_schema.SCHEMA_PATH) == os.path.dirname(moe_cluster.__file__)
    assert _schema.moe.Router is not None  # loaded without any system include path


def test_info(tiny_cluster, tiny_model):
    with moe_cluster.Client(tiny_cluster) as c:
        info = c.info()
    assert (info.family, info.hidden_size, info.num_experts, info.top_k) == ("mixtral", H, 4, 2)
    assert info.model_type == "mixtral"
    assert (info.family_name, info.routing_recipe) == ("Mixtral", "softmax, top-k, renormalize")
    assert info.moe_layers == (0, 1) and info.num_layers == 2
    assert info.intermediate_size == TINY["intermediate"]
    assert info.ready and not info.draining
    assert info.input_dtypes == ("f32", "bf16", "f16") and info.output_dtype == "f32"
    assert [s.name for s in info.shards] == ["shard-0", "shard-1"]
    assert all(s.reachable for s in info.shards)
    # The router's fingerprint is the checkpoint's, as moe_cluster computes it locally.
    assert info.fingerprint == model_fingerprint(tiny_model)


def test_forward_numpy_matches_reference(tiny_cluster, reference):
    x = tokens(5)
    with moe_cluster.Client(tiny_cluster) as c:
        for layer in (0, 1):
            r = c.forward(layer, x)
            want, *_ = reference(layer, x)
            assert isinstance(r.output, np.ndarray)
            assert r.output.shape == (5, H) and r.output.dtype == np.float32
            assert max_rel_err(r.output, want) < 1e-5
            assert r.routing is None and r.logits is None  # not asked for, not a MoE++ model
            assert r.stats.tokens == 5 and r.stats.total_us > 0


def test_numpy_shapes_and_dtypes(tiny_cluster, reference):
    x = tokens(6, seed=1)
    want, *_ = reference(0, x)
    with moe_cluster.Client(tiny_cluster) as c:
        # leading dimensions are kept: [B, S, H] in, [B, S, H] out
        r = c.forward(0, x.reshape(2, 3, H))
        assert r.output.shape == (2, 3, H)
        assert max_rel_err(r.output.reshape(6, H), want) < 1e-5
        # one token as a vector
        assert c.forward(0, x[0]).output.shape == (H,)
        # float16 travels as f16 and comes back float16; float64 as f32 and back float64
        r16 = c.forward(0, x.astype(np.float16))
        assert r16.output.dtype == np.float16
        assert max_rel_err(r16.output, want) < 2e-2
        r64 = c.forward(0, x.astype(np.float64))
        assert r64.output.dtype == np.float64 and max_rel_err(r64.output, want) < 1e-5
        # a strided view is read in place (no contiguous copy needed by the caller)
        wide = np.zeros((6, 2 * H), np.float32)
        wide[:, ::2] = x
        assert max_rel_err(c.forward(0, wide[:, ::2]).output, want) < 1e-5
        # the output is the caller's own, writable array
        out = c.forward(0, x).output
        assert out.flags.writeable and out.flags.owndata
        out += 1


def test_one_copy_per_direction(tiny_cluster):
    """numpy in and out: the only Python-side allocation of a call's size is the output array
    (the input is written straight into the request, the output read straight from the reply)."""
    x = tokens(2048, seed=2)
    with moe_cluster.Client(tiny_cluster) as c:
        c.forward(0, x[:4])
        tracemalloc.start()
        try:
            tracemalloc.reset_peak()
            out = c.forward(0, x).output
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert out.nbytes == x.nbytes
    assert peak < 1.5 * x.nbytes, f"peak {peak} bytes for a {x.nbytes}-byte call"


def test_routing(tiny_cluster, reference):
    x = tokens(7, seed=3)
    with moe_cluster.Client(tiny_cluster) as c:
        r = c.forward(1, x, return_routing=True)
    _, top, weights, logits = reference(1, x)
    routing = r.routing
    assert routing.k == 2
    assert routing.experts.shape == (7, 2) and routing.experts.dtype == np.int64
    assert routing.weights.shape == (7, 2) and routing.weights.dtype == np.float32
    assert np.array_equal(np.sort(routing.experts, 1), np.sort(top, 1))
    order = np.argsort(routing.experts, 1)
    ref_order = np.argsort(top, 1)
    assert np.allclose(np.take_along_axis(routing.weights, order, 1),
                       np.take_along_axis(weights, ref_order, 1), atol=1e-6)
    assert np.allclose(routing.weights.sum(1), 1.0, atol=1e-6)  # Mixtral renormalizes
    assert not routing.dropped.any() and not routing.affected.any()
    assert r.logits.shape == (7, 4) and r.logits.dtype == np.float32
    assert max_rel_err(r.logits, logits) < 1e-5


def test_torch_in_torch_out(tiny_cluster, reference):
    torch = pytest.importorskip("torch", reason="torch is not installed")
    x = tokens(4, seed=4)
    want, *_ = reference(0, x)
    with moe_cluster.Client(tiny_cluster) as c:
        t = torch.from_numpy(x).reshape(2, 2, H)
        r = c.forward(0, t, return_routing=True)
        assert isinstance(r.output, torch.Tensor)
        assert r.output.shape == (2, 2, H) and r.output.dtype == torch.float32
        assert r.output.device.type == "cpu"
        assert max_rel_err(r.output.reshape(4, H).numpy(), want) < 1e-5
        assert isinstance(r.routing.experts, torch.Tensor) and isinstance(r.logits, torch.Tensor)
        # bf16 travels as bf16 and comes back bf16
        rb = c.forward(0, torch.from_numpy(x).to(torch.bfloat16))
        assert rb.output.dtype == torch.bfloat16
        assert max_rel_err(rb.output.float().numpy(), want) < 3e-2
        # a strided view (written element by element) and float64 (sent as f32, back float64)
        wide = torch.zeros(4, 2 * H)
        wide[:, ::2] = torch.from_numpy(x)
        assert max_rel_err(c.forward(0, wide[:, ::2]).output.numpy(), want) < 1e-5
        r64 = c.forward(0, torch.from_numpy(x).double())
        assert r64.output.dtype == torch.float64 and max_rel_err(r64.output.numpy(), want) < 1e-5
        # a tensor that requires grad is read without its graph
        g = torch.from_numpy(x).requires_grad_()
        assert not c.forward(0, g).output.requires_grad


def test_torch_on_cuda_comes_back_on_its_device(tiny_cluster, reference):
    torch = pytest.importorskip("torch", reason="torch is not installed")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device on this machine")
    x = tokens(3, seed=5)
    want, *_ = reference(0, x)
    with moe_cluster.Client(tiny_cluster) as c:
        for dtype in (torch.float32, torch.bfloat16):
            r = c.forward(0, torch.from_numpy(x).to("cuda", dtype))
            assert r.output.device.type == "cuda" and r.output.dtype == dtype
            assert max_rel_err(r.output.float().cpu().numpy(), want) < 3e-2


def test_threads_share_one_client(tiny_cluster, reference):
    failures = []
    with moe_cluster.Client(tiny_cluster) as c:
        def work(seed):
            for i in range(10):
                x = tokens(1 + (seed + i) % 4, seed=100 * seed + i)
                want, *_ = reference(i % 2, x)
                err = max_rel_err(c.forward(i % 2, x).output, want)
                if not err < 1e-5:
                    failures.append(err)
        threads = [threading.Thread(target=work, args=(s,)) for s in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert not failures


def test_close_and_context_manager(tiny_cluster):
    c = moe_cluster.Client(tiny_cluster)
    with c:
        c.forward(0, tokens(1))
    with pytest.raises(moe_cluster.Unavailable, match="closed"):
        c.forward(0, tokens(1))
    c.close()  # twice is fine


def test_bad_arguments_fail_before_sending(tiny_cluster):
    with moe_cluster.Client(tiny_cluster) as c:
        with pytest.raises(moe_cluster.InvalidArgument, match="layer"):
            c.forward(-1, tokens(1))
        with pytest.raises(moe_cluster.InvalidArgument, match="hidden"):
            c.forward(0, np.float32(1.0))
        with pytest.raises(moe_cluster.InvalidArgument, match="hidden"):
            c.forward(0, np.array([["a"] * H]))
        with pytest.raises(moe_cluster.InvalidArgument, match="noise_seed"):
            c.forward(0, tokens(1), noise_seed=-1)
        assert c.forward(0, tokens(1)).output.shape == (1, H)  # still fine afterwards
    with pytest.raises(moe_cluster.InvalidArgument, match="HOST:PORT"):
        moe_cluster.Client("localhost")
