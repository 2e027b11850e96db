"""Real clusters for the client tests: the project's own binaries (``MOE_BIN_DIR``, default
``build/bin``) on 127.0.0.1 with free ports, on checkpoints written into a temporary directory.

``cluster(model_dir, ...)`` starts ``moe-cluster`` and waits for "cluster ready";
``processes(model_dir, ...)`` starts ``moe-expert`` and ``moe-router`` one by one, so that a test
can stop, kill or restart one of them (``moe-cluster`` would stop everything when a shard dies).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(HERE)))
sys.path.insert(0, os.path.dirname(HERE))  # the package under test: client/python/moe_cluster

BIN = os.environ.get("MOE_BIN_DIR") or os.path.join(ROOT, "build", "bin")


def binary(name: str) -> str:
    path = os.path.join(BIN, name)
    if not os.access(path, os.X_OK):
        pytest.fail(f"{path} not found: build the project first (scripts/build.sh) or set "
                    "MOE_BIN_DIR", pytrace=False)
    return path


_handed_out: set[int] = set()


def free_port() -> int:
    """A free loopback port, never the same one twice in this process: the kernel may hand the
    port it just gave to a closed socket to the next bind, so one cluster YAML could name a port
    twice ("already used by another service")."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _handed_out:
            _handed_out.add(port)
            return port


def make_checkpoint(out: str, **flags) -> str:
    """moe-make-checkpoint --out OUT --flag value …; returns OUT."""
    cmd = [binary("moe-make-checkpoint"), "--out", out]
    for k, v in flags.items():
        cmd += [f"--{k.replace('_', '-')}", str(v)]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return out


def _experts_of(model_dir: str) -> int:
    with open(os.path.join(model_dir, "config.json")) as f:
        c = json.load(f)
    for key in ("num_local_experts", "num_experts", "n_routed_experts"):
        if isinstance(c.get(key), int):
            return c[key]
    raise KeyError("expert count")


def write_config(work: str, model_dir: str, shards: int = 2, router: dict | None = None,
                 timeouts: dict | None = None, routing: dict | None = None,
                 extra: dict | None = None) -> dict:
    """A cluster YAML (JSON is YAML) with free ports; returns it as a dict with its path.
    ``extra``: more top-level sections (``{"tls": {...}}``)."""
    experts = _experts_of(model_dir)
    per = -(-experts // shards)
    config = {
        "model": {"path": model_dir},
        "router": {"listen": f"127.0.0.1:{free_port()}", "device": "cpu", "threads": 1,
                   **(router or {})},
        "shards": [{"name": f"shard-{s}", "listen": f"127.0.0.1:{free_port()}", "device": "cpu",
                    "threads": 1,
                    "experts": list(range(s * per, min(experts, (s + 1) * per)))}
                   for s in range(shards)],
    }
    if timeouts:
        config["timeouts"] = timeouts
    if routing:
        config["routing"] = routing
    config.update(extra or {})
    path = os.path.join(work, f"cluster-{config['router']['listen'].rsplit(':', 1)[1]}.yaml")
    with open(path, "w") as f:
        json.dump(config, f, indent=1)
    config["_path"] = path
    return config


def _stop(proc: subprocess.Popen, sig=signal.SIGTERM):
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGCONT)
            proc.send_signal(sig)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class ClusterStartError(AssertionError):
    """moe-cluster exited (or was not ready in 60 s); the message has its log."""


@contextlib.contextmanager
def cluster(work: str, model_dir: str, **config_args):
    """moe-cluster on model_dir; yields the router's address once "cluster ready"."""
    config = write_config(work, model_dir, **config_args)
    log_path = config["_path"] + ".log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen([binary("moe-cluster"), "--config", config["_path"]],
                                stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            with open(log_path) as f:
                text = f.read()
            if "cluster ready" in text:
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise ClusterStartError(f"moe-cluster did not start:\n{text}")
            time.sleep(0.05)
        yield config["router"]["listen"]
    finally:
        _stop(proc)


