"""The README's "Call it from your engine" / "Python" examples, run as written: each code block of
the section is taken from README.md, its addresses and paths pointed at a cluster the test
started, and run with this interpreter (``import moe_cluster`` is this tree's package)."""

import json
import os
import re
import subprocess
import sys

import pytest

from conftest import ROOT, binary, cluster, free_port

SECTION = "### Python"  # under "## Call it from your engine"
PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def blocks():
    """The section's fenced code blocks, in order: [(language, code)]."""
    with open(os.path.join(ROOT, "README.md")) as f:
        text = f.read()
    start = text.index(SECTION, text.index("## Call it from your engine"))
    end = min(i for i in (text.find("\n## ", start), text.find("\n### ", start + 1), len(text))
              if i >= 0)
    section = text[start:end]
    return re.findall(r"```(\w*)\n(.*?)```", section, flags=re.S)


def run_python(code, cwd, timeout=300):
    env = dict(os.environ, PYTHONPATH=PACKAGE_DIR + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, f"README example failed:\n{code}\n--- stderr:\n{proc.stderr}"
    return proc.stdout


def test_the_section_has_the_examples_this_test_runs():
    assert [lang for lang, _ in blocks()] == ["python", "python", "python", "yaml", "sh",
                                              "python"], \
        "README section changed: update test_readme.py to run every example"


def test_plain_and_asyncio_examples(tiny_cluster, work):
    plain, asyncio_example = (code for lang, code in blocks()[:2])
    out = run_python(plain.replace("127.0.0.1:7100", tiny_cluster), work)
    lines = out.splitlines()
    assert lines[0].startswith("mixtral 64 (0, 1) 4 2")
    assert lines[-1].startswith("hidden: hidden size 64 expected, got 63")
    out = run_python(asyncio_example.replace("127.0.0.1:7100", tiny_cluster), work)
    assert out.startswith("16 (8, 64) ")


def test_hf_offload_example(tmp_path):
    pytest.importorskip("torch", reason="torch is not installed")
    pytest.importorskip("transformers", reason="transformers is not installed")
    (_, save), (_, yaml_text), (_, shell), (_, offload) = blocks()[2:]
    run_python(save, str(tmp_path))
    assert os.path.isfile(tmp_path / "models" / "tiny-mixtral" / "config.json")

    # The README's YAML, on free ports (JSON is YAML: the cluster config reader takes it as is).
    ports = {old: f"127.0.0.1:{free_port()}" for old in re.findall(r"127\.0\.0\.1:\d+", yaml_text)}
    for old, new in ports.items():
        yaml_text = yaml_text.replace(old, new)
    (tmp_path / "tiny-mixtral.yaml").write_text(yaml_text)
    assert shell.split() == ["build/bin/moe-cluster", "--config", "tiny-mixtral.yaml"]
    router = ports["127.0.0.1:7300"]
    # conftest.cluster writes its own YAML; start the README's instead, as the shell line does.
    log = tmp_path / "cluster.log"
    with open(log, "w") as f:
        proc = subprocess.Popen([binary("moe-cluster"), "--config", "tiny-mixtral.yaml"],
                                cwd=tmp_path, stdout=f, stderr=subprocess.STDOUT)
    try:
        import time
        deadline = time.monotonic() + 60
        while "cluster ready" not in log.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        out = run_python(offload.replace("127.0.0.1:7300", router), str(tmp_path))
        assert out.startswith("ClusterMoeBlock(")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
