#!/usr/bin/env python3
"""moe-placement: replicate the hottest experts of a cluster YAML, from the router's load.

The loop: observe -> place -> reload.

  curl -s http://127.0.0.1:9100/metrics > m.txt
  build/bin/moe-placement --config C.yaml --metrics m.txt --replicas 2 \\
      --memory-budget-mib 600 --out C2.yaml
  # restart the shards that got new experts with C2.yaml, then reload the router:
  curl -s --data-binary @C2.yaml http://127.0.0.1:9100/admin/placement   # or SIGHUP

Load. The router counts every token->expert assignment in
moe_expert_assignments_total{layer="L",expert="E"} (router_service/router_metrics.h). An
expert's share of layer L is its count over the layer's total (series with the same (layer,
expert) but other labels, e.g. from a federated Prometheus, are summed). An expert is hot when
its share on some MoE layer (the maximum over the layers) is >= F / E, F = --hot-share (default
1.5) and E the model's FFN experts. The counters are totals since the router started: scrape a
router that has served representative traffic.

Memory. One expert on one layer costs 3 x hidden x intermediate x 4 bytes (W1, W3, W2 in f32,
the shards' compute dtype); the shared expert (shared_expert: true) 3 x hidden x its width x 4.
A shard holds each of its experts on each of its layers (all MoE layers unless `layers:`
restricts it). The sizes and MoE layers come from the model's config.json (model.path, relative
to the YAML), read by the same per-family rules as common/checkpoint.cc.

Placement. Nothing is removed: every shard keeps the experts it lists, so every (layer, expert)
keeps at least its current holders (and the current placement must fit the budget, or it is an
error). Then, hottest expert first (by its maximum share; ties: the lower id), replicas are added
while the expert has fewer than N = --replicas holders: onto the shard with the most free budget
(ties: the earlier shard) that does not list it yet, serves a layer where it has fewer than N
holders, and has room for it on all its layers. Holders are counted per layer: an expert has N
replicas when each MoE layer has N shards serving it (a shard with `layers:` counts only on its
layers); placement is per expert, not per (layer, expert), because `experts:` applies to all of
a shard's layers. Experts are written as sorted lists; every other key is kept as it was
(comments are not). The same inputs give the same output.

Errors exit 2 with a message naming the problem. Needs python3 and PyYAML (Debian: python3-yaml).
"""

import argparse
import json
import math
import os
import re
import sys
import urllib.error
import urllib.request

import yaml

METRIC = "moe_expert_assignments_total"
# The same counter under its name before the metric migration (README), still read from saved files.
OLD_METRICS = ("moe_expert_tokens_routed_total",)
MIB = 1 << 20
BYTES_PER_WEIGHT = 4  # the shards compute in f32 whatever the checkpoint's dtype
# Set by the build in its copy bin/moe-placement (tools/stamp_version.cmake); None here, where
# --version reads the version from the source tree (tools/moe_version.py).
MOE_VERSION = None


class ConfigError(Exception):
    pass


# ---------------------------------------------------------------------------------------------
# Metrics

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\S+)?\s*$")
_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*(?:,|$)')


def _labels(text, where):
    out = {}
    pos = 0
    text = text.strip()
    while pos < len(text):
        m = _LABEL.match(text, pos)
        if not m:
            raise ConfigError(f"{where}: cannot parse the labels {{{text}}}")
        out[m.group(1)] = m.group(2)
        pos = m.end()
    return out


def parse_metrics(text, source="metrics"):
    """Prometheus text -> {(layer, expert): count}, summed over the series of each pair. Other
    metrics, # HELP / # TYPE lines and blank lines are ignored."""
    load = {}
    found = False
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#") or not line.startswith((METRIC,) + OLD_METRICS):
            continue
        m = _SAMPLE.match(line)
        if not m or m.group(1) not in (METRIC,) + OLD_METRICS:
            continue  # another metric whose name starts the same way
        where = f"{source}:{n}"
        labels = _labels(m.group(2) or "", where)
        try:
            layer, expert = int(labels["layer"]), int(labels["expert"])
        except KeyError as e:
            raise ConfigError(f"{where}: {METRIC} without the {e.args[0]} label") from None
        except ValueError:
            raise ConfigError(f"{where}: {METRIC} with a non-integer layer or expert label "
                              f"({labels.get('layer')!r}, {labels.get('expert')!r})") from None
        try:
            value = float(m.group(3))
        except ValueError:
            raise ConfigError(f"{where}: {METRIC} value {m.group(3)!r} is not a number") from None
        if not math.isfinite(value) or value < 0:
            raise ConfigError(f"{where}: {METRIC} value {m.group(3)} is not a finite count >= 0")
        found = True
        load[(layer, expert)] = load.get((layer, expert), 0.0) + value
    if not found:
        raise ConfigError(f"{source}: no {METRIC} series (is this the router's /metrics, with "
                          "metrics.per_expert: all?)")
    return load


