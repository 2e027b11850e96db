#!/usr/bin/env python3
"""Turn a local moe-cluster YAML into the one the Kubernetes deployment mounts.

The local file (deploy/local/default-cluster.yaml) says where each process listens on one
machine. On Kubernetes the same placement runs as a StatefulSet: pod i (`moe-expert-i`) serves
shards[i] (moe-expert --shard-index-from-hostname) and is reached at its stable DNS name through
the headless Service. This tool rewrites only what differs between the two worlds and carries
everything else over unchanged:

  shards[i].listen  -> <statefulset>-<i>.<headless-service>.<namespace>.svc.<domain>:<rpc-port>
  shards[i].admin   -> the same host, :<admin-port>
  router.listen     -> <router-service>.<namespace>.svc.<domain>:<router-port>  (what clients
                       using --config dial; the pod itself binds 0.0.0.0 via --listen)
  router.admin      -> the same host, :<router-admin-port>
  model.path        -> the mount path of the weights volume
  timeouts.drain_ms -> --drain-ms when the local file leaves it at 0 (a pod must keep serving
                       while endpoints are removed); a non-zero value is kept

Names, experts, layers, shared_expert, devices (unless --shard-device), max_tokens, batching
(router.batching, router.max_queued_tokens, expert: and shards[].expert:), the
routing: section and the other timeouts are copied as they are. BLAS `threads` are a per-machine choice and are not carried over:
--shard-threads / --router-threads set them for the pods. With --podmonitor-patch it also writes a kustomize JSON patch for the expert
PodMonitor that labels each pod's metrics with its shard name (shard="<name of shards[i]>" for
pod <statefulset>-<i>), the label the alert rules and dashboards group by.

Usage:
  python3 tools/k8s_cluster_config.py deploy/local/default-cluster.yaml --namespace moe \\
      -o deploy/k8s/overlays/gpu/cluster.yaml \\
      --podmonitor-patch deploy/k8s/overlays/gpu/expert-shard-labels.yaml
deploy/k8s/generate.py runs it for every overlay (and `generate.py --check` is a test).
Needs python3 and PyYAML (Debian: python3-yaml).
"""

import argparse
import json
import re
import sys

import yaml

# The schema of common/config.cc: unknown keys are errors there, so they are errors here too.
TOP_KEYS = ("model", "router", "shards", "timeouts", "routing", "expert")
MODEL_KEYS = ("path",)
ROUTER_KEYS = ("listen", "admin", "device", "max_tokens", "threads", "batching", "max_queued_tokens")
SHARD_KEYS = ("name", "listen", "admin", "device", "experts", "layers", "threads", "shared_expert",
              "expert")
TIMEOUT_KEYS = ("request_ms", "shard_call_ms", "connect_ms", "drain_ms")
ROUTING_KEYS = ("noisy_topk", "capacity_factor", "capacity_renormalize", "missing_expert")

DEFAULTS = {
    "namespace": "moe",
    "statefulset": "moe-expert",
    "headless_service": None,  # = statefulset
    "router_service": "moe-router",
    "cluster_domain": "cluster.local",
    "rpc_port": 7201,
    "admin_port": 9201,
    "router_port": 7100,
    "router_admin_port": 9100,
    "model_path": "/models",
    "drain_ms": 15000,
    "shard_device": None,
    "shard_threads": None,
    "router_threads": None,
    "shard_hosts": None,
    "router_host": None,
}

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


class ConfigError(Exception):
    pass


def _check_keys(node, where, allowed):
    if not isinstance(node, dict):
        raise ConfigError(f"{where or 'top level'}: expected a mapping")
    for key in node:
        if key not in allowed:
            name = f"{where}.{key}" if where else str(key)
            raise ConfigError(f"{name}: unknown key (expected one of: {', '.join(allowed)})")


def _options(overrides):
    opts = dict(DEFAULTS)
    for k, v in overrides.items():
        if k not in opts:
            raise TypeError(f"unknown option {k}")
        if v is not None:
            opts[k] = v
    if not opts["headless_service"]:
        opts["headless_service"] = opts["statefulset"]
    for key in ("namespace", "statefulset", "headless_service", "router_service"):
        if not _DNS_LABEL.match(opts[key]) or len(opts[key]) > 63:
            raise ConfigError(f"--{key.replace('_', '-')}: '{opts[key]}' is not a DNS label")
    for key in ("rpc_port", "admin_port", "router_port", "router_admin_port"):
        if not 1 <= int(opts[key]) <= 65535:
            raise ConfigError(f"--{key.replace('_', '-')}: {opts[key]} is not in 1..65535")
    if not str(opts["model_path"]).startswith("/"):
        raise ConfigError(f"--model-path: '{opts['model_path']}' must be absolute (a mount path)")
    return opts


def pod_name(opts, i):
    return f"{opts['statefulset']}-{i}"


def shard_host(opts, i):
    """The stable DNS name of StatefulSet pod i through the headless Service."""
    if opts["shard_hosts"]:
        return opts["shard_hosts"][i]
    return (f"{pod_name(opts, i)}.{opts['headless_service']}.{opts['namespace']}"
            f".svc.{opts['cluster_domain']}")


