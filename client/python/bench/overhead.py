#!/usr/bin/env python3
"""Round-trip overhead of the Python client: one forward of 1 token on a tiny model over loopback,
client time minus the router's own time for the call (``stats.total_us``: from the moment the
router handles the request to its reply being written), p50 and p99.

Rows: ``Client`` (blocking, one call at a time), ``AsyncClient`` with 16 calls in flight on one
connection, and, for comparison, the same call written in raw pycapnp (``await req.send()`` with
``data = x.tobytes()``), one at a time and 16 in flight. With calls in flight together, a call's
"overhead" also holds its wait behind the others (in the client's loop and the router's), so the
table adds each row's wall time per call and the client's CPU time per call. The rows run round-robin (``--rounds``, default 3) so the machine's noise
spreads over all of them; the table gives the median over the rounds of each percentile.

    client/python/bench/overhead.py                      # starts its own tiny cluster (build/bin)
    client/python/bench/overhead.py --router HOST:PORT   # an existing router (a 1-token forward)
    client/python/bench/overhead.py --json

The client process is pinned to one CPU (``--cpu``, after the cluster it starts is up) so that its
two threads (a Client's caller and its connection's thread) do not migrate between cores: on a
2-core machine shared with the router and the shards, unpinned runs are bimodal (±70 us).

It is a benchmark, not a test: it prints numbers and fails only when a call fails.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(HERE)))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))

import numpy as np  # noqa: E402

import moe_cluster  # noqa: E402


def pct(values, p):
    return float(np.percentile(np.asarray(values), p))


def cpu_s():
    r = resource.getrusage(resource.RUSAGE_SELF)  # this process only: the cluster is apart
    return r.ru_utime + r.ru_stime


def summarize(latency_us, server_us, wall_s, cpu_s_used):
    lat = np.asarray(latency_us)
    over = lat - np.asarray(server_us)
    n = len(lat)
    return {"p50": pct(over, 50), "p99": pct(over, 99), "latency_p50": pct(lat, 50),
            "latency_p99": pct(lat, 99), "server_p50": pct(server_us, 50), "calls": n,
            "wall_us_per_call": wall_s / n * 1e6, "client_cpu_us_per_call": cpu_s_used / n * 1e6}


class Meter:
    """Wall and CPU time of the measured calls (after the warm-up)."""

    def __init__(self):
        self.wall = self.cpu = None

    def start(self):
        if self.wall is None:
            self.wall, self.cpu = time.perf_counter(), cpu_s()

    def stop(self):
        return time.perf_counter() - self.wall, cpu_s() - self.cpu


def run_client(address, x, n, warmup):
    lat, srv, meter = [], [], Meter()
    with moe_cluster.Client(address) as c:
        for i in range(warmup + n):
            if i == warmup:
                meter.start()
            t0 = time.perf_counter()
            r = c.forward(0, x)
            dt = (time.perf_counter() - t0) * 1e6
            if i >= warmup:
                lat.append(dt)
                srv.append(r.stats.total_us)
    return summarize(lat, srv, *meter.stop())


async def _async_rows(address, x, n, warmup, inflight):
    lat, srv, meter = [], [], Meter()
    async with moe_cluster.AsyncClient(address) as c:
        per = (warmup + n) // inflight + 1

        async def worker():
            for i in range(per):
                if i == warmup // inflight:
                    meter.start()
                t0 = time.perf_counter()
                r = await c.forward(0, x)
                dt = (time.perf_counter() - t0) * 1e6
                if i >= warmup // inflight:
                    lat.append(dt)
                    srv.append(r.stats.total_us)

        await asyncio.gather(*(worker() for _ in range(inflight)))
        used = meter.stop()
    return summarize(lat, srv, *used)


def run_async(address, x, n, warmup, inflight=16):
    return asyncio.run(_async_rows(address, x, n, warmup, inflight))


async def _raw(address, x, n, warmup, inflight=1):
    import capnp
    from moe_cluster._schema import moe
    host, port = address.rsplit(":", 1)
    lat, srv, meter = [], [], Meter()
    async with capnp.kj_loop():
        stream = await capnp.AsyncIoStream.create_connection(host, int(port))
        rpc = capnp.TwoPartyClient(stream)
        router = rpc.bootstrap().cast_as(moe.Router)
        per = (warmup + n) // inflight + (1 if inflight > 1 else 0)

        async def worker():
            for i in range(per):
                if i == warmup // inflight:
                    meter.start()
                t0 = time.perf_counter()
                req = router.forward_request()
                req.layer = 0
                h = req.init("hidden")
                h.dtype = "f32"
                h.shape = list(x.shape)
                h.data = x.tobytes()
                r = await req.send()
                out = np.frombuffer(r.output.data, dtype=np.float32).reshape(x.shape)
                assert out.shape == x.shape
                total = r.stats.totalMicros
                dt = (time.perf_counter() - t0) * 1e6
                if i >= warmup // inflight:
                    lat.append(dt)
                    srv.append(total)

        await asyncio.gather(*(worker() for _ in range(inflight)))
        used = meter.stop()
        rpc.close()
        stream.close()
    return summarize(lat, srv, *used)


def run_raw(address, x, n, warmup, inflight=1):
    return asyncio.run(_raw(address, x, n, warmup, inflight))


@contextlib.contextmanager
def own_cluster(bin_dir):
    import conftest
    os.environ["MOE_BIN_DIR"] = bin_dir
    conftest.BIN = bin_dir
    with tempfile.TemporaryDirectory() as work:
        model = conftest.make_checkpoint(os.path.join(work, "tiny"), hidden=64, intermediate=128,
                                         experts=4, top_k=2, layers=1, dtype="f32", seed=1)
        with conftest.cluster(work, model) as address:
            yield address


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--router", help="HOST:PORT of a running router (default: start a tiny one)")
    ap.add_argument("--bin", default=os.path.join(ROOT, "build", "bin"),
                    help="where moe-cluster and moe-make-checkpoint are (default build/bin)")
    ap.add_argument("--calls", type=int, default=3000, help="measured calls per row and round")
    ap.add_argument("--warmup", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--inflight", type=int, default=16)
    ap.add_argument("--cpu", type=int, default=os.cpu_count() - 1,
                    help="pin this process (the client) to one CPU once the cluster is up, so "
                         "the client's threads do not migrate between cores (default: the last "
                         "CPU; -1: no pinning)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if args.calls < 1 or args.rounds < 1 or args.inflight < 1 or args.warmup < 0:
        ap.error("--calls, --rounds and --inflight must be >= 1, --warmup >= 0")

    with contextlib.ExitStack() as stack:
        address = args.router or stack.enter_context(own_cluster(args.bin))
        if args.cpu >= 0:
            os.sched_setaffinity(0, {args.cpu})  # after the cluster started: it stays unpinned
        with moe_cluster.Client(address) as c:
            hidden = c.info().hidden_size
        x = np.random.default_rng(0).standard_normal((1, hidden)).astype(np.float32)
        rows = {"Client": lambda: run_client(address, x, args.calls, args.warmup),
                f"AsyncClient, {args.inflight} in flight":
                    lambda: run_async(address, x, args.calls, args.warmup, args.inflight),
                "raw pycapnp (for comparison)": lambda: run_raw(address, x, args.calls,
                                                                args.warmup),
                f"raw pycapnp, {args.inflight} in flight":
                    lambda: run_raw(address, x, args.calls, args.warmup, args.inflight)}
        rounds = {name: [] for name in rows}
        for _ in range(args.rounds):
            for name, fn in rows.items():
                rounds[name].append(fn())
    table = {name: {k: statistics.median(r[k] for r in rs) for k in rs[0]}
             for name, rs in rounds.items()}
    if args.json:
        print(json.dumps({"rows": table, "rounds": rounds}, indent=1))
        return
    pinned = f"client pinned to CPU {args.cpu}" if args.cpu >= 0 else "client not pinned"
    print(f"forward of 1 token (hidden {hidden}) over loopback, {args.calls} calls x "
          f"{args.rounds} rounds, medians over rounds; {platform.processor() or platform.machine()}"
          f", {os.cpu_count()} CPUs, {pinned}")
    print("overhead = client latency - router time (stats.total_us); all figures in us")
    print(f"{'client':34} {'overhead p50':>12} {'p99':>6} {'latency p50':>11} {'p99':>6} "
          f"{'router p50':>10} {'wall/call':>9} {'client CPU/call':>15}")
    for name, r in table.items():
        print(f"{name:34} {r['p50']:12.0f} {r['p99']:6.0f} {r['latency_p50']:11.0f} "
              f"{r['latency_p99']:6.0f} {r['server_p50']:10.0f} {r['wall_us_per_call']:9.0f} "
              f"{r['client_cpu_us_per_call']:15.0f}")


if __name__ == "__main__":
    main()