def read_metrics(where):
    """The text behind an http(s) URL or in a file."""
    try:
        if re.match(r"^https?://", where):
            with urllib.request.urlopen(where, timeout=10) as r:
                return r.read().decode("utf-8", errors="replace")
        with open(where, encoding="utf-8", errors="replace") as f:
            return f.read()
    except (OSError, urllib.error.URLError, ValueError) as e:
        raise ConfigError(f"--metrics {where}: cannot read the metrics: {e}") from None


def shares(load, num_experts, moe_layers):
    """{layer: {expert: share}} over the MoE layers with traffic; series of other layers or of
    expert ids the model does not have are left out (and reported by the caller)."""
    out = {}
    for layer in moe_layers:
        counts = {e: load.get((layer, e), 0.0) for e in range(num_experts)}
        total = sum(counts.values())
        if total > 0:
            out[layer] = {e: c / total for e, c in counts.items()}
    return out


# ---------------------------------------------------------------------------------------------
# Model (config.json): sizes, FFN experts, MoE layers, as common/checkpoint.cc reads them

def _pos_int(cfg, key, path, default=None):
    v = cfg.get(key, default)
    if isinstance(v, bool) or not isinstance(v, int) or v < (0 if default == 0 else 1):
        raise ConfigError(f"{path}: key '{key}' missing or not a positive integer (got {v!r})")
    return v


def model_info(cfg, path):
    """{hidden, intermediate, shared_intermediate, experts (FFN), moe_layers}."""
    if not isinstance(cfg, dict):
        raise ConfigError(f"{path}: top level is not a JSON object")
    mt = cfg.get("model_type")
    layers_n = None
    if mt in ("MoE++", "moe_plus_plus"):
        n = cfg.get("num_experts")
        n = n[0] if isinstance(n, list) and n else n
        if isinstance(n, bool) or not isinstance(n, int) or n <= 4:
            raise ConfigError(f"{path}: key 'num_experts' must be an integer > 4 (got {n!r})")
        info = {"hidden": _pos_int(cfg, "hidden_size", path),
                "intermediate": _pos_int(cfg, "intermediate_size", path),
                "shared_intermediate": 0, "experts": n - 4}
        layers_n = _pos_int(cfg, "num_hidden_layers", path)
        step = _pos_int(cfg, "moe_expert_interval", path, 1)
        info["moe_layers"] = [l for l in range(layers_n) if step == 1 or (l + 1) % step == 0]
    elif mt == "yuan":
        mc = cfg.get("moe_config")
        if not isinstance(mc, dict):
            raise ConfigError(f"{path}: key 'moe_config' missing or not an object")
        info = {"hidden": _pos_int(cfg, "hidden_size", path),
                "intermediate": _pos_int(mc, "ffn_hidden_size", path),
                "shared_intermediate": 0, "experts": _pos_int(mc, "moe_num_experts", path)}
        info["moe_layers"] = list(range(_pos_int(cfg, "num_hidden_layers", path)))
    elif mt in ("mixtral", "olmoe", "qwen2_moe", "qwen3_moe", "deepseek_v2", "deepseek_v3"):
        qwen, deepseek = mt.startswith("qwen"), mt.startswith("deepseek")
        inter = _pos_int(cfg, "moe_intermediate_size" if qwen or deepseek
                         else "intermediate_size", path)
        experts_key = {"mixtral": "num_local_experts", "deepseek_v2": "n_routed_experts",
                       "deepseek_v3": "n_routed_experts"}.get(mt, "num_experts")
        info = {"hidden": _pos_int(cfg, "hidden_size", path), "intermediate": inter,
                "shared_intermediate": 0, "experts": _pos_int(cfg, experts_key, path)}
        layers_n = _pos_int(cfg, "num_hidden_layers", path)
        if qwen:
            if mt == "qwen2_moe":
                info["shared_intermediate"] = _pos_int(cfg, "shared_expert_intermediate_size",
                                                       path, 0)
            step = _pos_int(cfg, "decoder_sparse_step", path, 1)
            dense = cfg.get("mlp_only_layers") or []
            info["moe_layers"] = [l for l in range(layers_n)
                                  if l not in dense and (l + 1) % step == 0]
        elif deepseek:
            info["shared_intermediate"] = _pos_int(cfg, "n_shared_experts", path, 0) * inter
            first = _pos_int(cfg, "first_k_dense_replace", path, 0)
            freq = _pos_int(cfg, "moe_layer_freq", path, 1)
            info["moe_layers"] = [l for l in range(first, layers_n) if l % freq == 0]
        else:
            info["moe_layers"] = list(range(layers_n))
    else:
        raise ConfigError(f"{path}: model_type {mt!r} is not supported")
    if not info["moe_layers"]:
        raise ConfigError(f"{path}: the model has no MoE layers")
    return info