def router_host(opts):
    if opts["router_host"]:
        return opts["router_host"]
    return f"{opts['router_service']}.{opts['namespace']}.svc.{opts['cluster_domain']}"


def convert(local, **overrides):
    """local: the parsed local YAML (a dict). Returns the Kubernetes cluster config as a dict
    whose key order is the order written out."""
    opts = _options(overrides)
    _check_keys(local, "", TOP_KEYS)
    model = local.get("model")
    if model is None:
        raise ConfigError("model: missing (needs model.path)")
    _check_keys(model, "model", MODEL_KEYS)
    router = local.get("router") or {}
    _check_keys(router, "router", ROUTER_KEYS)
    shards = local.get("shards")
    if not isinstance(shards, list) or not shards:
        raise ConfigError("shards: expected a non-empty list")
    timeouts = local.get("timeouts") or {}
    _check_keys(timeouts, "timeouts", TIMEOUT_KEYS)
    routing = local.get("routing") or {}
    _check_keys(routing, "routing", ROUTING_KEYS)
    if opts["shard_hosts"] and len(opts["shard_hosts"]) != len(shards):
        raise ConfigError(f"--shard-hosts: {len(opts['shard_hosts'])} hosts for "
                          f"{len(shards)} shards")

    out = {"model": {"path": opts["model_path"]}}
    r = {
        "listen": f"{router_host(opts)}:{opts['router_port']}",
        "admin": f"{router_host(opts)}:{opts['router_admin_port']}",
    }
    for key in ("device", "max_tokens", "batching", "max_queued_tokens"):
        if key in router:
            r[key] = router[key]
    # BLAS threads split one machine's cores between its processes; a pod has its own CPU limit,
    # so the local values are not carried over (--router-threads / --shard-threads set them).
    if opts.get("router_threads"):
        r["threads"] = opts["router_threads"]
    out["router"] = r

    names = set()
    out_shards = []
    for i, s in enumerate(shards):
        where = f"shards[{i}]"
        _check_keys(s, where, SHARD_KEYS)
        for required in ("name", "listen", "experts"):
            if required not in s:
                raise ConfigError(f"{where}.{required}: missing")
        name = str(s["name"])
        if name in names:
            raise ConfigError(f"{where}.name: shard name '{name}' used twice")
        names.add(name)
        o = {
            "name": name,
            "listen": f"{shard_host(opts, i)}:{opts['rpc_port']}",
            "admin": f"{shard_host(opts, i)}:{opts['admin_port']}",
        }
        if opts["shard_device"]:
            o["device"] = opts["shard_device"]
        elif "device" in s:
            o["device"] = s["device"]
        o["experts"] = s["experts"]
        if "layers" in s:
            o["layers"] = s["layers"]
        if "shared_expert" in s:
            o["shared_expert"] = s["shared_expert"]
        if "expert" in s:
            o["expert"] = s["expert"]
        if opts.get("shard_threads"):
            o["threads"] = opts["shard_threads"]
        out_shards.append(o)
    out["shards"] = out_shards

    t = {}
    for key in TIMEOUT_KEYS:
        if key in timeouts:
            t[key] = timeouts[key]
    if not t.get("drain_ms"):
        t["drain_ms"] = int(opts["drain_ms"])
    out["timeouts"] = t
    if routing:
        out["routing"] = {k: routing[k] for k in ROUTING_KEYS if k in routing}
    if local.get("expert"):
        out["expert"] = local["expert"]
    return out


