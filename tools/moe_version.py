"""The moe-cluster version for the Python tools' --version: project(VERSION) of the top-level
CMakeLists.txt, the one place it is written (the C++ programs read it through the generated
common/version.h; the build stamps it into the copy of moe-placement in bin/)."""

import os
import re

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def version(repo=REPO):
    """'0.1.0', or 'unknown' when the CMakeLists.txt is not there or names no version."""
    try:
        with open(os.path.join(repo, "CMakeLists.txt"), encoding="utf-8") as f:
            m = re.search(r"^project\(\s*\S+\s+VERSION\s+([0-9][0-9.]*)", f.read(), re.M)
    except OSError:
        return "unknown"
    return m.group(1) if m else "unknown"
