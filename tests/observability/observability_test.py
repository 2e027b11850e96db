#!/usr/bin/env python3
"""Observability test: alert rules, dashboards and the metrics contract against a live cluster.

  a  promtool check/test the alert rules and check the Prometheus config; lint every dashboard
     (fixed uid, `datasource` variable used by every panel, the `namespace`, `pod`, `shard` and
     `layer` variables used by every panel target, links to the other dashboards carrying them, a
     unit on every panel, $__rate_interval in every range selector)
  b  start `moe-cluster --prometheus` on a tiny model with admin ports, drive traffic with
     moe-client (plus a few invalid requests), let Prometheus scrape every second
  c  every target expression of every dashboard panel returns data from Prometheus (the DCGM GPU
     panel's queries only have to run: there is no GPU exporter here); the alert
     rules evaluate without error, and MoeRouterErrorRateHigh is pending from the invalid requests
  d  every metric name the dashboards and alert rules use is exported by the router or a shard,
     and /metrics matches the contract in router_metrics.h / expert_metrics.h (names, types,
     label sets, declared label values)
  e  `promtool check metrics` finds no problem in any service's /metrics
  f  SIGTERM stops moe-cluster with status 0, leaving no process and no Prometheus data behind

Usage: observability_test.py --bin BUILD/bin --source REPO [--static-only] [--keep]
Python 3 with PyYAML (python3-yaml, for the alert coverage check); needs `prometheus` and
`promtool` (Debian package prometheus).
"""
import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

failures = []

# Template variables every dashboard has and every panel target uses (besides `datasource`), and
# what Grafana substitutes for them when "All" is selected.
FILTER_VARIABLES = ("namespace", "pod", "shard", "layer")
ALL_VALUE = ".*"
# Metrics that come from NVIDIA's dcgm-exporter on GPU nodes, not from this cluster's processes:
# without a GPU (and the exporter) their queries return nothing, so the live check only requires
# that they run. The dashboards' GPU panel says so in its description.
EXTERNAL_EMPTY_PREFIXES = ("DCGM_",)
# Metrics an alert rule already uses that a later change will export; until then the rule has no
# series and never fires (its runbook says so). None at present.
ANNOUNCED_METRICS = {}


def fail(msg):
    failures.append(msg)
    print("FAIL: " + msg, flush=True)


def ok(msg):
    print("ok: " + msg, flush=True)


