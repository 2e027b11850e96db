"""The wire schema, loaded once from the copy that ships inside this package.

``moe.capnp`` imports ``/capnp/c++.capnp`` (a C++ namespace annotation). pycapnp ships that file
in its own package directory (``<site-packages>/capnp/c++.capnp``), so the directory above pycapnp
is the import path; no system include directory is needed.
"""

from __future__ import annotations

import os

import capnp

SCHEMA_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "moe.capnp")
_PYCAPNP_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(capnp.__file__)))

moe = capnp.load(SCHEMA_PATH, imports=[_PYCAPNP_ROOT])