def load_model(config_path, doc):
    model = doc.get("model")
    if not isinstance(model, dict) or not model.get("path"):
        raise ConfigError(f"{config_path}: model.path missing (the tool reads its config.json "
                          f"for the expert sizes)")
    base = os.path.dirname(os.path.abspath(config_path))
    path = os.path.join(base, str(model["path"]), "config.json")
    try:
        with open(path, encoding="utf-8") as f:
            cfg = json.load(f)
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the model's config.json ({e.strerror}); "
                          f"model.path is relative to {config_path}") from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: invalid JSON: {e}") from None
    return model_info(cfg, path)


# ---------------------------------------------------------------------------------------------
# Cluster YAML

def id_list(node, where):
    """A list of ids as common/config.cc reads them: ints and "A-B" ranges, or one scalar."""
    items = node if isinstance(node, list) else [node]
    out = []
    for item in items:
        if isinstance(item, str) and re.match(r"^\s*\d+\s*-\s*\d+\s*$", item):
            a, b = (int(x) for x in item.split("-"))
            if a > b:
                raise ConfigError(f"{where}: bad range '{item}' (expected A-B with A <= B)")
            out.extend(range(a, b + 1))
        elif isinstance(item, int) and not isinstance(item, bool) and item >= 0:
            out.append(item)
        elif isinstance(item, str) and item.strip().isdigit():
            out.append(int(item))
        else:
            raise ConfigError(f"{where}: {item!r} is not an id or an A-B range")
    if not out:
        raise ConfigError(f"{where}: must name at least one id")
    return out


def load_cluster(path):
    try:
        with open(path, encoding="utf-8") as f:
            doc = yaml.safe_load(f)
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the cluster config ({e.strerror})") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML: {e}") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    shards = doc.get("shards")
    if not isinstance(shards, list) or not shards:
        raise ConfigError(f"{path}: shards: expected a non-empty list")
    for i, s in enumerate(shards):
        if not isinstance(s, dict) or "experts" not in s:
            raise ConfigError(f"{path}: shards[{i}]: expected a mapping with experts")
    return doc


def _shard_layers(s, i, moe_layers):
    layers = s.get("layers", "all")
    if layers == "all":
        return list(moe_layers)
    return [l for l in id_list(layers, f"shards[{i}].layers") if l in moe_layers]


def check_options(replicas, hot_share, budget_mib):
    if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 1:
        raise ConfigError(f"--replicas: {replicas!r} must be an integer >= 1")
    if not (hot_share >= 0 and math.isfinite(hot_share)):
        raise ConfigError(f"--hot-share: {hot_share!r} must be a number >= 0")
    if not (budget_mib > 0 and math.isfinite(budget_mib)):
        raise ConfigError(f"--memory-budget-mib: {budget_mib!r} must be a number > 0")