def _scalar(v):
    """A YAML scalar: plain when it reads back as the same value, else a JSON (double-quoted)
    string, which is valid YAML."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    s = str(v)
    # Strings starting with a digit ("0-3" expert ranges) stay quoted, as people write them.
    if re.match(r"^[A-Za-z_./:][A-Za-z0-9_./:@-]*$", s):
        try:
            if yaml.safe_load(s) == s:
                return s
        except yaml.YAMLError:
            pass
    return json.dumps(s)


def _value(v):
    if isinstance(v, list):
        return "[" + ", ".join(_scalar(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}: {_value(x)}" for k, x in v.items()) + "}"
    return _scalar(v)


def render(config, header_lines):
    """The config dict as YAML text, in the layout of deploy/local/default-cluster.yaml."""
    lines = [f"# {h}" if h else "#" for h in header_lines]
    for section in ("model", "router"):
        lines.append(f"{section}:")
        for k, v in config[section].items():
            lines.append(f"  {k}: {_value(v)}")
    lines.append("shards:")
    for s in config["shards"]:
        first = True
        for k, v in s.items():
            lines.append(f"  {'- ' if first else '  '}{k}: {_value(v)}")
            first = False
    for section in ("timeouts", "routing", "expert"):
        if section not in config:
            continue
        lines.append(f"{section}:")
        for k, v in config[section].items():
            lines.append(f"  {k}: {_value(v)}")
    return "\n".join(lines) + "\n"


def _relabel_regex_escape(s):
    return re.sub(r"([\\.+*?()|\[\]{}^$])", r"\\\1", s)


def podmonitor_patch(config, header_lines, **overrides):
    """A kustomize JSON6902 patch (YAML list of ops) for the expert PodMonitor: one relabeling
    per shard, pod <statefulset>-<i> -> shard="<shards[i].name>"."""
    opts = _options(overrides)
    lines = [f"# {h}" if h else "#" for h in header_lines]
    lines += [
        "- op: add",
        "  path: /spec/podMetricsEndpoints/0/relabelings",
        "  value:",
    ]
    for i, s in enumerate(config["shards"]):
        lines += [
            "    - sourceLabels: [__meta_kubernetes_pod_name]",
            f"      regex: {json.dumps(_relabel_regex_escape(pod_name(opts, i)))}",
            "      targetLabel: shard",
            f"      replacement: {json.dumps(s['name'].replace('$', '$$'))}",
        ]
    return "\n".join(lines) + "\n"


def default_header(source, what="cluster config"):
    return [
        f"Kubernetes {what} generated by tools/k8s_cluster_config.py from {source}.",
        "Do not edit: change the local YAML (or the generator options) and regenerate",
        "(deploy/k8s/generate.py for the overlays; see deploy/k8s/README.md).",
    ]


def load_local(path):
    with open(path, encoding="utf-8") as f:
        try:
            doc = yaml.safe_load(f)
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: invalid YAML: {e}") from e
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return doc


def main(argv=None):
    ap = argparse.ArgumentParser(
        description="Write the Kubernetes cluster YAML for a local moe-cluster YAML.")
    ap.add_argument("input", help="local cluster YAML (e.g. deploy/local/default-cluster.yaml)")
    ap.add_argument("-o", "--output", help="where to write (default: stdout)")
    ap.add_argument("--namespace", help=f"Kubernetes namespace (default {DEFAULTS['namespace']})")
    ap.add_argument("--statefulset",
                    help=f"expert StatefulSet name (default {DEFAULTS['statefulset']})")
    ap.add_argument("--headless-service", help="headless Service name (default: --statefulset)")
    ap.add_argument("--router-service",
                    help=f"router Service name (default {DEFAULTS['router_service']})")
    ap.add_argument("--cluster-domain",
                    help=f"cluster DNS domain (default {DEFAULTS['cluster_domain']})")
    ap.add_argument("--rpc-port", type=int, help="shard RPC port (default 7201)")
    ap.add_argument("--admin-port", type=int, help="shard admin port (default 9201)")
    ap.add_argument("--router-port", type=int, help="router RPC port (default 7100)")
    ap.add_argument("--router-admin-port", type=int, help="router admin port (default 9100)")
    ap.add_argument("--model-path",
                    help=f"model.path: where the weights volume is mounted "
                         f"(default {DEFAULTS['model_path']})")
    ap.add_argument("--drain-ms", type=int,
                    help=f"timeouts.drain_ms when the input's is 0 or unset "
                         f"(default {DEFAULTS['drain_ms']})")
    ap.add_argument("--shard-device", help="override every shard's device (e.g. cpu)")
    ap.add_argument("--shard-threads", type=int, help="BLAS threads per shard pod (its CPU limit)")
    ap.add_argument("--router-threads", type=int, help="BLAS threads per router pod")
    ap.add_argument("--shard-hosts",
                    help="comma-separated host per shard instead of the StatefulSet DNS names "
                         "(for running the same placement outside Kubernetes)")
    ap.add_argument("--router-host", help="router host instead of the Service DNS name")
    ap.add_argument("--source-name",
                    help="how the header names the input (default: the path as given)")
    ap.add_argument("--podmonitor-patch", metavar="FILE",
                    help="also write the expert PodMonitor shard-label patch to FILE")
    a = ap.parse_args(argv)

    overrides = {
        "namespace": a.namespace, "statefulset": a.statefulset,
        "headless_service": a.headless_service, "router_service": a.router_service,
        "cluster_domain": a.cluster_domain, "rpc_port": a.rpc_port, "admin_port": a.admin_port,
        "router_port": a.router_port, "router_admin_port": a.router_admin_port,
        "model_path": a.model_path, "drain_ms": a.drain_ms, "shard_device": a.shard_device,
        "shard_threads": a.shard_threads, "router_threads": a.router_threads,
        "shard_hosts": a.shard_hosts.split(",") if a.shard_hosts else None,
        "router_host": a.router_host,
    }
    source = a.source_name or a.input
    try:
        config = convert(load_local(a.input), **overrides)
        text = render(config, default_header(source))
        patch = (podmonitor_patch(config, default_header(source, "PodMonitor patch"), **overrides)
                 if a.podmonitor_patch else None)
    except (ConfigError, OSError) as e:
        print(f"k8s_cluster_config: {e}", file=sys.stderr)
        return 2
    if a.output:
        with open(a.output, "w", encoding="utf-8") as f:
            f.write(text)
    else:
        sys.stdout.write(text)
    if patch is not None:
        with open(a.podmonitor_patch, "w", encoding="utf-8") as f:
            f.write(patch)
    return 0


if __name__ == "__main__":
    sys.exit(main())
