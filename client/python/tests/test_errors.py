"""Every exception class, raised by a real router for what it stands for, with the server's
message; and the one mapping table for the codes that cannot be provoked from outside."""

import os
import signal
import time

import numpy as np
import pytest

import moe_cluster
from moe_cluster import errors
from conftest import TINY, free_port, processes

H = TINY["hidden"]


def x(t=1):
    return np.random.default_rng(t).standard_normal((t, H)).astype(np.float32)


@pytest.fixture()
def procs(work, tiny_model):
    """Router + 2 shards as separate processes, with short server deadlines and a small
    queue limit: router.max_queued_tokens 16, shard calls 400 ms, requests 1500 ms."""
    with processes(work, tiny_model, router={"max_queued_tokens": 16},
                   timeouts={"shard_call_ms": 400, "request_ms": 1500, "connect_ms": 300}) as p:
        yield p


def test_invalid_argument_names_the_field(tiny_cluster):
    with moe_cluster.Client(tiny_cluster) as c:
        with pytest.raises(moe_cluster.InvalidArgument) as e:
            c.forward(0, np.zeros((2, H - 4), np.float32))
        assert str(e.value).startswith("hidden: hidden size 64 expected, got 60")
        assert e.value.code == "InvalidArgument"
        assert isinstance(e.value, moe_cluster.Error) and isinstance(e.value, ValueError)
        with pytest.raises(moe_cluster.InvalidArgument, match="not an MoE layer"):
            c.forward(7, x())
        bad = x(4)
        bad[3, 5] = np.nan
        with pytest.raises(moe_cluster.InvalidArgument, match="token 3 has a non-finite value"):
            c.forward(0, bad)
        with pytest.raises(moe_cluster.InvalidArgument, match="prevLogits"):
            c.forward(0, x(2), prev_logits=np.zeros((2, 4), np.float32))
        with pytest.raises(moe_cluster.InvalidArgument, match="noisy top-k is off"):
            c.forward(0, x(), noise_seed=5)
        with pytest.raises(moe_cluster.InvalidArgument, match="zero tokens"):
            c.forward(0, np.zeros((0, H), np.float32))
        assert c.forward(0, x()).output.shape == (1, H)  # the connection is still good


def test_resource_exhausted(procs):
    with moe_cluster.Client(procs.address) as c:
        with pytest.raises(moe_cluster.ResourceExhausted, match="max_queued_tokens = 16"):
            c.forward(0, x(17))
        assert c.forward(0, x(16)).output.shape == (16, H)


def test_deadline_exceeded_on_the_server_and_on_the_client(procs):
    shard = procs.shards["shard-0"]
    with moe_cluster.Client(procs.address) as c:
        c.forward(0, x(8))
        os.kill(shard.pid, signal.SIGSTOP)
        try:
            # the router's deadline passes first: its DeadlineExceeded, its message
            with pytest.raises(moe_cluster.DeadlineExceeded, match="within"):
                c.forward(0, x(8))
            # the client's own deadline passes first
            with moe_cluster.Client(procs.address, timeout_s=0.2) as quick:
                t0 = time.monotonic()
                with pytest.raises(moe_cluster.DeadlineExceeded, match="timeout_s = 0.2"):
                    quick.forward(0, x(8))
                assert time.monotonic() - t0 < 1.0
        finally:
            os.kill(shard.pid, signal.SIGCONT)
        assert isinstance(moe_cluster.DeadlineExceeded("m"), TimeoutError)
        procs.wait_ready()
        assert c.forward(0, x(8)).output.shape == (8, H)  # the same client, after


def test_unavailable_shard_then_router_restart(procs):
    with moe_cluster.Client(procs.address) as c:
        c.forward(0, x(8))
        procs.shards["shard-1"].kill()
        procs.shards["shard-1"].wait()
        with pytest.raises(moe_cluster.Unavailable) as e:
            c.forward(0, x(8))
        assert "shard-1" in str(e.value) or "no available replica" in str(e.value)
        assert isinstance(e.value, ConnectionError)
        procs.start_shard("shard-1")
        procs.wait_ready()
        assert c.forward(0, x(8)).output.shape == (8, H)
        # the router itself goes away: Unavailable; back on the same port: the client reconnects
        procs.router.kill()
        procs.router.wait()
        with pytest.raises(moe_cluster.Unavailable):
            c.forward(0, x(2))
        procs.start_router()
        procs.wait_ready()
        assert c.forward(0, x(2)).output.shape == (2, H)


def test_unavailable_when_nothing_listens():
    port = free_port()
    with pytest.raises(moe_cluster.Unavailable, match=f"127.0.0.1:{port}"):
        moe_cluster.Client(f"127.0.0.1:{port}", timeout_s=2)


@pytest.mark.parametrize("code, cls", [
    ("InvalidArgument", moe_cluster.InvalidArgument),
    ("FailedPrecondition", moe_cluster.FailedPrecondition),
    ("Unavailable", moe_cluster.Unavailable),
    ("DeadlineExceeded", moe_cluster.DeadlineExceeded),
    ("ResourceExhausted", moe_cluster.ResourceExhausted),
    ("Internal", moe_cluster.Internal),
])
def test_code_table(code, cls):
    """Every code the server sends (common/rpc_status.cc) maps to its class, message intact."""
    e = errors.from_description(f"remote exception: {code}: layer 3: it: went wrong", "FAILED")
    assert type(e) is cls and e.code == code and str(e) == "layer 3: it: went wrong"
    assert isinstance(e, moe_cluster.Error)


def test_exceptions_without_a_code_map_by_kj_type():
    assert type(errors.from_description("connection reset", "DISCONNECTED")) is \
        moe_cluster.Unavailable
    assert type(errors.from_description("too much", "OVERLOADED")) is moe_cluster.ResourceExhausted
    assert type(errors.from_description("Bogus: x", "FAILED")) is moe_cluster.Internal