def plan(doc, model, load, replicas, hot_share, budget_mib):
    """Returns (new doc, report). `load`: {(layer, expert): count}."""
    check_options(replicas, hot_share, budget_mib)
    E = model["experts"]
    moe_layers = model["moe_layers"]
    expert_bytes = 3 * model["hidden"] * model["intermediate"] * BYTES_PER_WEIGHT
    shared_bytes = 3 * model["hidden"] * model["shared_intermediate"] * BYTES_PER_WEIGHT
    budget = budget_mib * MIB

    shards = doc["shards"]
    names = [str(s.get("name", f"shards[{i}]")) for i, s in enumerate(shards)]
    held = []
    layers = []
    for i, s in enumerate(shards):
        ids = id_list(s["experts"], f"shards[{i}].experts")
        bad = [e for e in ids if e >= E]
        if bad:
            raise ConfigError(f"shards[{i}] ({names[i]}): expert {bad[0]} but the model has {E} "
                              f"FFN experts")
        held.append(set(ids))
        layers.append(_shard_layers(s, i, moe_layers))

    def used(i):
        shared = shared_bytes if shards[i].get("shared_expert") is True else 0
        return len(layers[i]) * (len(held[i]) * expert_bytes + shared)

    for i in range(len(shards)):
        if used(i) > budget:
            raise ConfigError(
                f"--memory-budget-mib {budget_mib:g}: shard {names[i]} already needs "
                f"{used(i) / MIB:.1f} MiB ({len(held[i])} experts x {len(layers[i])} layers x "
                f"{expert_bytes / MIB:.1f} MiB); the budget is too small to keep the current "
                f"placement")

    def holders(e, layer):
        return [i for i in range(len(shards)) if e in held[i] and layer in layers[i]]

    def replicas_of(e):
        return min(len(holders(e, l)) for l in moe_layers)

    share = shares(load, E, moe_layers)
    max_share = {e: max((share[l][e] for l in share), default=0.0) for e in range(E)}
    threshold = hot_share / E
    hot = sorted((e for e in range(E) if share and max_share[e] >= threshold),
                 key=lambda e: (-max_share[e], e))
    before = {e: [names[i] for i in range(len(shards)) if e in held[i]] for e in range(E)}

    for e in hot:
        while replicas_of(e) < replicas:
            short = {l for l in moe_layers if len(holders(e, l)) < replicas}
            candidates = [i for i in range(len(shards))
                          if e not in held[i] and short & set(layers[i])
                          and used(i) + len(layers[i]) * expert_bytes <= budget]
            if not candidates:
                break
            best = min(candidates, key=lambda i: (-(budget - used(i)), i))
            held[best].add(e)

    out = dict(doc)
    out["shards"] = []
    for i, s in enumerate(shards):
        o = dict(s)
        o["experts"] = sorted(held[i])
        out["shards"].append(o)

    report = {
        "threshold": threshold,
        "layers_with_traffic": sorted(share),
        "ignored": sorted(k for k in load if k[0] not in moe_layers or k[1] >= E),
        "uncovered": [(l, e) for l in moe_layers for e in range(E) if not holders(e, l)],
        "experts": [{"expert": e, "share": max_share[e], "hot": e in hot,
                     "before": before[e],
                     "after": [names[i] for i in range(len(shards)) if e in held[i]],
                     "replicas": replicas_of(e)} for e in range(E)],
        "shards": [{"name": names[i], "used_mib": used(i) / MIB, "budget_mib": budget_mib,
                    "experts": sorted(held[i])} for i in range(len(shards))],
        "expert_mib": expert_bytes / MIB,
    }
    return out, report


