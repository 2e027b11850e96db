#!/usr/bin/env python3
"""Turn a local moe-cluster YAML into the one the Kubernetes deployment mounts.

The local file (deploy/local/default-cluster.yaml) says where each process listens on one
machine. On Kubernetes each local shard becomes a replica group: --replicas R identical pods that
all serve that shard's experts, so the router sees R replicas of every expert and losing one pod
(a rolling update, a node drain) loses no request. Group k is the StatefulSet <statefulset>-g<k>
(deploy/k8s/base/expert-group, instantiated per group by the files --groups-dir writes); its pod
<statefulset>-g<k>-<i> serves the shards[] entry named exactly like the pod
(moe-expert --shard $(POD_NAME)) and is reached at its stable DNS name through the headless
Service. This tool rewrites only what differs between the two worlds and carries everything else
over unchanged:

  shards[k]         -> R entries, one per pod of group k: name <statefulset>-g<k>-<i>, the same
                       experts, layers, device, shared_expert and expert: block for all R
  listen            -> <pod>.<headless-service>.<namespace>.svc.<domain>:<rpc-port>
  admin             -> the same host, :<admin-port>
  router.listen     -> <router-service>.<namespace>.svc.<domain>:<router-port>  (what clients
                       using --config dial; the pod itself binds 0.0.0.0 via --listen)
  router.admin      -> the same host, :<router-admin-port>
  model.path        -> the mount path of the weights volume
  timeouts.drain_ms -> --drain-ms when the local file leaves it at 0 (a pod must keep serving
                       while endpoints are removed); a non-zero value is kept

With --tls-dir DIR (where the pods mount the cert-manager Secret: ca.crt, tls.crt, tls.key) it
adds `tls:` (mutual TLS on every RPC port) and `admin: {tls: ..., expose_paths: ...}`: the admin
planes serve HTTPS without client certificates (kubelet probes present none) and only
--admin-expose-paths (default /metrics /healthz /readyz: no POST /admin/placement over the
network). tls_manifests() writes the cert-manager Issuers + Certificate (DNS names: the router
Service's names and every shard pod's through the headless Service) and the patches that mount
the Secret, switch the probes and monitors to HTTPS and admit router clients only from
--client-namespaces (deploy/k8s/generate.py, overlays with `tls_dir`).

Names, experts, layers, shared_expert, devices (unless --shard-device), max_tokens, batching
(router.batching, router.max_queued_tokens, expert: and shards[].expert:), the
routing: section and the other timeouts are copied as they are. BLAS `threads` are a per-machine choice and are not carried over:
--shard-threads / --router-threads set them for the pods. With --podmonitor-patch it also writes a kustomize JSON patch for the expert
PodMonitor that labels each pod's metrics with its shard name (shard="<name of shards[i]>" for
pod <statefulset>-<i>), the label the alert rules and dashboards group by.

--replicas 1 (the default) keeps the layout without groups: one StatefulSet <statefulset> whose
pod i serves shards[i] under its local name (moe-expert --shard-index-from-hostname). The
overlays use --replicas 2 (deploy/k8s/generate.py); tests/deploy/check_policy.py requires >= 2.

Usage:
  python3 tools/k8s_cluster_config.py deploy/local/default-cluster.yaml --namespace moe \\
      --replicas 2 -o deploy/k8s/overlays/gpu/cluster.yaml \\
      --podmonitor-patch deploy/k8s/overlays/gpu/expert-shard-labels.yaml \\
      --groups-dir deploy/k8s/overlays/gpu/expert-groups
deploy/k8s/generate.py runs it for every overlay (and `generate.py --check` is a test).
Needs python3 and PyYAML (Debian: python3-yaml).
"""

import argparse
import json
import os
import posixpath
import re
import sys

import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import moe_version  # noqa: E402 (tools/moe_version.py, beside this file)

REPO = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