def http_get(url, timeout=5.0):
    """(status, body text); status 0 when unreachable."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode("utf-8", "replace"), r.headers.get("Content-Type", "")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode("utf-8", "replace"), ""
    except (urllib.error.URLError, OSError):
        return 0, "", ""


def run(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


# --------------------------------------------------------------------------------- a: static

def dashboards(source):
    d = os.path.join(source, "dashboards")
    out = []
    for name in sorted(os.listdir(d)):
        if name.endswith(".json"):
            with open(os.path.join(d, name)) as f:
                out.append((name, json.load(f)))
    return out


def all_panels(panels):
    for p in panels:
        yield p
        yield from all_panels(p.get("panels", []))  # collapsed rows


def lint_dashboards(boards):
    uids = {}
    for name, b in boards:
        where = f"dashboards/{name}"
        uid = b.get("uid")
        if not uid:
            fail(f"{where}: no fixed uid")
        elif uid in uids:
            fail(f"{where}: uid {uid} also used by {uids[uid]}")
        uids[uid] = name
        if not isinstance(b.get("schemaVersion"), int) or b["schemaVersion"] < 36:
            fail(f"{where}: schemaVersion {b.get('schemaVersion')} (want >= 36)")
        tvars = {v.get("name"): v for v in b.get("templating", {}).get("list", [])}
        ds = tvars.get("datasource")
        if not ds or ds.get("type") != "datasource" or ds.get("query") != "prometheus":
            fail(f"{where}: no template variable `datasource` of type datasource, query prometheus")
        for name in FILTER_VARIABLES:
            v = tvars.get(name)
            if not v or v.get("type") != "query" or \
                    (v.get("datasource") or {}).get("uid") != "${datasource}":
                fail(f"{where}: no query variable `{name}` on ${{datasource}}")
            elif not (v.get("includeAll") and v.get("allValue") == ALL_VALUE and v.get("multi")):
                fail(f"{where}: variable `{name}` should be multi-value with All = {ALL_VALUE}")
        links = [l for l in b.get("links", []) if l.get("type") == "dashboards"]
        if not any("moe-cluster" in (l.get("tags") or []) and l.get("includeVars") and
                   l.get("keepTime") for l in links):
            fail(f"{where}: no link to the other moe-cluster dashboards that keeps the variables "
                 "and the time range")
        if "moe-cluster" not in (b.get("tags") or []):
            fail(f"{where}: not tagged moe-cluster (the links between the dashboards use the tag)")
        ids = set()
        panels = list(all_panels(b.get("panels", [])))
        if not panels:
            fail(f"{where}: no panels")
        for p in panels:
            if p.get("type") == "row":
                continue
            pw = f"{where} panel '{p.get('title')}'"
            if p.get("id") in ids:
                fail(f"{pw}: duplicate panel id {p.get('id')}")
            ids.add(p.get("id"))
            if (p.get("datasource") or {}).get("uid") != "${datasource}":
                fail(f"{pw}: datasource is not ${{datasource}}")
            if not (p.get("fieldConfig", {}).get("defaults", {}).get("unit")):
                fail(f"{pw}: no unit (fieldConfig.defaults.unit)")
            if not p.get("targets"):
                fail(f"{pw}: no targets")
            for t in p.get("targets", []):
                if (t.get("datasource") or {}).get("uid") != "${datasource}":
                    fail(f"{pw} target {t.get('refId')}: datasource is not ${{datasource}}")
                expr = t.get("expr", "")
                if not expr.strip():
                    fail(f"{pw} target {t.get('refId')}: empty expr")
                for name in FILTER_VARIABLES:
                    if f"${name}" not in expr and f"${{{name}}}" not in expr:
                        fail(f"{pw} target {t.get('refId')}: does not use ${name}")
                for rng in re.findall(r"\[([^\]]*)\]", strip_strings(expr)):
                    if rng != "$__rate_interval":
                        fail(f"{pw} target {t.get('refId')}: range [{rng}] instead of "
                             "[$__rate_interval]")
    ok(f"{len(boards)} dashboards linted")


def check_coverage(source, boards):
    """Every metric of the contract is on some dashboard."""
    shown = set()
    for _, b in boards:
        for p in all_panels(b.get("panels", [])):
            for t in p.get("targets", []):
                shown |= {re.sub(r"_(bucket|sum|count)$", "", m)
                          for m in metric_names(strip_strings(t.get("expr", "")))}
    contract = set()
    for header in ("router_service/router_metrics.h", "expert_service/expert_metrics.h"):
        contract |= set(parse_contract(os.path.join(source, header)))
    for m in sorted(contract - shown):
        fail(f"contract metric {m} is not shown on any dashboard")
    if contract <= shown:
        ok(f"all {len(contract)} contract metrics are on a dashboard")


def strip_strings(expr):
    return re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)


def metric_names(text):
    return set(re.findall(r"(?<![A-Za-z0-9_:])(moe_[A-Za-z0-9_:]*)", text))


def check_alert_coverage(source):
    """Every alert has a severity and summary/description/runbook text, and alerts_test.yml
    makes it fire at least once and checks it quiet at least once."""
    import yaml  # PyYAML: only for this static check
    prom = os.path.join(source, "deploy", "prometheus")
    with open(os.path.join(prom, "alerts.yml")) as f:
        rules = [r for g in yaml.safe_load(f)["groups"] for r in g["rules"] if "alert" in r]
    with open(os.path.join(prom, "alerts_test.yml")) as f:
        tests = yaml.safe_load(f)["tests"]
    fired, quiet = set(), set()
    for t in tests:
        for a in t.get("alert_rule_test") or []:
            (fired if a.get("exp_alerts") else quiet).add(a["alertname"])
    for r in rules:
        name = r["alert"]
        if (r.get("labels") or {}).get("severity") not in ("warning", "critical"):
            fail(f"alert {name}: severity label should be warning or critical")
        for key in ("summary", "description", "runbook"):
            if not (r.get("annotations") or {}).get(key, "").strip():
                fail(f"alert {name}: no {key} annotation")
        if name not in fired:
            fail(f"alert {name}: no test in alerts_test.yml makes it fire")
        if name not in quiet:
            fail(f"alert {name}: no test in alerts_test.yml checks it stays quiet")
    ok(f"{len(rules)} alerts: severity, summary, description and runbook; each tested firing "
       "and quiet")


def check_rules(source):
    prom = os.path.join(source, "deploy", "prometheus")
    for cmd in (["promtool", "check", "rules", os.path.join(prom, "alerts.yml")],
                ["promtool", "test", "rules", os.path.join(prom, "alerts_test.yml")],
                ["promtool", "check", "config", os.path.join(prom, "prometheus-local.yml")]):
        r = run(cmd)
        if r.returncode != 0:
            fail(" ".join(cmd[1:3]) + f" {os.path.relpath(cmd[3], source)}:\n{r.stdout}{r.stderr}")
        else:
            ok(" ".join(cmd[1:3]) + " " + os.path.relpath(cmd[3], source))


# --------------------------------------------------------------------------------- d: contract

def parse_contract(header):
    """router_metrics.h / expert_metrics.h header comment → {name: (type, labels, {label: values})}."""
    entries = {}
    current = None
    with open(header) as f:
        for line in f:
            if not line.startswith("//"):
                continue
            # search, not match: tolerate a reflowed comment ("//   executor moe_x{..}  counter")
            m = re.search(r"(?<!\w)(moe_\w+)(?:\{([\w,\s]*)\})?\s+(counter|gauge|histogram)\b(.*)",
                          line)
            if m:
                labels = {l.strip() for l in (m.group(2) or "").split(",") if l.strip()}
                current = [m.group(1), m.group(3), labels, m.group(4)]
                entries[current[0]] = current
            elif current is not None and re.match(r"//\s{20,}\S", line):
                current[3] += " " + line[2:].strip()
            else:
                current = None
    out = {}
    for name, typ, labels, text in entries.values():
        values = {}
        for lm in re.finditer(r"(\w+) = (\w+(?:\s*\|\s*\w+)*)", text):
            if lm.group(1) in labels:
                values[lm.group(1)] = {v.strip() for v in lm.group(2).split("|")}
        out[name] = (typ, labels, values)
    return out


def parse_exposition(text):
    """Prometheus text format → (types {family: type}, samples [(name, {labels})])."""
    types, samples = {}, []
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, typ = line.split(None, 3)
            types[name] = typ.strip()
        elif line and not line.startswith("#"):
            m = re.match(r"([A-Za-z_:][A-Za-z0-9_:]*)(\{(.*)\})?\s", line)
            if not m:
                continue
            labels = dict(re.findall(r'([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"', m.group(3) or ""))
            samples.append((m.group(1), labels))
    return types, samples


def family_of(name, types):
    for suffix in ("_bucket", "_sum", "_count"):
        if name.endswith(suffix) and types.get(name[: -len(suffix)]) in ("histogram", "summary"):
            return name[: -len(suffix)]
    return name


def check_contract(role, contract, bodies):
    """bodies: {target name: /metrics text} of one role (router, or every shard)."""
    for target, text in bodies.items():
        types, samples = parse_exposition(text)
        by_family = {}
        for name, labels in samples:
            by_family.setdefault(family_of(name, types), []).append(labels)
        for name, (typ, labels, values) in sorted(contract.items()):
            where = f"{role} {target} /metrics: {name}"
            if name not in types and name not in by_family:
                fail(f"{where}: missing (contract: {typ}{{{','.join(sorted(labels))}}})")
                continue
            if types.get(name) != typ:
                fail(f"{where}: TYPE {types.get(name)}, contract says {typ}")
            series = by_family.get(name, [])
            if not series:
                fail(f"{where}: declared but has no series (initialize its label values so "
                     "dashboards and alerts see 0 instead of nothing)")
            for ls in series:
                keys = set(ls) - {"le", "quantile"}
                if keys != labels:
                    fail(f"{where}: labels {{{','.join(sorted(keys))}}}, contract says "
                         f"{{{','.join(sorted(labels))}}}")
                    break
                for lab, allowed in values.items():
                    if ls.get(lab) not in allowed:
                        fail(f"{where}: {lab}=\"{ls.get(lab)}\" not in contract values "
                             f"{sorted(allowed)}")
        extra = sorted(f for f in types if f.startswith("moe_") and f not in contract)
        if extra:
            print(f"note: {role} {target} exports metrics outside its contract: {', '.join(extra)}")
    ok(f"{role} /metrics checked against its contract ({len(contract)} metrics)")


# --------------------------------------------------------------------------------- b: cluster

def free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def wait_for(pred, timeout, what, proc=None, log=None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if pred():
            return True
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"moe-cluster exited with {proc.returncode} while waiting for {what}")
        time.sleep(0.1)
    raise RuntimeError(f"timed out after {timeout} s waiting for {what}")


def prom_query(prom, expr):
    url = f"{prom}/api/v1/query?" + urllib.parse.urlencode({"query": expr, "time": f"{time.time():.3f}"})
    status, body, _ = http_get(url, timeout=10)
    try:
        j = json.loads(body)
    except ValueError:
        return None, f"HTTP {status}: {body[:300]}"
    if j.get("status") != "success":
        return None, f"{j.get('errorType')}: {j.get('error')}"
    return j["data"]["result"], None


def substitute(expr):
    for name in FILTER_VARIABLES:  # "All" selected
        expr = expr.replace(f"${{{name}}}", ALL_VALUE).replace(f"${name}", ALL_VALUE)
    for var, val in (("$__rate_interval", "1m"), ("${__rate_interval}", "1m"),
                     ("$__interval", "15s"), ("${__interval}", "15s"), ("$__range", "5m"),
                     ("${__range}", "5m")):
        expr = expr.replace(var, val)
    return expr


def processes_matching(needle):
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode("utf-8", "replace")
        except OSError:
            continue
        if needle in cmd:
            found.append(f"{pid}: {cmd.strip()}")
    return found


def tail(path, n=30):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except OSError:
        return "(no file)\n"


def live(args, boards, work):
    binp, source = args.bin, args.source
    model = os.path.join(work, "model")
    r = run([f"{binp}/moe-make-checkpoint", "--out", model, "--hidden", "64", "--intermediate",
             "96", "--experts", "4", "--layers", "2"])
    if r.returncode != 0:
        raise RuntimeError(f"moe-make-checkpoint failed:\n{r.stdout}{r.stderr}")
    rpc, radmin, s0, s0admin, s1, s1admin, promport = free_ports(7)
    config = os.path.join(work, "cluster.yaml")
    with open(config, "w") as f:
        f.write(f"""model: {{path: model}}