def summary(report, replicas):
    lines = [f"moe-placement: hot = share >= {report['threshold']:.4f} on some MoE layer "
             f"(layers with traffic: {', '.join(map(str, report['layers_with_traffic'])) or 'none'}"
             f"); one expert per layer = {report['expert_mib']:.1f} MiB"]
    for x in report["experts"]:
        mark = "hot" if x["hot"] else "   "
        change = "" if x["before"] == x["after"] else "  (+" + str(
            len(x["after"]) - len(x["before"])) + ")"
        short = "  (fewer than --replicas: no shard has room)" \
            if x["hot"] and x["replicas"] < replicas else ""
        lines.append(f"  expert {x['expert']:>3} share {x['share']:.4f} {mark}  "
                     f"{', '.join(x['before']) or '-'} -> {', '.join(x['after']) or '-'}"
                     f"{change}{short}")
    for s in report["shards"]:
        lines.append(f"  shard {s['name']}: {s['used_mib']:.1f} / {s['budget_mib']:g} MiB, "
                     f"{len(s['experts'])} experts")
    if report["ignored"]:
        lines.append("  ignored series (not an MoE layer or expert of the model): " + ", ".join(
            f"layer {l} expert {e}" for l, e in report["ignored"]))
    if report["uncovered"]:
        lines.append("  warning: not served by any shard (the router will refuse this config): "
                     + ", ".join(f"layer {l} expert {e}" for l, e in report["uncovered"]))
    return "\n".join(lines) + "\n"


class _Dumper(yaml.SafeDumper):
    pass


def _list_flow(dumper, data):
    # Lists of scalars ([0, 1, 2], layers) on one line, as the hand-written files do.
    flow = all(not isinstance(x, (list, dict)) for x in data)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)


_Dumper.add_representer(list, _list_flow)


def render(doc, header_lines=()):
    text = yaml.dump(doc, Dumper=_Dumper, sort_keys=False, default_flow_style=False,
                     allow_unicode=True, width=100)
    head = "".join(f"# {h}\n" for h in header_lines)
    return head + text


def _version():
    if MOE_VERSION:
        return MOE_VERSION
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import moe_version  # noqa: E402 (beside this script in the source tree)
    return moe_version.version()


def main(argv=None):
    ap = argparse.ArgumentParser(
        prog="moe-placement",
        description="Write a cluster YAML that replicates the hottest experts (by the router's "
                    "moe_expert_assignments_total) onto more shards within a memory budget "
                    "per shard. Nothing is removed from the current placement.")
    ap.add_argument("--config", help="the current cluster YAML")
    ap.add_argument("--metrics",
                    help="the router's /metrics: an http(s) URL (e.g. "
                         "http://127.0.0.1:9100/metrics) or a saved file")
    ap.add_argument("--replicas", type=int,
                    help="the most holders a hot expert gets (>= 1)")
    ap.add_argument("--hot-share", type=float, default=1.5,
                    help="an expert is hot when its share of a layer's assignments is >= F/E "
                         "(E: the model's experts; default 1.5)")
    ap.add_argument("--memory-budget-mib", type=float,
                    help="expert weights a shard may hold, MiB (f32: 3*hidden*intermediate*4 "
                         "bytes per expert and layer)")
    ap.add_argument("--out", help="where to write the new cluster YAML (default: stdout)")
    ap.add_argument("--version", action="version", version=f"moe-placement {_version()}")
    a = ap.parse_args(argv)
    # Checked here rather than by argparse's required=True, which would report a missing flag
    # before an unknown one (the likelier cause: a typo).
    missing = [f"--{k.replace('_', '-')}" for k in ("config", "metrics", "replicas",
                                                    "memory_budget_mib")
               if getattr(a, k) is None]
    if missing:
        ap.error(f"the following arguments are required: {', '.join(missing)}")
    try:
        check_options(a.replicas, a.hot_share, a.memory_budget_mib)
        doc = load_cluster(a.config)
        model = load_model(a.config, doc)
        load = parse_metrics(read_metrics(a.metrics), a.metrics)
        new, report = plan(doc, model, load, a.replicas, a.hot_share, a.memory_budget_mib)
        text = render(new, [
            f"Written by moe-placement from {a.config} and the load in {a.metrics}",
            f"(--replicas {a.replicas} --hot-share {a.hot_share:g} --memory-budget-mib "
            f"{a.memory_budget_mib:g}).",
        ])
    except ConfigError as e:
        print(f"moe-placement: {e}", file=sys.stderr)
        return 2
    sys.stderr.write(summary(report, a.replicas))
    if a.out:
        try:
            with open(a.out, "w", encoding="utf-8") as f:
                f.write(text)
        except OSError as e:
            print(f"moe-placement: --out {a.out}: {e.strerror}", file=sys.stderr)
            return 2
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