# The schema of common/config.cc: unknown keys are errors there, so they are errors here too.
TOP_KEYS = ("model", "router", "shards", "timeouts", "routing", "expert", "tls", "admin")
ADMIN_KEYS = ("tls", "expose_paths")
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
    "replicas": 1,
    "tls_dir": None,  # where the pods mount the TLS Secret; None: no TLS
    "tls_secret": "moe-tls",  # that Secret (cert-manager writes it)
    "admin_expose_paths": None,  # with TLS: ADMIN_EXPOSE_DEFAULT
    "client_namespaces": None,  # namespaces whose pods may call the router (client_namespaces_patch)
}

# The file names cert-manager gives the keys of a Certificate's Secret.
TLS_FILES = {"ca": "ca.crt", "cert": "tls.crt", "key": "tls.key"}
# What the admin planes serve over the network with TLS on: what probes and Prometheus need.
ADMIN_EXPOSE_DEFAULT = ["/metrics", "/healthz", "/readyz"]

# The label that tells the pods (and the PodDisruptionBudget) of one replica group apart; the
# group kustomizations add it to every selector of their StatefulSet and PDB.
GROUP_LABEL = "moe-cluster/expert-group"
# Longest StatefulSet name whose pods' controller-revision-hash label (<name>-<10 chars>) and
# hostnames stay valid.
MAX_STATEFULSET_NAME = 52

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
    if opts["tls_dir"] and not str(opts["tls_dir"]).startswith("/"):
        raise ConfigError(f"--tls-dir: '{opts['tls_dir']}' must be absolute (a mount path)")
    if opts["tls_dir"] and not _DNS_LABEL.match(opts["tls_secret"]):
        raise ConfigError(f"--tls-secret: '{opts['tls_secret']}' is not a valid Secret name")
    for p in opts["admin_expose_paths"] or []:
        if not str(p).startswith("/"):
            raise ConfigError(f"--admin-expose-paths: '{p}' must start with /")
    for n in opts["client_namespaces"] or []:
        if not _DNS_LABEL.match(str(n)):
            raise ConfigError(f"--client-namespaces: '{n}' is not a namespace name")
    if isinstance(opts["replicas"], bool) or not isinstance(opts["replicas"], int) \
            or opts["replicas"] < 1:
        raise ConfigError(f"--replicas: {opts['replicas']!r} must be an integer >= 1 (pods per "
                          f"expert set; the overlays use 2)")
    return opts


def grouped(opts):
    """True when each local shard becomes a replica group of its own StatefulSet."""
    return opts["replicas"] > 1


def pod_name(opts, i):
    """Without groups: the pod of the one StatefulSet that serves shards[i]."""
    return f"{opts['statefulset']}-{i}"


def group_name(k):
    return f"g{k}"


def group_statefulset(opts, k):
    return f"{opts['statefulset']}-{group_name(k)}"


def pod_host(opts, pod):
    """The stable DNS name of a StatefulSet pod through the headless Service."""
    return f"{pod}.{opts['headless_service']}.{opts['namespace']}.svc.{opts['cluster_domain']}"


def shard_host(opts, i):
    """The host of shards[i] of the layout without groups."""
    if opts["shard_hosts"]:
        return opts["shard_hosts"][i]
    return pod_host(opts, pod_name(opts, i))


