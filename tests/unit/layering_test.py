#!/usr/bin/env python3
"""Keeps the libraries layered downward: moe_base -> moe_kernels -> services, with the reference
(client/reference/) beside the services and independent of the router.

Two kinds of rule, both plain tables below so a new layer or library is one more entry:
  INCLUDE_RULES  files of a layer (a folder, or a library's file list read from its CMakeLists.txt)
                 must not #include a header of a higher layer;
  LINK_RULES     a library's target_link_libraries must not name a higher library.
Exits 1 listing every violation, 0 when there is none.

Usage: layering_test.py [SOURCE_ROOT]   (default: the repository this file is in)
"""
import fnmatch
import pathlib
import re
import sys

ROOT = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else pathlib.Path(__file__).parents[2])

SOURCE_SUFFIXES = {".h", ".cc", ".cu", ".cuh"}

# Headers above moe_kernels: RPC, HTTP, YAML, metrics, the services, the client, tools, deploy.
ABOVE_KERNELS = [
    "common/config.h", "common/rpc_endpoint.h", "common/tensor_wire.h", "common/admin_server.h",
    "common/service_*.h", "common/metrics_util.h", "common/proto/*",
    "capnp/*", "yaml-cpp/*", "prometheus/*", "boost/*",
    "router_service/*", "expert_service/*", "client/*", "deploy/*", "tools/*", "tests/*",
]
# moe_base is below the kernels too.
ABOVE_BASE = ABOVE_KERNELS + ["kernels/*"]
# The reference is a plain in-process layer: no RPC, HTTP or metrics, and none of the services'
# code, above all not the router's (it is what the router is checked against). It may use the
# cluster config (routing options), the kernels and moe_base.
NOT_FOR_REFERENCE = [
    "router_service/*", "expert_service/*", "deploy/*", "tools/*", "tests/*", "client/*",
    "common/rpc_endpoint.h", "common/tensor_wire.h", "common/admin_server.h",
    "common/service_*.h", "common/metrics_util.h", "common/proto/*",
    "capnp/*", "prometheus/*", "boost/*",
]

# Where a layer's files come from: ("dir", folder) is every source file under it;
# ("cmake", CMakeLists.txt, target) is the target's add_library list plus each .cc's own header.
INCLUDE_RULES = [
    # (layer, files, forbidden include patterns, allowed exceptions)
    ("moe_base", ("cmake", "common/CMakeLists.txt", "moe_base"), ABOVE_BASE, []),
    ("kernels", ("dir", "kernels"), ABOVE_KERNELS, []),
    ("moe_synthetic_checkpoint", ("cmake", "tools/CMakeLists.txt", "moe_synthetic_checkpoint"),
     ABOVE_BASE, ["tools/synthetic_checkpoint.h"]),
    ("reference", ("dir", "client/reference"), NOT_FOR_REFERENCE, ["client/reference/*"]),
]

SERVICES_AND_UP = ["moe_router_lib", "moe_expert_lib", "moe_local_cluster", "moe_client_lib",
                   "moe_client", "moe_cluster_client", "moe_client_wire",
                   "moe_test_cluster", "moe_reference", "moe_synthetic_checkpoint"]
ABOVE_KERNELS_LINK = SERVICES_AND_UP + [
    "moe_common", "moe_proto", "yaml-cpp*", "prometheus-cpp::*", "Boost::*", "CapnProto::capnp*"]
ABOVE_BASE_LINK = ABOVE_KERNELS_LINK + ["moe_kernels"]

LINK_RULES = [
    # (CMakeLists.txt, target, forbidden link patterns)
    ("common/CMakeLists.txt", "moe_base", ABOVE_BASE_LINK),
    ("kernels/CMakeLists.txt", "moe_kernels", ABOVE_KERNELS_LINK),
    ("tools/CMakeLists.txt", "moe_synthetic_checkpoint", ABOVE_BASE_LINK),
    ("client/reference/CMakeLists.txt", "moe_reference",
     ["moe_router_lib", "moe_expert_lib", "moe_local_cluster", "moe_client_lib",
      "moe_test_cluster", "moe_synthetic_checkpoint"]),
]

INCLUDE_RE = re.compile(r'^\s*#\s*include\s*[<"]([^>"]+)[>"]')
KEYWORDS = {"STATIC", "SHARED", "OBJECT", "INTERFACE", "PUBLIC", "PRIVATE", "LINK_PUBLIC",
            "LINK_PRIVATE"}


def cmake_call_args(cmake_file, command, target):
    """The arguments after `target` of every `command(target ...)` call in cmake_file."""
    text = re.sub(r"#[^\n]*", "", (ROOT / cmake_file).read_text())
    calls = re.findall(rf"\b{command}\s*\(\s*{re.escape(target)}\s+([^)]*)\)", text)
    return [a for call in calls for a in call.split() if a not in KEYWORDS]


def layer_files(spec):
    if spec[0] == "dir":
        return sorted(p for p in (ROOT / spec[1]).rglob("*") if p.suffix in SOURCE_SUFFIXES)
    _, cmake_file, target = spec
    folder = (ROOT / cmake_file).parent
    files = set()
    for name in cmake_call_args(cmake_file, "add_library", target):
        path = folder / name
        if not path.is_file():
            raise SystemExit(f"{cmake_file}: {target} lists {name}, which does not exist")
        files.add(path)
        if path.suffix == ".cc" and path.with_suffix(".h").is_file():
            files.add(path.with_suffix(".h"))
    return sorted(files)


def matches(name, patterns):
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def main():
    problems = []
    for layer, spec, forbidden, allowed in INCLUDE_RULES:
        files = layer_files(spec)
        if not files:
            problems.append(f"{layer}: no files found for {spec} (is the rule out of date?)")
        for path in files:
            for lineno, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
                m = INCLUDE_RE.match(line)
                if m and matches(m.group(1), forbidden) and not matches(m.group(1), allowed):
                    problems.append(f"{path.relative_to(ROOT)}:{lineno}: includes {m.group(1)}, "
                                    f"which {layer} must not depend on")
        print(f"{layer}: {len(files)} files checked")
    for cmake_file, target, forbidden in LINK_RULES:
        deps = cmake_call_args(cmake_file, "target_link_libraries", target)
        if not deps:
            problems.append(f"{cmake_file}: no target_link_libraries({target} ...) found")
        for dep in deps:
            if matches(dep, forbidden):
                problems.append(f"{cmake_file}: {target} links {dep}, a higher library")
        print(f"{target}: links {' '.join(deps)}")
    for p in problems:
        print("LAYERING VIOLATION:", p, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
