#!/usr/bin/env python3
"""Every example cluster config in deploy/examples (one per model family, the ones README.md
documents) works as a user would run it: generate the checkpoint with the command in the file's
header, start the cluster with moe-cluster, and drive traffic with moe-client --check, which
compares every reply and every token's expert choice with an in-process computation. While the
cluster still runs, the router's /metrics must show what the example's routing implies: dropped
assignments under a capacity factor, zero-computation experts served on the router for MoE++.

Ports and the model path are rewritten to a temporary directory and free ports; nothing else in
the file changes. Usage: examples_test.py BIN_DIR [EXAMPLES_DIR]"""
import json
import os
import shlex
import socket
import subprocess
import sys
import tempfile

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


HANDED_OUT = set()


def free_port():
    """A free loopback port, never the same one twice in this run (the kernel may hand a just
    closed socket's port to the next bind, and one YAML would then name a port twice)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in HANDED_OUT:
            HANDED_OUT.add(port)
            return port


def checkpoint_command(path):
    for line in open(path):
        words = line.lstrip("# ").split()
        if words and words[0].endswith("moe-make-checkpoint"):
            return words
    raise SystemExit(f"FAIL: {path} has no moe-make-checkpoint command in its header")


def metric_sums(path):
    """Prometheus text exposition -> {metric name: sum over its series}."""
    sums = {}
    for line in open(path):
        if line.startswith("#") or not line.strip():
            continue
        series, value = line.rsplit(" ", 1)
        metric = series.split("{", 1)[0]
        sums[metric] = sums.get(metric, 0.0) + float(value)
    return sums


def run_example(bin_dir, path, work):
    name = os.path.splitext(os.path.basename(path))[0]
    cmd = checkpoint_command(path)
    out = cmd.index("--out")
    model = os.path.join(work, name, "model")
    cmd = [os.path.join(bin_dir, "moe-make-checkpoint")] + cmd[1:out + 1] + [model] + cmd[out + 2:]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)

    config = yaml.safe_load(open(path))
    config["model"]["path"] = model
    config["router"]["listen"] = f"127.0.0.1:{free_port()}"
    config["router"]["admin"] = f"127.0.0.1:{free_port()}"
    for shard in config["shards"]:
        shard["listen"] = f"127.0.0.1:{free_port()}"
        shard["device"] = "cpu"
        shard["threads"] = 1
    cluster = os.path.join(work, name, "cluster.yaml")
    with open(cluster, "w") as f:
        yaml.safe_dump(config, f)

    client = [os.path.join(bin_dir, "moe-client"), "--config", cluster, "--tokens", "256",
              "--batch", "128", "--check", "--json", "--quiet"]
    metrics = os.path.join(work, name, "metrics.txt")
    script = (" ".join(shlex.quote(c) for c in client) +
              f" && curl -sf http://{config['router']['admin']}/metrics > {shlex.quote(metrics)}")
    run = subprocess.run([os.path.join(bin_dir, "moe-cluster"), "--config", cluster, "--",
                          "sh", "-c", script], capture_output=True, text=True, timeout=240)
    summary = None
    for line in run.stdout.splitlines():
        if line.startswith("{"):
            summary = json.loads(line)
    if run.returncode != 0 or summary is None or not summary.get("parity"):
        print(run.stdout, run.stderr, sep="\n")
        raise SystemExit(f"FAIL: {name}: " + " ".join(shlex.quote(c) for c in client))
    assert summary["errors"] == 0 and summary["routing_mismatches"] == 0, summary
    exported = metric_sums(metrics)
    routing = config.get("routing") or {}
    if routing.get("capacity_factor", 0) <= 1.0 and "capacity_factor" in routing:
        assert exported.get("moe_capacity_dropped_assignments_total", 0) > 0, \
            f"{name}: capacity {routing['capacity_factor']} dropped nothing"
    if name == "moe_plus_plus":
        assert exported.get("moe_zero_compute_assignments_total", 0) > 0, \
            f"{name}: no zero-computation expert served on the router"
    print(f"ok: {name}: {summary['tokens_checked']} tokens, identical expert choices, "
          f"max_rel_err {summary['max_rel_err']:.2e}, "
          f"{exported.get('moe_capacity_dropped_assignments_total', 0):.0f} dropped, "
          f"{exported.get('moe_zero_compute_assignments_total', 0):.0f} zero-compute on the router")


def main():
    bin_dir = sys.argv[1]
    examples = sys.argv[2] if len(sys.argv) > 2 else os.path.join(ROOT, "deploy", "examples")
    files = sorted(os.path.join(examples, f) for f in os.listdir(examples) if f.endswith(".yaml"))
    if len(files) < 8:
        raise SystemExit(f"FAIL: expected an example per model family in {examples}, found {files}")
    with tempfile.TemporaryDirectory() as work:
        for path in files:
            run_example(bin_dir, path, work)


if __name__ == "__main__":
    main()