def replica_groups(local, **overrides):
    """The replica groups of a local config (empty without --replicas >= 2): one dict per local
    shard k with its group name g<k>, StatefulSet, local shard name and experts, and its pods,
    which are also the names of its shards[] entries in the converted config."""
    opts = _options(overrides)
    if not grouped(opts):
        return []
    out = []
    for k, s in enumerate(local.get("shards") or []):
        sts = group_statefulset(opts, k)
        out.append({"name": group_name(k), "statefulset": sts, "source": str(s.get("name")),
                    "experts": s.get("experts"),
                    "pods": [f"{sts}-{i}" for i in range(opts["replicas"])]})
    return out


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
    admin = local.get("admin") or {}
    _check_keys(admin, "admin", ADMIN_KEYS)
    if (local.get("tls") or admin.get("tls")) and not opts["tls_dir"]:
        raise ConfigError("tls: the local file's certificate paths are this machine's; give "
                          "--tls-dir (where the pods mount the TLS Secret) to keep TLS on")
    entries = len(shards) * opts["replicas"]
    if opts["shard_hosts"] and len(opts["shard_hosts"]) != entries:
        raise ConfigError(f"--shard-hosts: {len(opts['shard_hosts'])} hosts for "
                          f"{entries} shards" + (f" ({len(shards)} groups x {opts['replicas']})"
                                                 if grouped(opts) else ""))
    if grouped(opts):
        longest = group_statefulset(opts, len(shards) - 1)
        if len(longest) > MAX_STATEFULSET_NAME:
            raise ConfigError(f"--statefulset: group StatefulSet name '{longest}' is longer than "
                              f"{MAX_STATEFULSET_NAME} characters")

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
        # Without groups: one entry, the local name, at pod i. A group: R entries named like its
        # pods (each pod finds its own entry by name: --shard $(POD_NAME)), every field but the
        # addresses the same, so the router sees R replicas of the same experts.
        if grouped(opts):
            sts = group_statefulset(opts, i)
            pods = [(f"{sts}-{r}", f"{sts}-{r}") for r in range(opts["replicas"])]
        else:
            pods = [(name, pod_name(opts, i))]
        for entry_name, pod in pods:
            j = len(out_shards)
            host = opts["shard_hosts"][j] if opts["shard_hosts"] else pod_host(opts, pod)
            o = {
                "name": entry_name,
                "listen": f"{host}:{opts['rpc_port']}",
                "admin": f"{host}:{opts['admin_port']}",
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
    expose = opts["admin_expose_paths"] or admin.get("expose_paths")
    if opts["tls_dir"]:
        files = {k: posixpath.join(opts["tls_dir"], f) for k, f in TLS_FILES.items()}
        out["tls"] = dict(files)
        # kubelet's HTTPS probes verify nothing and present no certificate, so the admin planes
        # cannot require one; they serve only what probes and scrapes read instead.
        out["admin"] = {"tls": dict(files, client_auth=False),
                        "expose_paths": list(expose or ADMIN_EXPOSE_DEFAULT)}
    elif expose:
        out["admin"] = {"expose_paths": list(expose)}
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


def render(config, header_lines, groups=()):
    """The config dict as YAML text, in the layout of deploy/local/default-cluster.yaml. `groups`
    (replica_groups()) adds a comment before each group's entries."""
    lines = [f"# {h}" if h else "#" for h in header_lines]
    for section in ("model", "router"):
        lines.append(f"{section}:")
        for k, v in config[section].items():
            lines.append(f"  {k}: {_value(v)}")
    lines.append("shards:")
    first_pod = {g["pods"][0]: g for g in groups}
    for s in config["shards"]:
        g = first_pod.get(s["name"])
        if g:
            lines.append(f"  # replica group {g['name']} = local shard {_scalar(g['source'])}: "
                         f"StatefulSet {g['statefulset']}, {len(g['pods'])} pods")
        first = True
        for k, v in s.items():
            lines.append(f"  {'- ' if first else '  '}{k}: {_value(v)}")
            first = False
    for section in ("timeouts", "routing", "expert", "tls", "admin"):
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
    per shards[] entry, its pod -> shard="<its name>" (without groups pod <statefulset>-<i> for
    shards[i]; with groups every pod of every group, named like its entry)."""
    opts = _options(overrides)
    lines = [f"# {h}" if h else "#" for h in header_lines]
    lines += [
        "- op: add",
        "  path: /spec/podMetricsEndpoints/0/relabelings",
        "  value:",
    ]
    for i, s in enumerate(config["shards"]):
        pod = s["name"] if grouped(opts) else pod_name(opts, i)
        lines += [
            "    - sourceLabels: [__meta_kubernetes_pod_name]",
            f"      regex: {json.dumps(_relabel_regex_escape(pod))}",
            "      targetLabel: shard",
            f"      replacement: {json.dumps(s['name'].replace('$', '$$'))}",
        ]
    return "\n".join(lines) + "\n"


def group_kustomizations(groups, header_lines, base, **overrides):
    """The kustomizations that instantiate deploy/k8s/base/expert-group once per replica group:
    {relative path: text}, relative to the directory that holds them (an overlay's
    expert-groups/). `base` is the path of base/expert-group relative to a group's directory.
    Group g<k>: the StatefulSet and PodDisruptionBudget named <statefulset> there become
    <statefulset>-g<k>, with replicas R and the label GROUP_LABEL=g<k> on their selectors, pod
    template, anti-affinity and spread constraints, so each selects only its own group's pods."""
    opts = _options(overrides)
    head = [f"# {h}" if h else "#" for h in header_lines]
    files = {"kustomization.yaml": "\n".join(head + [
        "# The replica groups of cluster.yaml: each a StatefulSet + PodDisruptionBudget made from",
        "# base/expert-group (see the kustomization in each directory).",
        "apiVersion: kustomize.config.k8s.io/v1beta1",
        "kind: Kustomization",
        "resources:",
    ] + [f"  - {g['name']}" for g in groups]) + "\n"}
    for g in groups:
        files[f"{g['name']}/kustomization.yaml"] = "\n".join(head + [
            f"# Replica group {g['name']}: local shard {_scalar(g['source'])} (experts "
            f"{_value(g['experts'])}) on {len(g['pods'])} identical pods,",
            f"# {', '.join(g['pods'])}, each serving the shards[] entry of its name.",
            "apiVersion: kustomize.config.k8s.io/v1beta1",
            "kind: Kustomization",
            "resources:",
            f"  - {base}",
            f"nameSuffix: -{g['name']}",
            "labels:",
            "  - pairs:",
            f"      {GROUP_LABEL}: {g['name']}",
            "    includeSelectors: true   # StatefulSet, PDB, anti-affinity: this group's pods",
            "    includeTemplates: true",
            "replicas:",
            f"  - name: {opts['statefulset']}",
            f"    count: {len(g['pods'])}",
        ]) + "\n"
    return files


def _tls_names(opts):
    """(router server name, shard-pod server name, DNS names of the Certificate)."""
    ns, domain = opts["namespace"], opts["cluster_domain"]
    rs, hs = opts["router_service"], opts["headless_service"]
    router = f"{rs}.{ns}.svc.{domain}"
    pods = f"{hs}.{ns}.svc.{domain}"
    names = [rs, f"{rs}.{ns}", f"{rs}.{ns}.svc", router,  # clients dial the router Service
             pods, f"*.{pods}", f"*.{hs}.{ns}.svc"]  # every shard pod, however many groups
    if opts["router_host"]:
        names.append(opts["router_host"])
    for h in opts["shard_hosts"] or []:
        names.append(h)
    return router, pods, list(dict.fromkeys(names))


def tls_manifests(header_lines, **overrides):
    """{file name: text} of an overlay with --tls-dir: tls.yaml (a self-signed cert-manager Issuer,
    the instance's CA Certificate and CA Issuer, and the Certificate whose Secret every router and
    shard pod mounts), tls-router.yaml / tls-expert.yaml (strategic-merge patches: the Secret
    mounted read-only at --tls-dir, HTTPS probes) and tls-router-monitor.yaml /
    tls-expert-monitor.yaml (JSON patches: the monitors scrape over HTTPS, verifying the CA).
    Object names are before the overlay's namePrefix; Secret names (--tls-secret) are final."""
    opts = _options(overrides)
    if not opts["tls_dir"]:
        raise ConfigError("tls manifests need --tls-dir")
    secret, d = opts["tls_secret"], opts["tls_dir"]
    router_name, pods_name, dns = _tls_names(opts)
    head = [f"# {h}" if h else "#" for h in header_lines]
    out = {}
    out["tls.yaml"] = "\n".join(head + [
        "# cert-manager (https://cert-manager.io) issues this instance's certificates: a self-signed",
        "# Issuer makes its CA, the CA Issuer signs the one certificate every router and shard pod",
        "# mounts (server and client: the router is the shards' client). Replace the first two with",
        "# your own CA or ClusterIssuer in production; clients (moe-client --config, the Python",
        "# client) need a certificate from the same CA when tls.client_auth is on (the default).",
        "apiVersion: cert-manager.io/v1",
        "kind: Issuer",
        "metadata:",
        "  name: moe-selfsigned",
        "spec:",
        "  selfSigned: {}",
        "---",
        "apiVersion: cert-manager.io/v1",
        "kind: Certificate",
        "metadata:",
        "  name: moe-ca",
        "spec:",
        "  isCA: true",
        f"  commonName: {secret}-ca",
        f"  secretName: {secret}-ca",
        "  duration: 87600h   # 10 years",
        "  privateKey: {algorithm: ECDSA, size: 256}",
        "  issuerRef: {name: moe-selfsigned, kind: Issuer, group: cert-manager.io}",
        "---",
        "apiVersion: cert-manager.io/v1",
        "kind: Issuer",
        "metadata:",
        "  name: moe-ca",
        "spec:",
        "  ca:",
        f"    secretName: {secret}-ca",
        "---",
        "# Secret keys: ca.crt, tls.crt, tls.key — the cluster YAML's tls: and admin.tls: files.",
        "# Renewed 15 days before expiry; the kubelet updates the mounted files and the services",
        "# read them again on SIGHUP (or at their next restart).",
        "apiVersion: cert-manager.io/v1",
        "kind: Certificate",
        "metadata:",
        "  name: moe-tls",
        "spec:",
        f"  secretName: {secret}",
        "  duration: 2160h   # 90 days",
        "  renewBefore: 360h",
        "  privateKey: {algorithm: ECDSA, size: 256, rotationPolicy: Always}",
        "  usages: [digital signature, key encipherment, server auth, client auth]",
        "  dnsNames:",
    ] + [f"    - {json.dumps(n)}" for n in dns] + [
        "  issuerRef: {name: moe-ca, kind: Issuer, group: cert-manager.io}",
    ]) + "\n"

    def workload(kind, name, container, what):
        return "\n".join(head + [
            f"# {what}: the TLS Secret at {d} (the cluster YAML's tls: files),",
            "# probes over HTTPS (kubelet verifies no certificate and sends none: admin.tls",
            "# client_auth is false).",
            "apiVersion: apps/v1",
            f"kind: {kind}",
            "metadata:",
            f"  name: {name}",
            "spec:",
            "  template:",
            "    spec:",
            "      containers:",
            f"        - name: {container}",
            "          startupProbe: {httpGet: {scheme: HTTPS}}",
            "          readinessProbe: {httpGet: {scheme: HTTPS}}",
            "          livenessProbe: {httpGet: {scheme: HTTPS}}",
            "          volumeMounts:",
            "            - name: tls",
            f"              mountPath: {d}",
            "              readOnly: true",
            "      volumes:",
            "        - name: tls",
            "          secret:",
            f"            secretName: {secret}",
            "            defaultMode: 288   # 0440: the pod's group (fsGroup) reads, nobody writes",
        ]) + "\n"
    out["tls-router.yaml"] = workload("Deployment", "moe-router", "router", "The routers")
    out["tls-expert.yaml"] = workload("StatefulSet", "moe-expert", "expert",
                                      "Every group's shard pods (targeted by label)")

    def monitor(endpoints, server, what):
        return "\n".join(head + [
            f"# {what} over HTTPS, verifying the admin certificate against the",
            f"# instance's CA (Secret {secret}, in the monitor's namespace) as {server}.",
            "- op: replace",
            f"  path: /spec/{endpoints}/0/scheme",
            "  value: https",
            "- op: add",
            f"  path: /spec/{endpoints}/0/tlsConfig",
            "  value:",
            f"    ca: {{secret: {{name: {secret}, key: ca.crt}}}}",
            f"    serverName: {server}",
        ]) + "\n"
    out["tls-router-monitor.yaml"] = monitor("endpoints", router_name,
                                             "Prometheus scrapes the routers")
    out["tls-expert-monitor.yaml"] = monitor("podMetricsEndpoints", pods_name,
                                             "Prometheus scrapes the shard pods")
    return out


def client_namespaces_patch(header_lines, **overrides):
    """A JSON patch for the router's NetworkPolicy (moe-router-ingress): its RPC port admits
    only pods of --client-namespaces (the base admits any peer that reaches the Service)."""
    opts = _options(overrides)
    names = opts["client_namespaces"]
    if not names:
        raise ConfigError("--client-namespaces: at least one namespace")
    head = [f"# {h}" if h else "#" for h in header_lines]
    return "\n".join(head + [
        "# Router RPC (the cluster's entry point) only from these namespaces' pods; admin stays",
        "# monitoring-only (base/networkpolicy.yaml).",
        "- op: replace",
        "  path: /spec/ingress/0",
        "  value:",
        "    from:",
        "      - namespaceSelector:",
        "          matchExpressions:",
        "            - key: kubernetes.io/metadata.name",
        "              operator: In",
        f"              values: [{', '.join(names)}]",
        "    ports:",
        "      - port: rpc",
        "        protocol: TCP",
    ]) + "\n"


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
    # nargs="?" and the check below: argparse would report the missing input before an unknown
    # flag (the likelier cause: a typo).
    ap.add_argument("input", nargs="?",
                    help="local cluster YAML (e.g. deploy/local/default-cluster.yaml)")
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
    ap.add_argument("--replicas", type=int,
                    help="pods per expert set: each local shard becomes a replica group of this "
                         "many identical pods (default 1: no groups, one pod per shard)")
    ap.add_argument("--tls-dir", metavar="DIR",
                    help="where the pods mount the TLS Secret (ca.crt, tls.crt, tls.key): adds "
                         "tls: and admin.tls: (HTTPS admin without client certificates)")
    ap.add_argument("--admin-expose-paths",
                    help="comma-separated admin.expose_paths (with --tls-dir default: "
                         + ",".join(ADMIN_EXPOSE_DEFAULT) + ")")
    ap.add_argument("--podmonitor-patch", metavar="FILE",
                    help="also write the expert PodMonitor shard-label patch to FILE")
    ap.add_argument("--groups-dir", metavar="DIR",
                    help="with --replicas >= 2, also write the kustomizations of the replica "
                         "groups to DIR (kustomization.yaml + g<k>/kustomization.yaml)")
    ap.add_argument("--group-base", metavar="PATH",
                    help="base/expert-group as seen from DIR/g<k> (default: the path of this "
                         "repository's deploy/k8s/base/expert-group relative to it)")
    ap.add_argument("--version", action="version",
                    version=f"k8s_cluster_config.py {moe_version.version()}")
    a = ap.parse_args(argv)
    if a.input is None:
        ap.error("the following arguments are required: input")

    overrides = {
        "namespace": a.namespace, "statefulset": a.statefulset,
        "headless_service": a.headless_service, "router_service": a.router_service,
        "cluster_domain": a.cluster_domain, "rpc_port": a.rpc_port, "admin_port": a.admin_port,
        "router_port": a.router_port, "router_admin_port": a.router_admin_port,
        "model_path": a.model_path, "drain_ms": a.drain_ms, "shard_device": a.shard_device,
        "shard_threads": a.shard_threads, "router_threads": a.router_threads,
        "shard_hosts": a.shard_hosts.split(",") if a.shard_hosts else None,
        "router_host": a.router_host, "replicas": a.replicas, "tls_dir": a.tls_dir,
        "admin_expose_paths": a.admin_expose_paths.split(",") if a.admin_expose_paths else None,
    }
    source = a.source_name or a.input
    try:
        local = load_local(a.input)
        config = convert(local, **overrides)
        groups = replica_groups(local, **overrides)
        text = render(config, default_header(source), groups)
        patch = (podmonitor_patch(config, default_header(source, "PodMonitor patch"), **overrides)
                 if a.podmonitor_patch else None)
        group_files = {}
        if a.groups_dir:
            if not groups:
                raise ConfigError("--groups-dir needs --replicas >= 2")
            base = a.group_base or os.path.relpath(
                os.path.join(REPO, "deploy", "k8s", "base", "expert-group"),
                os.path.join(os.path.abspath(a.groups_dir), groups[0]["name"]))
            group_files = group_kustomizations(groups, default_header(source, "kustomization"),
                                               base, **overrides)
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
    for rel, content in group_files.items():
        path = os.path.join(a.groups_dir, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            f.write(content)
    return 0


if __name__ == "__main__":
    sys.exit(main())
