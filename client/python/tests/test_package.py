"""`pip install ./client/python` builds a package that works on its own: the schema is a real
file inside it (not the source tree's link), and the installed copy talks to a cluster."""

import os
import shutil
import subprocess
import sys

import pytest

PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_pip_install_makes_a_working_package(tmp_path, tiny_cluster):
    pytest.importorskip("setuptools", reason="setuptools is needed to build the package offline")
    site = tmp_path / "site"
    # setuptools builds in the source tree (build/, *.egg-info); leave it as it was found
    leftovers = [os.path.join(PACKAGE_DIR, d) for d in ("build", "moe_cluster.egg-info")]
    existed = {d for d in leftovers if os.path.exists(d)}
    try:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index",
                        "--no-build-isolation", "--disable-pip-version-check", "--target",
                        str(site), PACKAGE_DIR], check=True)
    finally:
        for d in set(leftovers) - existed:
            shutil.rmtree(d, ignore_errors=True)
    schema = site / "moe_cluster" / "moe.capnp"
    assert schema.is_file() and not schema.is_symlink()
    with open(os.path.join(os.path.dirname(PACKAGE_DIR), "..", "common", "proto",
                           "moe.capnp")) as f:
        assert schema.read_text() == f.read()
    code = (f"import moe_cluster, numpy as np\n"
            f"assert moe_cluster.__file__.startswith({str(site)!r}), moe_cluster.__file__\n"
            f"with moe_cluster.Client({tiny_cluster!r}) as c:\n"
            f"    print(c.forward(0, np.ones((3, 64), np.float32)).output.shape)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                         text=True, env=dict(os.environ, PYTHONPATH=str(site)))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "(3, 64)"