router: {{listen: "127.0.0.1:{rpc}", admin: "127.0.0.1:{radmin}", device: cpu}}
shards:
  - {{name: shard-0, listen: "127.0.0.1:{s0}", admin: "127.0.0.1:{s0admin}", device: cpu, experts: [0, 1]}}
  - {{name: shard-1, listen: "127.0.0.1:{s1}", admin: "127.0.0.1:{s1admin}", device: cpu, experts: "2-3"}}
timeouts: {{drain_ms: 300}}
""")
    admins = {"router": radmin, "shard-0": s0admin, "shard-1": s1admin}
    prom = f"http://127.0.0.1:{promport}"
    logdir = os.path.join(work, "logs")
    cluster_log = os.path.join(work, "moe-cluster.log")
    cmd = [f"{binp}/moe-cluster", "--config", config, "--log-dir", logdir,
           f"--prometheus=127.0.0.1:{promport}", "--prometheus-rules",
           os.path.join(source, "deploy", "prometheus", "alerts.yml"),
           "--prometheus-scrape-interval", "1s"]
    print("$ " + " ".join(cmd), flush=True)
    logf = open(cluster_log, "w")
    proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT)
    try:
        try:
            wait_for(lambda: "cluster ready" in tail(cluster_log, 1000), 120, "cluster ready", proc)
            wait_for(lambda: http_get(f"{prom}/-/ready")[0] == 200, 30, "Prometheus ready", proc)
        except RuntimeError as e:
            raise RuntimeError(f"{e}\n--- moe-cluster log:\n{tail(cluster_log)}")
        ok("cluster and Prometheus ready")
        flags = json.loads(http_get(f"{prom}/api/v1/status/flags")[1])["data"]
        tsdb = flags.get("storage.tsdb.path", "")

        # Traffic: a few rounds of good requests plus one invalid request each (unknown layer).
        t0 = time.time()
        for round_ in range(3):
            r = run([f"{binp}/moe-client", "--config", config, "--tokens", "256", "--batch", "64",
                     "--concurrency", "2", "--seed", str(round_ + 1), "--json", "--quiet"])
            if r.returncode != 0 or '"errors": 0' not in r.stdout:
                fail(f"moe-client round {round_}: status {r.returncode}\n{r.stdout}{r.stderr}")
            bad = run([f"{binp}/moe-client", "--router", f"127.0.0.1:{rpc}", "--layer", "99",
                       "--tokens", "4", "--batch", "4", "--json", "--quiet"])
            if bad.returncode == 0:
                fail("a request for MoE layer 99 succeeded")
            time.sleep(3)
        ok(f"traffic sent: 3 × 256 tokens + 3 invalid requests in {time.time() - t0:.1f} s")
        time.sleep(2.5)  # two more scrapes and rule evaluations

        # c: every panel target returns data.
        res, err = prom_query(prom, 'up{job=~"moe-router|moe-expert"}')
        ups = {s["metric"].get("shard"): s["value"][1] for s in (res or [])}
        if ups != {"router": "1", "shard-0": "1", "shard-1": "1"}:
            fail(f"scrape targets not all up: {ups or err}")
        queried = 0
        for name, b in boards:
            for p in all_panels(b.get("panels", [])):
                for t in p.get("targets", []):
                    expr = substitute(t.get("expr", ""))
                    where = f"dashboards/{name} ('{b.get('title')}') panel '{p.get('title')}' " \
                            f"target {t.get('refId')}"
                    if "$" in expr:
                        fail(f"{where}: unknown variable left in {expr!r}")
                        continue
                    result, err = prom_query(prom, expr)
                    queried += 1
                    external = re.findall(r"\b(?:%s)\w*" % "|".join(EXTERNAL_EMPTY_PREFIXES),
                                          expr)
                    if err:
                        fail(f"{where}: query error {err}\n    {expr}")
                    elif external and not result:
                        print(f"note: {where}: no data from {sorted(set(external))} (no GPU "
                              "exporter here); the query runs")
                    elif not result:
                        fail(f"{where}: empty result\n    {expr}")
                    elif all(v["value"][1] == "NaN" for v in result):
                        fail(f"{where}: only NaN (no traffic seen in the window?)\n    {expr}")
        ok(f"{queried} dashboard queries run")

        status, body, _ = http_get(f"{prom}/api/v1/rules")
        groups = json.loads(body)["data"]["groups"] if status == 200 else []
        rules = [r for g in groups for r in g["rules"]]
        if len(rules) < 6:
            fail(f"Prometheus loaded {len(rules)} alert rules, expected at least 6")
        for rule in rules:
            if rule.get("health") != "ok":
                fail(f"alert {rule['name']}: health {rule.get('health')}: {rule.get('lastError')}")
        states = {r["name"]: r.get("state") for r in rules}
        if states.get("MoeRouterErrorRateHigh") not in ("pending", "firing"):
            fail("MoeRouterErrorRateHigh is not pending after 3 invalid requests in 15: "
                 f"state {states.get('MoeRouterErrorRateHigh')}")
        for quiet in ("MoeShardDown", "MoeRouterDown"):
            if states.get(quiet) != "inactive":
                fail(f"{quiet} is {states.get(quiet)} on a healthy cluster")
        ok(f"{len(rules)} alert rules evaluate; states: {states}")

        # d: names used by dashboards and alerts are exported; /metrics matches the contract.
        bodies = {}
        for target, port in admins.items():
            status, body, ctype = http_get(f"http://127.0.0.1:{port}/metrics")
            if status != 200:
                fail(f"{target} admin 127.0.0.1:{port}/metrics: HTTP {status}")
                continue
            if not ctype.startswith("text/plain"):
                fail(f"{target} /metrics: Content-Type {ctype!r}, expected text/plain")
            bodies[target] = body
        exported = {}
        for target, body in bodies.items():
            types, samples = parse_exposition(body)
            for n in list(types) + [family_of(s[0], types) for s in samples]:
                exported.setdefault(n, set()).add(target)
                exported.setdefault(family_of(n, types), set()).add(target)
        used = {}
        for name, b in boards:
            for p in all_panels(b.get("panels", [])):
                for t in p.get("targets", []):
                    for m in metric_names(strip_strings(t.get("expr", ""))):
                        used.setdefault(m, f"dashboards/{name} panel '{p.get('title')}'")
        with open(os.path.join(source, "deploy", "prometheus", "alerts.yml")) as f:
            alerts_text = "\n".join(l for l in f if not l.lstrip().startswith("#"))
        for m in metric_names(alerts_text):
            used.setdefault(m, "deploy/prometheus/alerts.yml")
        for m, where in sorted(used.items()):
            base = re.sub(r"_(bucket|sum|count)$", "", m)
            if m in ANNOUNCED_METRICS:
                print(f"note: {m} (used by {where}) is not exported yet: {ANNOUNCED_METRICS[m]}")
                continue
            if m not in exported and base not in exported:
                fail(f"metric {m} (used by {where}) is not exported by the router or any shard")
        ok(f"{len(used)} metric names used by dashboards and alerts checked")
        check_contract("router", parse_contract(os.path.join(source, "router_service",
                                                             "router_metrics.h")),
                       {k: v for k, v in bodies.items() if k == "router"})
        check_contract("expert", parse_contract(os.path.join(source, "expert_service",
                                                             "expert_metrics.h")),
                       {k: v for k, v in bodies.items() if k != "router"})

        # e: promtool's lint.
        for target, body in bodies.items():
            r = run(["promtool", "check", "metrics"], input=body)
            problems = (r.stdout + r.stderr).strip()
            if r.returncode != 0 or problems:
                fail(f"promtool check metrics on {target} /metrics (status {r.returncode}):\n"
                     f"{problems}")
        ok("promtool check metrics on every /metrics")

        # f: SIGTERM stops everything with status 0.
        proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            rc = None
        if rc != 0:
            fail(f"moe-cluster exited with {rc} after SIGTERM\n{tail(cluster_log)}")
        time.sleep(0.3)
        left = processes_matching(config) + processes_matching(f"127.0.0.1:{promport}")
        if left:
            fail("processes left after SIGTERM:\n  " + "\n  ".join(left))
        if tsdb and os.path.exists(tsdb):
            fail(f"Prometheus data {tsdb} left behind")
        if rc == 0 and not left:
            ok("SIGTERM: moe-cluster exited 0, no process left")
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        logf.close()
        if failures:
            print("--- moe-cluster log:\n" + tail(cluster_log))
            for name in sorted(os.listdir(logdir)) if os.path.isdir(logdir) else []:
                print(f"--- {name}:\n" + tail(os.path.join(logdir, name), 15))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin", help="directory with moe-cluster, moe-client, moe-make-checkpoint")
    ap.add_argument("--source", required=True, help="repository root")
    ap.add_argument("--static-only", action="store_true", help="only part a (no cluster)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    args = ap.parse_args()
    for tool in ("promtool",) + (() if args.static_only else ("prometheus",)):
        if shutil.which(tool) is None:
            print(f"FAIL: {tool} not found; install the Debian package prometheus "
                  "(scripts/install-deps.sh)")
            return 1

    boards = dashboards(args.source)
    check_rules(args.source)
    check_alert_coverage(args.source)
    lint_dashboards(boards)
    check_coverage(args.source, boards)
    if not args.static_only:
        if not args.bin:
            ap.error("--bin is required unless --static-only")
        work = tempfile.mkdtemp(prefix="moe-obs-test-")
        try:
            live(args, boards, work)
        except RuntimeError as e:
            fail(str(e))
        finally:
            if args.keep:
                print(f"work directory kept: {work}")
            else:
                shutil.rmtree(work, ignore_errors=True)
    if failures:
        print(f"\n{len(failures)} failure(s):")
        for f in failures:
            print("  - " + f.splitlines()[0])
        return 1
    print("all observability checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
