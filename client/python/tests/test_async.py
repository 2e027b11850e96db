"""moe_cluster.AsyncClient: many requests in flight on one connection, deadlines, cancellation,
and living next to a blocking Client in the same thread."""

import asyncio
import os
import signal

import numpy as np
import pytest

import moe_cluster
from conftest import TINY, max_rel_err, processes

H = TINY["hidden"]


def tokens(t, seed):
    return np.random.default_rng(seed).standard_normal((t, H)).astype(np.float32)


def test_many_in_flight_on_one_connection(tiny_cluster, reference):
    async def main():
        async with moe_cluster.AsyncClient(tiny_cluster) as c:
            stream = c._stream
            inputs = [(i % 2, tokens(1 + i % 3, seed=i)) for i in range(64)]
            results = await asyncio.gather(*(c.forward(layer, x) for layer, x in inputs))
            assert c._stream is stream  # one connection for all of them
            return inputs, results

    inputs, results = asyncio.run(main())
    for (layer, x), r in zip(inputs, results):
        want, *_ = reference(layer, x)
        assert max_rel_err(r.output, want) < 1e-5
    # They were in flight together: the router merged some of them into one batch.
    assert max(r.stats.batch_requests for r in results) > 1


def test_info_routing_and_torch(tiny_cluster, reference):
    async def main():
        async with moe_cluster.AsyncClient(tiny_cluster, timeout_s=10) as c:
            info = await c.info()
            r = await c.forward(1, tokens(3, seed=7), return_routing=True)
            return info, r

    info, r = asyncio.run(main())
    assert info.moe_layers == (0, 1) and info.hidden_size == H
    assert r.routing.experts.shape == (3, 2)
    _, top, _, _ = reference(1, tokens(3, seed=7))
    assert np.array_equal(np.sort(r.routing.experts, 1), np.sort(top, 1))


def test_connects_lazily_and_closes(tiny_cluster):
    async def main():
        c = moe_cluster.AsyncClient(tiny_cluster)
        r = await c.forward(0, tokens(1, seed=1))  # no explicit connect
        await c.close()
        with pytest.raises(moe_cluster.Unavailable, match="closed"):
            await c.forward(0, tokens(1, seed=1))
        return r

    assert asyncio.run(main()).output.shape == (1, H)


def test_deadline_and_cancellation(work, tiny_model):
    with processes(work, tiny_model) as procs:
        shard = procs.shards["shard-0"]

        async def main():
            async with moe_cluster.AsyncClient(procs.address, timeout_s=0.3) as c:
                await c.forward(0, tokens(8, seed=2))
                os.kill(shard.pid, signal.SIGSTOP)
                try:
                    with pytest.raises(moe_cluster.DeadlineExceeded):
                        await c.forward(0, tokens(8, seed=3))
                    # every call in flight expires at its own deadline, not only the first
                    loop = asyncio.get_running_loop()
                    t0 = loop.time()
                    results = await asyncio.gather(
                        *(c.forward(i % 2, tokens(2, seed=i)) for i in range(8)),
                        return_exceptions=True)
                    assert all(isinstance(r, moe_cluster.DeadlineExceeded) for r in results)
                    assert loop.time() - t0 < 1.0
                    assert not c._pending
                    # a cancelled call is cancelled, and the client goes on working
                    task = asyncio.ensure_future(c.forward(0, tokens(8, seed=4)))
                    await asyncio.sleep(0.05)
                    task.cancel()
                    with pytest.raises(asyncio.CancelledError):
                        await task
                    with pytest.raises(AttributeError):
                        c.timeout_s = 10  # fixed at construction
                finally:
                    os.kill(shard.pid, signal.SIGCONT)
                for _ in range(50):  # the stopped shard catches up on what was sent meanwhile
                    try:
                        return await c.forward(0, tokens(8, seed=5))
                    except moe_cluster.DeadlineExceeded:
                        await asyncio.sleep(0.1)
                return await c.forward(0, tokens(8, seed=5))

        assert asyncio.run(main()).output.shape == (8, H)


def test_sync_and_async_clients_in_one_thread(tiny_cluster, reference):
    """A blocking Client made before asyncio.run keeps working inside and after it (its
    connection lives on the client's own thread, not on this thread's event loop)."""
    x = tokens(2, seed=9)
    want, *_ = reference(0, x)
    with moe_cluster.Client(tiny_cluster) as sync:
        async def main():
            async with moe_cluster.AsyncClient(tiny_cluster) as a:
                r1 = await a.forward(0, x)
            r2 = sync.forward(0, x)  # blocking call from inside a running loop (a notebook)
            return r1, r2

        for _ in range(2):  # two event loops one after the other
            r1, r2 = asyncio.run(main())
            assert max_rel_err(r1.output, want) < 1e-5 and max_rel_err(r2.output, want) < 1e-5
        assert max_rel_err(sync.forward(0, x).output, want) < 1e-5