class Processes:
    """A router and its shards as separate processes (see ``processes``)."""

    def __init__(self, work, config):
        self.work = work
        self.config = config
        self.address = config["router"]["listen"]
        self.router = None
        self.shards = {}

    def _spawn(self, args, name):
        log = open(os.path.join(self.work, f"{name}-{time.monotonic_ns()}.log"), "w")
        return subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)

    def start_shard(self, name):
        self.shards[name] = self._spawn(
            [binary("moe-expert"), "--config", self.config["_path"], "--shard", name], name)

    def start_router(self):
        self.router = self._spawn([binary("moe-router"), "--config", self.config["_path"]],
                                  "router")

    def wait_ready(self, timeout=30):
        import moe_cluster
        deadline = time.monotonic() + timeout
        last = None
        while True:
            try:
                with moe_cluster.Client(self.address, timeout_s=2) as c:
                    if c.info().ready:
                        return
            except moe_cluster.Error as e:
                last = e
            if time.monotonic() > deadline:
                raise AssertionError(f"router {self.address} not ready in {timeout} s: {last!r}")
            time.sleep(0.05)

    def stop_all(self):
        for p in list(self.shards.values()) + [self.router]:
            if p is not None:
                _stop(p)


@contextlib.contextmanager
def processes(work: str, model_dir: str, **config_args):
    config = write_config(work, model_dir, **config_args)
    procs = Processes(work, config)
    try:
        for shard in config["shards"]:
            procs.start_shard(shard["name"])
        procs.start_router()
        procs.wait_ready()
        yield procs
    finally:
        procs.stop_all()


# -- the tiny Mixtral-shaped model most tests use, and a numpy reference of its MoE layer -----

TINY = dict(hidden=64, intermediate=96, experts=4, top_k=2, layers=2, dtype="f32", seed=3)


def read_safetensors(path: str) -> dict[str, np.ndarray]:
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        data = f.read()
    dtypes = {"F32": np.float32, "F16": np.float16}
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        begin, end = t["data_offsets"]
        out[name] = np.frombuffer(data[begin:end], dtype=dtypes[t["dtype"]]).reshape(t["shape"])
    return out


class MixtralReference:
    """The Mixtral MoE layer in numpy (float64): softmax top-k, renormalized, SwiGLU experts."""

    def __init__(self, model_dir: str):
        self.w = read_safetensors(os.path.join(model_dir, "model.safetensors"))
        with open(os.path.join(model_dir, "config.json")) as f:
            c = json.load(f)
        self.k = c["num_experts_per_tok"]
        self.experts = c["num_local_experts"]

    def __call__(self, layer: int, x: np.ndarray):
        p = f"model.layers.{layer}.block_sparse_moe."
        x = np.asarray(x, dtype=np.float64)
        logits = x @ self.w[p + "gate.weight"].astype(np.float64).T
        probs = np.exp(logits - logits.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        top = np.argsort(-probs, axis=-1, kind="stable")[:, : self.k]
        weights = np.take_along_axis(probs, top, -1)
        weights /= weights.sum(-1, keepdims=True)
        out = np.zeros_like(x)
        for e in range(self.experts):
            w1, w2, w3 = (self.w[f"{p}experts.{e}.{n}.weight"].astype(np.float64)
                          for n in ("w1", "w2", "w3"))
            a = x @ w1.T
            ffn = ((a / (1 + np.exp(-a))) * (x @ w3.T)) @ w2.T
            sel = (top == e)
            out += (weights * sel).sum(-1, keepdims=True) * ffn
        return out, top, weights, logits


def max_rel_err(got, want) -> float:
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    return float(np.abs(got - want).max() / max(np.abs(want).max(), 1e-30))


@pytest.fixture(scope="session")
def work(tmp_path_factory):
    return str(tmp_path_factory.mktemp("moe"))


@pytest.fixture(scope="session")
def tiny_model(work):
    return make_checkpoint(os.path.join(work, "tiny"), **TINY)


@pytest.fixture(scope="session")
def tiny_cluster(work, tiny_model):
    """The tiny model on a router and 2 shards; the router's address."""
    with cluster(work, tiny_model) as address:
        yield address


@pytest.fixture(scope="session")
def reference(tiny_model):
    return MixtralReference(tiny_model)
