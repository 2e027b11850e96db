#!/usr/bin/env python3
"""ctest python_client: runs the Python client's pytest suite (client/python/tests) with the
interpreter of the client's test venv, which scripts/install-deps.sh makes (MOE_PYTHON_VENV,
default ~/.cache/moe-cluster/venv). Usage: run_pytest.py BIN_DIR [pytest args...]"""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
venv = os.environ.get("MOE_PYTHON_VENV") or os.path.expanduser("~/.cache/moe-cluster/venv")
python = os.path.join(venv, "bin", "python")
if not os.access(python, os.X_OK):
    sys.exit(f"FAIL: no Python client test venv at {venv}: run scripts/install-deps.sh "
             "(or set MOE_PYTHON_VENV to a venv with numpy, pycapnp and pytest)")
os.environ["MOE_BIN_DIR"] = os.path.abspath(sys.argv[1])
os.environ.setdefault("PYTHONDONTWRITEBYTECODE", "1")
tests = os.path.join(ROOT, "client", "python", "tests")
os.execv(python, [python, "-m", "pytest", tests, "-p", "no:cacheprovider", "-rsx", "-q",
                  *sys.argv[2:]])
