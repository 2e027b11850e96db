#!/usr/bin/env python3
"""Policy checks on every rendered overlay (kubectl kustomize deploy/k8s/overlays/<name>): what a
schema cannot see — security context, resources, probes, selectors that select real pods,
references that exist, the cluster YAML agreeing with the objects it describes, the termination
budget, GPUs, monitoring wired to the names the alert rules and dashboards use, one instance
per overlay (app.kubernetes.io/instance on every object and selector, names prefixed by it), and
for a cluster YAML with `tls:` the certificates, mounts, HTTPS probes and scrapes, and the router's
client namespaces that make it work.
Exit 77 (skip) when kubectl is missing."""

import os
import re
import sys

import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import deploylib as dl  # noqa: E402

WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob")
JOB_NAMES = {"router": "moe-router", "expert": "moe-expert"}  # deploy/prometheus/alerts.yml
GROUP_LABEL = "moe-cluster/expert-group"  # tools/k8s_cluster_config.py: one value per group
INSTANCE_LABEL = "app.kubernetes.io/instance"  # the install; names start with "<instance>-"


def pod_template(w):
    if w["kind"] == "CronJob":
        return w["spec"]["jobTemplate"]["spec"]["template"]
    return w["spec"]["template"]


def containers(pod_spec):
    return [("init", c) for c in pod_spec.get("initContainers") or []] + \
           [("", c) for c in pod_spec.get("containers") or []]


def container_ports(pod_spec):
    names, numbers = set(), set()
    for _, c in containers(pod_spec):
        for p in c.get("ports") or []:
            numbers.add(p["containerPort"])
            if "name" in p:
                names.add(p["name"])
    return names, numbers


def port_exists(port, pod_spec):
    names, numbers = container_ports(pod_spec)
    return port in names if isinstance(port, str) else port in numbers


def flag(args, name):
    """Value of `--name VALUE` in an argument list, or None."""
    for i, a in enumerate(args):
        if a == name and i + 1 < len(args):
            return args[i + 1]
    return None


def prestop_seconds(c):
    pre = (c.get("lifecycle") or {}).get("preStop") or {}
    if "sleep" in pre:
        return int(pre["sleep"]["seconds"])
    cmd = (pre.get("exec") or {}).get("command") or []
    if len(cmd) == 2 and os.path.basename(cmd[0]) == "sleep":
        return float(cmd[1])
    return 0


class Rendered:
    """One rendered overlay: one instance in one namespace (created apart, deploy/k8s/namespaces).
    Objects are looked up by their full name or their name within the instance
    (get("Deployment", "moe-router") is Deployment/<instance>-moe-router)."""

    def __init__(self, name, objs):
        self.name = name
        self.objs = objs
        self.ns = next((o["metadata"].get("namespace") for o in objs
                        if o["metadata"].get("namespace")), None)
        router = next((o for o in objs if o["kind"] == "Deployment" and (o["metadata"].get(
            "labels") or {}).get("app.kubernetes.io/name") == "moe-router"), None)
        self.instance = ((router or {}).get("metadata", {}).get("labels") or {}).get(
            INSTANCE_LABEL)
        self.prefix = f"{self.instance}-" if self.instance else ""

    def of(self, kind):
        return [o for o in self.objs if o["kind"] == kind]

    def get(self, kind, name):
        """By its full name, or by its name within the instance."""
        return next((o for o in self.of(kind) if o["metadata"]["name"] == name), None) or \
            next((o for o in self.of(kind) if o["metadata"]["name"] == self.prefix + name), None)

    def workloads(self):
        return [o for o in self.objs if o["kind"] in WORKLOAD_KINDS]

    def pods_selected(self, selector):
        return [w for w in self.workloads()
                if dl.selector_matches(selector, pod_template(w)["metadata"].get("labels"))]


def check_security(r, f, w):
    spec = pod_template(w)["spec"]
    psc = spec.get("securityContext") or {}
    where = f"{r.name}: {dl.kn(w)}"
    f.check(spec.get("automountServiceAccountToken") is False,
            f"{where}: automountServiceAccountToken should be false")
    for _, c in containers(spec):
        cw = f"{where} container {c['name']}"
        sc = c.get("securityContext") or {}
        f.check(sc.get("runAsNonRoot", psc.get("runAsNonRoot")) is True, f"{cw}: runAsNonRoot")
        uid = sc.get("runAsUser", psc.get("runAsUser"))
        f.check(uid is None or uid != 0, f"{cw}: runAsUser 0")
        f.check(sc.get("readOnlyRootFilesystem") is True, f"{cw}: readOnlyRootFilesystem")
        f.check(sc.get("allowPrivilegeEscalation") is False, f"{cw}: allowPrivilegeEscalation")
        f.check(not sc.get("privileged"), f"{cw}: privileged")
        f.check("ALL" in ((sc.get("capabilities") or {}).get("drop") or []),
                f"{cw}: capabilities.drop must include ALL")
        f.check(not (sc.get("capabilities") or {}).get("add"), f"{cw}: capabilities.add")
        seccomp = (sc.get("seccompProfile") or psc.get("seccompProfile") or {}).get("type")
        f.check(seccomp == "RuntimeDefault", f"{cw}: seccompProfile RuntimeDefault")
        res = c.get("resources") or {}
        for part in ("requests", "limits"):
            for key in ("cpu", "memory"):
                f.check(key in (res.get(part) or {}), f"{cw}: resources.{part}.{key} missing")
        image = c.get("image", "")
        f.check(":" in image.rsplit("/", 1)[-1] and not image.endswith(":latest"),
                f"{cw}: image '{image}' needs a pinned tag (not latest)")
        mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts") or []}
        tmp = next((v for v in spec.get("volumes") or [] if v["name"] == mounts.get("/tmp")), None)
        f.check(tmp is not None and "emptyDir" in tmp, f"{cw}: /tmp must be an emptyDir mount")


def check_probes(r, f, w):
    spec = pod_template(w)["spec"]
    for kind, c in containers(spec):
        if kind == "init":
            continue
        cw = f"{r.name}: {dl.kn(w)} container {c['name']}"
        expect = {"startupProbe": ("/healthz", "/readyz"), "readinessProbe": ("/readyz",),
                  "livenessProbe": ("/healthz",)}
        for probe, paths in expect.items():
            p = c.get(probe)
            if not f.check(p is not None, f"{cw}: {probe} missing"):
                continue
            http = p.get("httpGet")
            if not f.check(http is not None, f"{cw}: {probe} should be httpGet"):
                continue
            f.check(http.get("path") in paths, f"{cw}: {probe} path {http.get('path')} "
                                                f"(expected {' or '.join(paths)})")
            port = http.get("port")
            f.check(isinstance(port, str), f"{cw}: {probe} should use a named port")
            f.check(port_exists(port, spec), f"{cw}: {probe} port {port} is not a container port")
        sp = c.get("startupProbe") or {}
        budget = sp.get("periodSeconds", 10) * sp.get("failureThreshold", 3)
        f.check(budget >= 120, f"{cw}: startup budget {budget}s is too small for loading weights")


def check_selectors(r, f):
    for w in r.workloads():
        if w["kind"] in ("Job", "CronJob"):
            continue
        labels = pod_template(w)["metadata"].get("labels") or {}
        f.check(dl.selector_matches(w["spec"]["selector"], labels),
                f"{r.name}: {dl.kn(w)}: selector does not match its pod template labels")
        spec = pod_template(w)["spec"]
        for tsc in spec.get("topologySpreadConstraints") or []:
            f.check(dl.selector_matches(tsc.get("labelSelector"), labels),
                    f"{r.name}: {dl.kn(w)}: topologySpreadConstraint does not select its own pods")
        anti = ((spec.get("affinity") or {}).get("podAntiAffinity") or {})
        for t in anti.get("preferredDuringSchedulingIgnoredDuringExecution") or []:
            f.check(dl.selector_matches(t["podAffinityTerm"].get("labelSelector"), labels),
                    f"{r.name}: {dl.kn(w)}: podAntiAffinity does not select its own pods")
    for svc in r.of("Service"):
        sel = svc["spec"].get("selector")
        pods = r.pods_selected({"matchLabels": sel}) if sel else []
        if not f.check(pods, f"{r.name}: {dl.kn(svc)} selects no pods"):
            continue
        for p in svc["spec"]["ports"]:
            target = p.get("targetPort", p["port"])
            f.check(all(port_exists(target, pod_template(w)["spec"]) for w in pods),
                    f"{r.name}: {dl.kn(svc)} targetPort {target} is not a port of its pods")
    for pdb in r.of("PodDisruptionBudget"):
        f.check(r.pods_selected(pdb["spec"]["selector"]), f"{r.name}: {dl.kn(pdb)} selects no pods")
    for hpa in r.of("HorizontalPodAutoscaler"):
        ref = hpa["spec"]["scaleTargetRef"]
        target = r.get(ref["kind"], ref["name"])
        f.check(target is not None, f"{r.name}: {dl.kn(hpa)} scales missing {ref['kind']}/"
                                    f"{ref['name']}")
        f.check(hpa["spec"].get("minReplicas", 1) >= 2, f"{r.name}: {dl.kn(hpa)}: minReplicas < 2")
        if target:
            f.check(all("cpu" in (c.get("resources", {}).get("requests") or {})
                        for _, c in containers(pod_template(target)["spec"])),
                    f"{r.name}: {dl.kn(hpa)}: CPU utilization needs CPU requests")


def check_references(r, f):
    cms = {o["metadata"]["name"] for o in r.of("ConfigMap")}
    pvcs = {o["metadata"]["name"]: o for o in r.of("PersistentVolumeClaim")}
    for w in r.workloads():
        spec = pod_template(w)["spec"]
        vols = {v["name"]: v for v in spec.get("volumes") or []}
        for v in vols.values():
            if "configMap" in v:
                f.check(v["configMap"]["name"] in cms, f"{r.name}: {dl.kn(w)}: ConfigMap "
                                                       f"{v['configMap']['name']} does not exist")
            if "persistentVolumeClaim" in v:
                name = v["persistentVolumeClaim"]["claimName"]
                pvc = pvcs.get(name)
                if f.check(pvc is not None, f"{r.name}: {dl.kn(w)}: PVC {name} does not exist"):
                    f.check(pvc["spec"]["accessModes"] == ["ReadOnlyMany"],
                            f"{r.name}: PVC {name}: weights should be ReadOnlyMany")
                    f.check(v["persistentVolumeClaim"].get("readOnly") is True,
                            f"{r.name}: {dl.kn(w)}: weights volume should be readOnly")
        for _, c in containers(spec):
            for m in c.get("volumeMounts") or []:
                f.check(m["name"] in vols, f"{r.name}: {dl.kn(w)}: mount of missing volume "
                                           f"{m['name']}")
            for e in c.get("envFrom") or []:
                if "configMapRef" in e:
                    f.check(e["configMapRef"]["name"] in cms,
                            f"{r.name}: {dl.kn(w)}: envFrom ConfigMap missing")


def cluster_config_of(r, w, f):
    """(config dict, container) for the workload's moe container, from --config and the mounted
    ConfigMap."""
    spec = pod_template(w)["spec"]
    c = spec["containers"][0]
    args = (c.get("command") or []) + (c.get("args") or [])
    path = flag(args, "--config")
    if not f.check(path, f"{r.name}: {dl.kn(w)}: no --config"):
        return None, c
    for m in c.get("volumeMounts") or []:
        mp = m["mountPath"].rstrip("/") + "/"
        if path.startswith(mp):
            vol = next(v for v in spec["volumes"] if v["name"] == m["name"])
            cm = r.get("ConfigMap", (vol.get("configMap") or {}).get("name"))
            key = path[len(mp):]
            if f.check(cm is not None and key in cm.get("data", {}),
                       f"{r.name}: {dl.kn(w)}: --config {path} is not a key of a mounted "
                       f"ConfigMap"):
                return yaml.safe_load(cm["data"][key]), c
            return None, c
    f.check(False, f"{r.name}: {dl.kn(w)}: --config {path} is not on a mounted volume")
    return None, c


def named_port(c, name):
    return next((p["containerPort"] for p in c.get("ports") or [] if p.get("name") == name), None)


def expert_sets(r):
    """The expert StatefulSets: one per replica group."""
    return [w for w in r.of("StatefulSet")
            if pod_template(w)["metadata"].get("labels", {}).get("app.kubernetes.io/name")
            == JOB_NAMES["expert"]]


def group_pods(sts):
    """The pod names of a StatefulSet: <name>-0 .. <name>-<replicas-1>."""
    return [f"{sts['metadata']['name']}-{i}" for i in range(sts["spec"].get("replicas", 1))]


def int_or_percent(v, total):
    """A PDB's maxUnavailable/minAvailable as a pod count (percentages round up, as Kubernetes
    does)."""
    if isinstance(v, str) and v.endswith("%"):
        return -(-total * int(v[:-1]) // 100)
    return int(v)


# Keys a shards[] entry may differ in between the pods of one replica group.
PER_POD_KEYS = ("name", "listen", "admin")


def check_groups(r, f, groups, cfg, headless, rpc, admin):
    """Replica groups: each expert StatefulSet is one expert set on >= 2 pods; the cluster YAML
    lists every pod once, at its DNS name, and a group's pods hold the same experts; one PDB per
    group selects exactly its pods and leaves a replica; updates and scheduling keep replicas
    apart."""
    entries = {s["name"]: s for s in cfg["shards"]}
    all_pods = []
    labels_seen = {}
    pdbs = r.of("PodDisruptionBudget")
    for sts in groups:
        where = f"{r.name}: {dl.kn(sts)}"
        replicas = sts["spec"].get("replicas", 1)
        pods = group_pods(sts)
        all_pods += pods
        f.check(replicas >= 2, f"{where}: replicas {replicas}: a replica group needs >= 2 pods, "
                               f"or a rolling update or node drain takes its experts away")
        f.check(sts["spec"].get("podManagementPolicy") == "Parallel",
                f"{where}: podManagementPolicy should be Parallel")
        group = pod_template(sts)["metadata"]["labels"].get(GROUP_LABEL)
        if f.check(group, f"{where}: pods lack the {GROUP_LABEL} label"):
            f.check(group not in labels_seen, f"{where}: {GROUP_LABEL}={group} is also the label "
                                              f"of {labels_seen.get(group)}")
            labels_seen[group] = dl.kn(sts)
        f.check(sts["spec"].get("serviceName") == headless["metadata"]["name"],
                f"{where}: serviceName should be the shared headless Service "
                f"{headless['metadata']['name']}")
        # The cluster YAML: one entry per pod, named like it, at its DNS name; same experts.
        for pod in pods:
            e = entries.get(pod)
            if not f.check(e is not None, f"{where}: pod {pod} has no shards[] entry of its name "
                                          f"in the cluster YAML (regenerate: deploy/k8s/"
                                          f"generate.py)"):
                continue
            host = f"{pod}.{headless['metadata']['name']}.{r.ns}.svc.cluster.local"
            f.check(e["listen"] == f"{host}:{rpc}",
                    f"{r.name}: shard {pod}: listen {e['listen']} != {host}:{rpc} (its DNS name)")
            f.check(e.get("admin") == f"{host}:{admin}",
                    f"{r.name}: shard {pod}: admin {e.get('admin')} != {host}:{admin}")
        served = [{k: v for k, v in entries[p].items() if k not in PER_POD_KEYS}
                  for p in pods if p in entries]
        f.check(all(x == served[0] for x in served),
                f"{where}: the pods of a group must hold the same experts (all but name/listen/"
                f"admin equal): {served}")
        # Rolling update: one pod at a time, and only after the new one has been up a while.
        us = sts["spec"].get("updateStrategy") or {}
        f.check(us.get("type", "RollingUpdate") == "RollingUpdate",
                f"{where}: updateStrategy should be RollingUpdate")
        ru = us.get("rollingUpdate") or {}
        if "maxUnavailable" in ru:
            f.check(int_or_percent(ru["maxUnavailable"], replicas) < replicas,
                    f"{where}: rollingUpdate.maxUnavailable would take the whole group down")
        f.check(sts["spec"].get("minReadySeconds", 0) >= 5,
                f"{where}: minReadySeconds {sts['spec'].get('minReadySeconds', 0)} < 5: the next "
                f"pod of a rolling update may go down before the routers verify the new one")
        # Scheduling: prefer the group's pods on different nodes, never require it.
        spec = pod_template(sts)["spec"]
        anti = (spec.get("affinity") or {}).get("podAntiAffinity") or {}
        f.check(not anti.get("requiredDuringSchedulingIgnoredDuringExecution"),
                f"{where}: required podAntiAffinity: a small cluster could not schedule a group")
        f.check(any(t["podAffinityTerm"].get("topologyKey") == "kubernetes.io/hostname"
                    and r.pods_selected(t["podAffinityTerm"].get("labelSelector")) == [sts]
                    for t in anti.get("preferredDuringSchedulingIgnoredDuringExecution") or []),
                f"{where}: no preferred podAntiAffinity on kubernetes.io/hostname selecting "
                f"exactly this group's pods")
        for tsc in spec.get("topologySpreadConstraints") or []:
            f.check(tsc.get("whenUnsatisfiable") == "ScheduleAnyway",
                    f"{where}: topologySpreadConstraint on {tsc.get('topologyKey')} should be "
                    f"ScheduleAnyway (a small cluster must still schedule)")
        # Disruptions: exactly one PDB covers the group, selects only it, and leaves a replica.
        covering = [p for p in pdbs if sts in r.pods_selected(p["spec"]["selector"])]
        if f.check(len(covering) == 1, f"{where}: {len(covering)} PodDisruptionBudgets cover its "
                                       f"pods, expected exactly 1 (the eviction API refuses pods "
                                       f"under several)"):
            pdb = covering[0]
            others = [w["metadata"]["name"] for w in r.pods_selected(pdb["spec"]["selector"])
                      if w is not sts]
            f.check(not others, f"{where}: {dl.kn(pdb)} also selects {others}: one PDB per group")
            spec_ = pdb["spec"]
            if "maxUnavailable" in spec_:
                down = int_or_percent(spec_["maxUnavailable"], replicas)
            else:
                down = replicas - int_or_percent(spec_.get("minAvailable", 1), replicas)
            f.check(0 <= down < replicas,
                    f"{where}: {dl.kn(pdb)} allows {down} of {replicas} pods down: a drain could "
                    f"take every replica of the group")
    extra = sorted(set(entries) - set(all_pods))
    f.check(not extra, f"{r.name}: shards[] entries {extra} are no pod of any group")
    f.check(len(cfg["shards"]) == len(entries), f"{r.name}: shard names repeat in the cluster YAML")


def check_cluster_config(r, f):
    router = r.get("Deployment", "moe-router")
    groups = expert_sets(r)
    if not (f.check(router, f"{r.name}: no Deployment/moe-router")
            and f.check(groups, f"{r.name}: no expert StatefulSet (replica group)")):
        return
    check_namespace(r, f)
    f.check(router["spec"].get("replicas", 1) >= 2, f"{r.name}: router needs >= 2 replicas")
    headless = r.get("Service", groups[0]["spec"]["serviceName"])
    if not f.check(headless, f"{r.name}: StatefulSet serviceName "
                             f"{groups[0]['spec']['serviceName']} is not a Service"):
        return
    f.check(headless["spec"].get("clusterIP") == "None",
            f"{r.name}: {dl.kn(headless)} must be headless (clusterIP: None)")
    f.check(headless["spec"].get("publishNotReadyAddresses") is True,
            f"{r.name}: {dl.kn(headless)}: publishNotReadyAddresses, so a shard's name resolves "
            f"while it loads and drains (the router judges its health)")
    for sts in groups:
        f.check(dl.selector_matches({"matchLabels": headless["spec"].get("selector")},
                                    pod_template(sts)["metadata"]["labels"]),
                f"{r.name}: {dl.kn(headless)} does not select the pods of {dl.kn(sts)}")

    rcfg, rc = cluster_config_of(r, router, f)
    ecfgs = [cluster_config_of(r, sts, f) for sts in groups]
    if rcfg is None or any(c is None for c, _ in ecfgs):
        return
    for sts, (ecfg, _) in zip(groups, ecfgs):
        f.check(rcfg == ecfg, f"{r.name}: router and {dl.kn(sts)} mount different cluster configs")
    cfg = rcfg

    # Expert args: what each group runs and where the YAML says it is reached.
    ec = ecfgs[0][1]
    rpc, admin = named_port(ec, "rpc"), named_port(ec, "admin")
    for sts, (_, c) in zip(groups, ecfgs):
        where = f"{r.name}: {dl.kn(sts)}"
        eargs = (c.get("command") or []) + (c.get("args") or [])
        f.check(eargs[:1] == ["moe-expert"], f"{where}: expert command should be moe-expert")
        f.check(flag(eargs, "--shard") == "$(POD_NAME)",
                f"{where}: experts must serve the shards[] entry of their pod's name "
                f"(--shard $(POD_NAME))")
        env = {e["name"]: e for e in c.get("env") or []}
        f.check(((env.get("POD_NAME") or {}).get("valueFrom") or {}).get("fieldRef", {})
                .get("fieldPath") == "metadata.name",
                f"{where}: env POD_NAME must come from the downward API (metadata.name)")
        f.check(named_port(c, "rpc") == rpc and named_port(c, "admin") == admin,
                f"{where}: every group must use the same ports")
        f.check(flag(eargs, "--listen") == f"0.0.0.0:{rpc}", f"{where}: --listen != rpc port")
        f.check(flag(eargs, "--admin") == f"0.0.0.0:{admin}", f"{where}: --admin != admin port")
    check_groups(r, f, groups, cfg, headless, rpc, admin)

    # Router args and the Service clients use.
    rargs = (rc.get("command") or []) + (rc.get("args") or [])
    f.check(rargs[:1] == ["moe-router"], f"{r.name}: router command should be moe-router")
    rrpc, radmin = named_port(rc, "rpc"), named_port(rc, "admin")
    f.check(flag(rargs, "--listen") == f"0.0.0.0:{rrpc}", f"{r.name}: router --listen != rpc port")
    f.check(flag(rargs, "--admin") == f"0.0.0.0:{radmin}",
            f"{r.name}: router --admin != admin port")
    rsvc = r.get("Service", "moe-router")
    if f.check(rsvc, f"{r.name}: no Service/moe-router"):
        port = next(p["port"] for p in rsvc["spec"]["ports"] if p["name"] == "rpc")
        f.check(cfg["router"]["listen"] ==
                f"{rsvc['metadata']['name']}.{r.ns}.svc.cluster.local:{port}",
                f"{r.name}: router.listen {cfg['router']['listen']} is not the Service address")

    workloads = [(router, rc)] + [(sts, c) for sts, (_, c) in zip(groups, ecfgs)]
    # Weights: model.path lies on the read-only PVC mount of all, or on the pod's own volume
    # that a fetch-model init container fills from a URI with a checksum.
    for w, c in workloads:
        check_weights(r, f, w, c, cfg["model"]["path"])

    # Termination: preStop, then SIGTERM and drain_ms of serving while not ready.
    drain_s = cfg.get("timeouts", {}).get("drain_ms", 0) / 1000.0
    f.check(drain_s > 0, f"{r.name}: timeouts.drain_ms should be > 0 on Kubernetes")
    for w, c in workloads:
        grace = pod_template(w)["spec"].get("terminationGracePeriodSeconds", 30)
        pre = prestop_seconds(c)
        f.check(pre > 0, f"{r.name}: {dl.kn(w)}: no preStop sleep")
        f.check(grace > pre + drain_s, f"{r.name}: {dl.kn(w)}: terminationGracePeriodSeconds "
                                       f"{grace} <= preStop {pre} + drain {drain_s}")
    return cfg


def check_weights(r, f, w, c, model_path):
    spec = pod_template(w)["spec"]
    vols = {v["name"]: v for v in spec["volumes"]}
    mounts = [m for m in c.get("volumeMounts") or [] if m["name"] in vols and (
        "persistentVolumeClaim" in vols[m["name"]] or "emptyDir" in vols[m["name"]])]
    on = [m for m in mounts if model_path == m["mountPath"] or
          model_path.startswith(m["mountPath"].rstrip("/") + "/")]
    if not f.check(on, f"{r.name}: {dl.kn(w)}: model.path {model_path} is not on the weights "
                       f"volume {[m['mountPath'] for m in mounts]}"):
        return
    m = on[0]
    f.check(m.get("readOnly") is True, f"{r.name}: {dl.kn(w)}: the service must mount its "
                                       f"weights read-only")
    if "persistentVolumeClaim" in vols[m["name"]]:
        return
    # A volume of the pod's own: the fetch-model init container must fill it, and the service
    # must read the directory it renames into place only when the checksum matched.
    cms = {o["metadata"]["name"]: o for o in r.of("ConfigMap")}
    fetch = next((i for i in spec.get("initContainers") or [] if i["name"] == "fetch-model"),
                 None)
    if not f.check(fetch, f"{r.name}: {dl.kn(w)}: weights on an emptyDir but no fetch-model "
                          f"init container fills it"):
        return
    target = next((x["mountPath"] for x in fetch.get("volumeMounts") or []
                   if x["name"] == m["name"] and not x.get("readOnly")), None)
    f.check(target is not None, f"{r.name}: {dl.kn(w)}: fetch-model does not mount the weights "
                                f"volume writable")
    f.check(target is not None and model_path == target.rstrip("/") + "/model",
            f"{r.name}: {dl.kn(w)}: model.path {model_path} should be the directory fetch-model "
            f"renames into place ({target}/model), so a partial download is never read")
    env = {}
    for e in fetch.get("envFrom") or []:
        env.update((cms.get((e.get("configMapRef") or {}).get("name")) or {}).get("data") or {})
    f.check(env.get("MODEL_URI"), f"{r.name}: {dl.kn(w)}: fetch-model has no MODEL_URI")
    f.check(re.fullmatch(r"[0-9a-f]{64}", env.get("MODEL_SHA256", "")),
            f"{r.name}: {dl.kn(w)}: fetch-model has no MODEL_SHA256 (64 hex digits)")


def check_namespace(r, f):
    """The namespace is created once, apart from every instance (deploy/k8s/namespaces/<ns>.yaml),
    with the restricted Pod Security Standard; no overlay owns it."""
    f.check(not r.of("Namespace"), f"{r.name}: an instance must not create its Namespace (other "
                                   f"instances share it): deploy/k8s/namespaces/")
    path = os.path.join(dl.K8S, "namespaces", f"{r.ns}.yaml")
    if not f.check(os.path.isfile(path), f"{r.name}: no deploy/k8s/namespaces/{r.ns}.yaml"):
        return
    with open(path, encoding="utf-8") as fh:
        ns = yaml.safe_load(fh)
    f.check(ns.get("kind") == "Namespace" and ns["metadata"]["name"] == r.ns,
            f"{r.name}: deploy/k8s/namespaces/{r.ns}.yaml is not Namespace/{r.ns}")
    f.check((ns["metadata"].get("labels") or {}).get("pod-security.kubernetes.io/enforce")
            == "restricted", f"{r.name}: namespace {r.ns} should enforce the restricted Pod "
                             f"Security Standard")


def selectors_of(o):
    """(where, LabelSelector) of every pod selector an object holds."""
    spec = o.get("spec") or {}
    out = []
    if o["kind"] in WORKLOAD_KINDS and o["kind"] not in ("Job", "CronJob"):
        out.append(("selector", spec.get("selector")))
        pod = pod_template(o)["spec"]
        for i, t in enumerate(pod.get("topologySpreadConstraints") or []):
            out.append((f"topologySpreadConstraints[{i}]", t.get("labelSelector")))
        anti = ((pod.get("affinity") or {}).get("podAntiAffinity") or {})
        for i, t in enumerate(anti.get("preferredDuringSchedulingIgnoredDuringExecution") or []):
            out.append((f"podAntiAffinity[{i}]", t["podAffinityTerm"].get("labelSelector")))
    if o["kind"] == "Service" and spec.get("selector"):
        out.append(("selector", {"matchLabels": spec["selector"]}))
    if o["kind"] in ("PodDisruptionBudget", "ServiceMonitor", "PodMonitor"):
        out.append(("selector", spec.get("selector")))
    if o["kind"] == "NetworkPolicy":
        out.append(("podSelector", spec.get("podSelector")))
        for i, rule in enumerate(spec.get("ingress") or []):
            for peer in rule.get("from") or []:
                if "podSelector" in peer and "namespaceSelector" not in peer:
                    out.append((f"ingress[{i}].from.podSelector", peer["podSelector"]))
    return out


def check_instance(r, f):
    """Two instances live in one namespace: every object carries this instance's label and a
    name starting with it, and every selector selects only this instance's pods."""
    if not f.check(r.instance, f"{r.name}: the router Deployment has no {INSTANCE_LABEL} label"):
        return
    for o in r.objs:
        labels = o["metadata"].get("labels") or {}
        f.check(labels.get(INSTANCE_LABEL) == r.instance,
                f"{r.name}: {dl.kn(o)} is not labelled {INSTANCE_LABEL}={r.instance}")
        f.check(o["metadata"]["name"].startswith(r.prefix),
                f"{r.name}: {dl.kn(o)}: name does not start with the instance ({r.prefix})")
        for where, sel in selectors_of(o):
            f.check(((sel or {}).get("matchLabels") or {}).get(INSTANCE_LABEL) == r.instance,
                    f"{r.name}: {dl.kn(o)} {where} would select other instances' pods (no "
                    f"{INSTANCE_LABEL}={r.instance})")
    for w in r.workloads():
        f.check((pod_template(w)["metadata"].get("labels") or {}).get(INSTANCE_LABEL)
                == r.instance, f"{r.name}: {dl.kn(w)}: pods not labelled with the instance")


def check_gpu(r, f):
    router = r.get("Deployment", "moe-router")
    if not router:
        return
    for sts in expert_sets(r):
        ec = pod_template(sts)["spec"]["containers"][0]
        gpu = (ec.get("resources", {}).get("limits") or {}).get("nvidia.com/gpu")
        where = f"{r.name}: {dl.kn(sts)}"
        if r.name == "gpu":
            f.check(str(gpu) == "1",
                    f"{where}: expert limits nvidia.com/gpu should be 1, got {gpu}")
            tol = pod_template(sts)["spec"].get("tolerations") or []
            f.check(any(t.get("key") == "nvidia.com/gpu" for t in tol),
                    f"{where}: experts should tolerate the nvidia.com/gpu taint")
        else:
            f.check(gpu is None, f"{where}: experts request a GPU in a non-GPU overlay")
    for _, c in containers(pod_template(router)["spec"]):
        f.check("nvidia.com/gpu" not in (c.get("resources", {}).get("limits") or {}),
                f"{r.name}: the router should not take a GPU")


def check_network_policies(r, f):
    nps = r.of("NetworkPolicy")
    app_pods = [w for w in r.workloads()]
    deny = [n for n in nps if n["spec"].get("policyTypes") == ["Ingress"]
            and not n["spec"].get("ingress")]
    f.check(deny, f"{r.name}: no default-deny ingress NetworkPolicy")
    for n in deny:
        f.check(set(map(id, r.pods_selected(n["spec"]["podSelector"]))) == set(map(id, app_pods)),
                f"{r.name}: {dl.kn(n)} should select every app pod")
    for n in nps:
        pods = r.pods_selected(n["spec"]["podSelector"])
        if not f.check(pods, f"{r.name}: {dl.kn(n)} selects no pods"):
            continue
        for rule in n["spec"].get("ingress") or []:
            for peer in rule.get("from") or []:
                if "podSelector" in peer and "namespaceSelector" not in peer:
                    f.check(r.pods_selected(peer["podSelector"]),
                            f"{r.name}: {dl.kn(n)}: `from` podSelector selects no pods")
            for p in rule.get("ports") or []:
                f.check(all(port_exists(p["port"], pod_template(w)["spec"]) for w in pods),
                        f"{r.name}: {dl.kn(n)}: port {p['port']} is not a port of its pods")
    # Who may reach what: every (pod, port) -> the peers allowed.
    monitoring = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name":
                                                        "monitoring"}}}
    router_peer = {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "moe-router",
                                                   INSTANCE_LABEL: r.instance}}}

    def peers(app, port):
        out = []
        for n in nps:
            if not any(pod_template(w)["metadata"]["labels"].get("app.kubernetes.io/name") == app
                       for w in r.pods_selected(n["spec"]["podSelector"])):
                continue
            for rule in n["spec"].get("ingress") or []:
                if any(p["port"] == port for p in rule.get("ports") or []) or not rule.get("ports"):
                    out.append(rule.get("from", "anywhere"))
        return out

    f.check(peers("moe-expert", "rpc") == [[router_peer]],
            f"{r.name}: expert rpc should accept only router pods, got {peers('moe-expert', 'rpc')}")
    for app in ("moe-expert", "moe-router"):
        f.check(peers(app, "admin") == [[monitoring]],
                f"{r.name}: {app} admin should accept only the monitoring namespace, got "
                f"{peers(app, 'admin')}")


def check_monitoring(r, f, cfg):
    sms, pms = r.of("ServiceMonitor"), r.of("PodMonitor")
    if not (sms or pms):
        print(f"{r.name}: no monitoring objects (component left out)")
        return
    sm = r.get("ServiceMonitor", "moe-router")
    pm = r.get("PodMonitor", "moe-expert")
    if f.check(sm, f"{r.name}: no ServiceMonitor/moe-router"):
        svcs = [s for s in r.of("Service")
                if dl.selector_matches(sm["spec"]["selector"], s["metadata"].get("labels"))]
        f.check([s["metadata"]["name"] for s in svcs] == [r.prefix + "moe-router"],
                f"{r.name}: ServiceMonitor selects {[s['metadata']['name'] for s in svcs]}")
        for s in svcs:
            f.check(s["metadata"]["labels"].get(sm["spec"].get("jobLabel")) == JOB_NAMES["router"],
                    f"{r.name}: router job label would not be {JOB_NAMES['router']}")
            names = {p["name"] for p in s["spec"]["ports"]}
            for ep in sm["spec"]["endpoints"]:
                f.check(ep["port"] in names, f"{r.name}: ServiceMonitor port {ep['port']} missing")
                f.check(ep.get("path", "/metrics") == "/metrics", f"{r.name}: router scrape path")
    if f.check(pm, f"{r.name}: no PodMonitor/moe-expert"):
        pods = r.pods_selected(pm["spec"]["selector"])
        groups = expert_sets(r)
        f.check(pods and [id(w) for w in pods] == [id(w) for w in groups],
                f"{r.name}: PodMonitor selects {[w['metadata']['name'] for w in pods]}, not the "
                f"expert groups {[w['metadata']['name'] for w in groups]}")
        for w in pods:
            labels = pod_template(w)["metadata"]["labels"]
            f.check(labels.get(pm["spec"].get("jobLabel")) == JOB_NAMES["expert"],
                    f"{r.name}: expert job label would not be {JOB_NAMES['expert']}")
            for ep in pm["spec"]["podMetricsEndpoints"]:
                f.check(port_exists(ep["port"], pod_template(w)["spec"]),
                        f"{r.name}: PodMonitor port {ep['port']} missing")
        if cfg:
            # Every pod of every group labelled shard=<the name of the shards[] entry it serves>,
            # which is its own name (--shard $(POD_NAME)).
            rel = pm["spec"]["podMetricsEndpoints"][0].get("relabelings") or []
            got = {}
            for x in rel:
                if x.get("targetLabel") == "shard" and \
                        x.get("sourceLabels") == ["__meta_kubernetes_pod_name"]:
                    got[x["regex"]] = x["replacement"]
            want = {p: p for w in groups for p in group_pods(w)}
            f.check(got == want, f"{r.name}: PodMonitor shard labels {got} != {want} "
                                 f"(regenerate with deploy/k8s/generate.py)")
    # Alert rules and dashboards: once per namespace (main() checks that exactly one instance
    # there has them); where present, exactly their sources.
    if not r.of("PrometheusRule") and not any(
            (cm["metadata"].get("labels") or {}).get("grafana_dashboard") == "1"
            for cm in r.of("ConfigMap")):
        return  # monitors only: the rules and dashboards come with another instance
    # Alert rules: exactly deploy/prometheus/alerts.yml.
    pr = r.get("PrometheusRule", "moe-cluster")
    if f.check(pr, f"{r.name}: no PrometheusRule/moe-cluster"):
        with open(os.path.join(dl.REPO, "deploy", "prometheus", "alerts.yml")) as fh:
            alerts = yaml.safe_load(fh)
        f.check(pr["spec"] == {"groups": alerts["groups"]},
                f"{r.name}: PrometheusRule differs from deploy/prometheus/alerts.yml "
                f"(run python3 deploy/k8s/generate.py)")
    # Dashboards: one ConfigMap per dashboards/*.json, same bytes, labelled for the sidecar.
    ddir = os.path.join(dl.REPO, "dashboards")
    want = {}
    for n in sorted(os.listdir(ddir)):
        if n.endswith(".json"):
            with open(os.path.join(ddir, n), encoding="utf-8") as fh:
                want[n] = fh.read()
    got = {}
    for cm in r.of("ConfigMap"):
        if (cm["metadata"].get("labels") or {}).get("grafana_dashboard") == "1":
            got.update(cm.get("data") or {})
    f.check(sorted(got) == sorted(want), f"{r.name}: dashboard ConfigMaps {sorted(got)} != "
                                         f"dashboards/*.json {sorted(want)}")
    for n in want:
        f.check(got.get(n) == want[n], f"{r.name}: dashboard {n} differs from dashboards/{n}")


def san_covers(name, host):
    """Whether a certificate DNS name (a wildcard covers exactly one leftmost label) matches."""
    if name.startswith("*."):
        head, _, rest = host.partition(".")
        return bool(head) and rest == name[2:]
    return name == host


def host_of(address):
    return address.rsplit(":", 1)[0].strip("[]")


def check_tls(r, f, cfg):
    """With `tls:` in the cluster YAML: admin.tls without client certificates (kubelet probes
    present none) and no POST action exposed; the files of tls: and admin.tls: on a mounted
    Secret that a cert-manager Certificate of this instance writes, whose DNS names cover the
    router's and every shard's address (server and client usages); HTTPS probes; monitors over
    HTTPS verifying that CA under a name the certificate holds; router RPC only from named
    namespaces. Without tls: no HTTPS probe (it would fail against plain HTTP)."""
    workloads = [w for w in [r.get("Deployment", "moe-router")] + expert_sets(r) if w]
    admin_tls = ((cfg.get("admin") or {}).get("tls")) if cfg else None
    for w in workloads:
        for _, c in containers(pod_template(w)["spec"]):
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                scheme = ((c.get(probe) or {}).get("httpGet") or {}).get("scheme", "HTTP")
                f.check(scheme == ("HTTPS" if admin_tls else "HTTP"),
                        f"{r.name}: {dl.kn(w)} {probe} scheme {scheme} but admin.tls is "
                        f"{'set' if admin_tls else 'unset'}")
    if not cfg or "tls" not in cfg:
        return
    where = f"{r.name}: cluster.yaml"
    if not f.check(admin_tls, f"{where}: tls: without admin.tls: the admin planes would have to "
                              f"listen on loopback, where probes and Prometheus cannot reach them"):
        return
    f.check(admin_tls.get("client_auth") is False,
            f"{where}: admin.tls.client_auth must be false (kubelet probes present no client "
            f"certificate)")
    exposed = (cfg.get("admin") or {}).get("expose_paths")
    f.check(exposed is not None and "/admin/placement" not in exposed,
            f"{where}: admin.expose_paths must be set and leave out /admin/placement (anyone "
            f"reaching an admin port without a client certificate could rewire the router)")
    files = [cfg["tls"][k] for k in ("ca", "cert", "key")] + \
        [admin_tls[k] for k in ("ca", "cert", "key")]
    secrets = set()
    for w in workloads:
        spec = pod_template(w)["spec"]
        c = spec["containers"][0]
        vols = {v["name"]: v for v in spec.get("volumes") or []}
        for path in files:
            m = next((m for m in c.get("volumeMounts") or []
                      if path.startswith(m["mountPath"].rstrip("/") + "/")), None)
            vol = vols.get(m["name"]) if m else None
            if f.check(vol is not None and "secret" in vol,
                       f"{r.name}: {dl.kn(w)}: TLS file {path} is not on a mounted Secret"):
                secrets.add(vol["secret"]["secretName"])
                f.check(m.get("readOnly") is True,
                        f"{r.name}: {dl.kn(w)}: the TLS Secret must be mounted read-only")
    if not f.check(len(secrets) == 1, f"{r.name}: TLS files come from Secrets {sorted(secrets)}, "
                                      f"expected one"):
        return
    secret = secrets.pop()
    certs = [c for c in r.of("Certificate") if c["spec"].get("secretName") == secret]
    if not f.check(len(certs) == 1, f"{r.name}: no cert-manager Certificate writes the Secret "
                                    f"{secret} the pods mount"):
        return
    cert = certs[0]["spec"]
    issuer = cert.get("issuerRef") or {}
    if issuer.get("kind", "Issuer") == "Issuer":
        f.check(r.get("Issuer", issuer.get("name")) is not None,
                f"{r.name}: Certificate issuerRef {issuer.get('name')} is no Issuer of this "
                f"instance")
    dns = cert.get("dnsNames") or []
    hosts = [host_of(cfg["router"]["listen"])] + [host_of(s["listen"]) for s in cfg["shards"]]
    for h in hosts:
        f.check(any(san_covers(n, h) for n in dns),
                f"{r.name}: {h} is not covered by Certificate {certs[0]['metadata']['name']} "
                f"dnsNames {dns}")
    f.check({"server auth", "client auth"} <= set(cert.get("usages") or []),
            f"{r.name}: the Certificate needs usages server auth and client auth (the router is "
            f"the shards' client)")
    for kind, key in (("ServiceMonitor", "endpoints"), ("PodMonitor", "podMetricsEndpoints")):
        for mon in r.of(kind):
            for ep in mon["spec"].get(key) or []:
                tls = ep.get("tlsConfig") or {}
                f.check(ep.get("scheme") == "https" and
                        ((tls.get("ca") or {}).get("secret") or {}).get("name") == secret,
                        f"{r.name}: {dl.kn(mon)} must scrape over https verifying the CA of "
                        f"Secret {secret}")
                f.check(any(san_covers(n, tls.get("serverName", "")) for n in dns),
                        f"{r.name}: {dl.kn(mon)} serverName {tls.get('serverName')} is not in the "
                        f"Certificate's dnsNames")
    # The entry point: only the named client namespaces may call the router.
    for n in r.of("NetworkPolicy"):
        if not any(pod_template(w)["metadata"]["labels"].get("app.kubernetes.io/name") ==
                   "moe-router" for w in r.pods_selected(n["spec"]["podSelector"])):
            continue
        for rule in n["spec"].get("ingress") or []:
            if not any(p["port"] == "rpc" for p in rule.get("ports") or []) and rule.get("ports"):
                continue
            peers = rule.get("from") or []
            f.check(peers and all(set(p) == {"namespaceSelector"} for p in peers),
                    f"{r.name}: {dl.kn(n)}: router rpc should admit only named client "
                    f"namespaces, got {peers or 'anywhere'}")


def run_checks(r, f):
    for w in r.workloads():
        check_security(r, f, w)
        check_probes(r, f, w)
    check_instance(r, f)
    check_selectors(r, f)
    check_references(r, f)
    cfg = check_cluster_config(r, f)
    check_gpu(r, f)
    check_network_policies(r, f)
    check_monitoring(r, f, cfg)
    check_tls(r, f, cfg)
    for o in r.objs:
        if o["kind"] != "Namespace":
            f.check(o["metadata"].get("namespace") == r.ns,
                    f"{r.name}: {dl.kn(o)} is not in namespace {r.ns}")


def _container(r, kind, name):
    return pod_template(r.get(kind, name))["spec"]["containers"][0]


def _set_config(r, edit):
    cm = next(c for c in r.of("ConfigMap") if "cluster.yaml" in c.get("data", {}))
    cfg = yaml.safe_load(cm["data"]["cluster.yaml"])
    edit(cfg)
    cm["data"]["cluster.yaml"] = yaml.safe_dump(cfg)


def _is(entry_name, name):
    """A shards[] entry (or pod) name is `name` within some instance ("<instance>-<name>")."""
    return entry_name == name or entry_name.endswith("-" + name)


def _drop_shard(c, name):
    c["shards"] = [s for s in c["shards"] if not _is(s["name"], name)]


def _entry(c, name):
    return next(s for s in c["shards"] if _is(s["name"], name))


G0, G1 = "moe-expert-g0", "moe-expert-g1"  # the groups of the default placement


def _group_of_one(r):
    r.get("StatefulSet", G1)["spec"].update(replicas=1)
    _set_config(r, lambda c: _drop_shard(c, f"{G1}-1"))
    pm = r.get("PodMonitor", "moe-expert")["spec"]["podMetricsEndpoints"][0]
    pm["relabelings"] = [x for x in pm["relabelings"] if not _is(x["regex"], f"{G1}-1")]


def _required_anti_affinity(r):
    anti = pod_template(r.get("StatefulSet", G0))["spec"]["affinity"]["podAntiAffinity"]
    terms = anti.pop("preferredDuringSchedulingIgnoredDuringExecution")
    anti["requiredDuringSchedulingIgnoredDuringExecution"] = [t["podAffinityTerm"] for t in terms]


# Each mutation breaks one rule; the checks must notice every one (a failure containing the
# expected words), or passing proves nothing.
MUTATIONS = {
    "writable root filesystem": (lambda r: _container(r, "StatefulSet", G0)[
        "securityContext"].pop("readOnlyRootFilesystem"), "readOnlyRootFilesystem"),
    "no memory limit": (lambda r: _container(r, "Deployment", "moe-router")["resources"][
        "limits"].pop("memory"), "limits.memory"),
    "readiness on /healthz": (lambda r: _container(r, "StatefulSet", G1)[
        "readinessProbe"]["httpGet"].update(path="/healthz"), "readinessProbe path"),
    "probe on a missing port": (lambda r: _container(r, "Deployment", "moe-router")[
        "livenessProbe"]["httpGet"].update(port="metrics"), "is not a container port"),
    "headless Service selects nothing": (lambda r: r.get("Service", "moe-expert")["spec"][
        "selector"].update({"app.kubernetes.io/name": "moe-shard"}), "selects no pods"),
    "Service not headless": (lambda r: r.get("Service", "moe-expert")["spec"].pop("clusterIP"),
                             "must be headless"),
    "grace too short": (lambda r: pod_template(r.get("StatefulSet", G0))["spec"].update(
        terminationGracePeriodSeconds=15), "terminationGracePeriodSeconds"),
    "a pod without a shards[] entry": (lambda r: r.get("StatefulSet", G0)["spec"].update(
        replicas=3), f"{G0}-2 has no shards[] entry"),
    "a pod missing from the cluster YAML": (lambda r: _set_config(
        r, lambda c: _drop_shard(c, f"{G1}-1")), f"{G1}-1 has no shards[] entry"),
    "an object without the instance": (lambda r: r.get("PodDisruptionBudget", "moe-router")[
        "metadata"]["labels"].pop(INSTANCE_LABEL), "is not labelled app.kubernetes.io/instance"),
    "a Service over every instance": (lambda r: r.get("Service", "moe-router")["spec"][
        "selector"].pop(INSTANCE_LABEL), "would select other instances' pods"),
    "a monitor over every instance": (lambda r: r.get("PodMonitor", "moe-expert")["spec"][
        "selector"]["matchLabels"].pop(INSTANCE_LABEL), "would select other instances' pods"),
    "a name without the instance": (lambda r: r.get("Service", "moe-expert")["metadata"].update(
        name="moe-expert"), "name does not start with the instance"),
    "an instance that creates the namespace": (lambda r: r.objs.append(
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": r.ns}}),
        "must not create its Namespace"),
    "an entry that is no pod": (lambda r: _set_config(r, lambda c: c["shards"].append(
        dict(_entry(c, f"{G0}-0"), name="shard-0"))), "are no pod of any group"),
    "shard address drift": (lambda r: _set_config(r, lambda c: _entry(c, f"{G0}-1").update(
        listen=f"{G0}-1.moe-expert.elsewhere.svc.cluster.local:7201")), "its DNS name"),
    "replicas with different experts": (lambda r: _set_config(
        r, lambda c: _entry(c, f"{G0}-1").update(experts="4-7")), "the same experts"),
    "a group of one pod": (_group_of_one, "a replica group needs >= 2 pods"),
    "shard picked by ordinal": (lambda r: _container(r, "StatefulSet", G0).update(
        args=["--config", "/etc/moe/cluster.yaml", "--shard-index-from-hostname", "--listen",
              "0.0.0.0:7201", "--admin", "0.0.0.0:9201"]), "--shard $(POD_NAME)"),
    "POD_NAME not from the downward API": (lambda r: _container(r, "StatefulSet", G1)[
        "env"][0].update(value="moe-expert-g1-0") or _container(r, "StatefulSet", G1)["env"][
        0].pop("valueFrom"), "downward API"),
    "group without a PDB": (lambda r: r.objs.remove(r.get("PodDisruptionBudget", G1)),
                            "0 PodDisruptionBudgets cover its pods"),
    "PDB over two groups": (lambda r: r.get("PodDisruptionBudget", G0)["spec"]["selector"][
        "matchLabels"].pop(GROUP_LABEL), "PodDisruptionBudgets cover its pods"),
    "PDB lets the whole group go": (lambda r: r.get("PodDisruptionBudget", G0)["spec"].update(
        maxUnavailable=2), "allows 2 of 2 pods down"),
    "PDB by minAvailable 0": (lambda r: r.get("PodDisruptionBudget", G1)["spec"].update(
        minAvailable=0) or r.get("PodDisruptionBudget", G1)["spec"].pop("maxUnavailable"),
        "allows 2 of 2 pods down"),
    "no minReadySeconds": (lambda r: r.get("StatefulSet", G1)["spec"].pop("minReadySeconds"),
                           "minReadySeconds 0 < 5"),
    "OnDelete updates": (lambda r: r.get("StatefulSet", G0)["spec"].update(
        updateStrategy={"type": "OnDelete"}), "updateStrategy should be RollingUpdate"),
    "required anti-affinity": (_required_anti_affinity, "required podAntiAffinity"),
    "anti-affinity over every group": (lambda r: pod_template(r.get("StatefulSet", G0))["spec"][
        "affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0][
        "podAffinityTerm"]["labelSelector"]["matchLabels"].pop(GROUP_LABEL),
        "selecting exactly this group's pods"),
    "spread required": (lambda r: pod_template(r.get("StatefulSet", G1))["spec"][
        "topologySpreadConstraints"][0].update(whenUnsatisfiable="DoNotSchedule"),
        "should be ScheduleAnyway"),
    "two groups, one label": (lambda r: [w["spec"]["template"]["metadata"]["labels"].update(
        {GROUP_LABEL: "g0"}) for w in [r.get("StatefulSet", G1)]], "is also the label of"),
    "model outside the weights volume": (lambda r: _set_config(
        r, lambda c: c["model"].update(path="/data/model")), "is not on the weights volume"),
    "expert rpc open to all": (lambda r: r.get("NetworkPolicy", "moe-expert-ingress")["spec"][
        "ingress"][0].pop("from"), "expert rpc should accept only router pods"),
    "PDB selects nothing": (lambda r: r.get("PodDisruptionBudget", "moe-router")["spec"][
        "selector"]["matchLabels"].update(app="x"), "selects no pods"),
    "GPU in the cpu overlay": (lambda r: _container(r, "StatefulSet", G1)["resources"][
        "limits"].update({"nvidia.com/gpu": 1}), "request a GPU in a non-GPU overlay"),
    "alert rule drift": (lambda r: r.get("PrometheusRule", "moe-cluster")["spec"]["groups"][0][
        "rules"].pop(), "differs from deploy/prometheus/alerts.yml"),
    "wrong shard label": (lambda r: r.get("PodMonitor", "moe-expert")["spec"][
        "podMetricsEndpoints"][0]["relabelings"][0].update(replacement="shard-9"),
        "PodMonitor shard labels"),
    "a pod without a shard label": (lambda r: r.get("PodMonitor", "moe-expert")["spec"][
        "podMetricsEndpoints"][0]["relabelings"].pop(), "PodMonitor shard labels"),
    "weights read-write": (lambda r: [m.pop("readOnly") for m in _container(
        r, "StatefulSet", G0)["volumeMounts"] if m["name"] == "weights"],
        "mount its weights read-only"),
    "HTTPS probe against plain HTTP": (lambda r: _container(r, "Deployment", "moe-router")[
        "livenessProbe"]["httpGet"].update(scheme="HTTPS"), "livenessProbe scheme HTTPS"),
    "missing ConfigMap": (lambda r: r.objs.remove(next(
        c for c in r.of("ConfigMap") if "cluster.yaml" in c.get("data", {}))),
        "is not a key of a mounted ConfigMap"),
}


def _tls_cert(r):
    return next(c for c in r.of("Certificate") if not c["spec"].get("isCA"))["spec"]


def _router_policy(r):
    return r.get("NetworkPolicy", "moe-router-ingress")["spec"]["ingress"][0]


# The same for an instance with TLS (tls_dir in deploy/k8s/generate.py).
TLS_MUTATIONS = {
    "a shard name outside the certificate": (lambda r: _tls_cert(r).update(dnsNames=[
        n for n in _tls_cert(r)["dnsNames"] if not n.startswith("*.")]),
        "is not covered by Certificate"),
    "router name outside the certificate": (lambda r: _tls_cert(r).update(dnsNames=[
        n for n in _tls_cert(r)["dnsNames"] if "moe-router" not in n]),
        "is not covered by Certificate"),
    "server usage only": (lambda r: _tls_cert(r).update(usages=["server auth"]),
                          "usages server auth and client auth"),
    "plain HTTP probe under admin.tls": (lambda r: _container(r, "StatefulSet", G1)[
        "readinessProbe"]["httpGet"].pop("scheme"), "readinessProbe scheme HTTP"),
    "admin requires client certificates": (lambda r: _set_config(
        r, lambda c: c["admin"]["tls"].update(client_auth=True)), "client_auth must be false"),
    "placement exposed": (lambda r: _set_config(
        r, lambda c: c["admin"]["expose_paths"].append("/admin/placement")),
        "leave out /admin/placement"),
    "tls without admin.tls": (lambda r: _set_config(r, lambda c: c["admin"].pop("tls")),
                              "tls: without admin.tls"),
    "TLS files off the Secret": (lambda r: _set_config(r, lambda c: c["tls"].update(
        key="/etc/moe/tls.key")), "is not on a mounted Secret"),
    "a Secret no Certificate writes": (lambda r: _tls_cert(r).update(secretName="other"),
                                       "no cert-manager Certificate writes the Secret"),
    "plaintext scrape": (lambda r: r.get("PodMonitor", "moe-expert")["spec"][
        "podMetricsEndpoints"][0].update(scheme="http"), "must scrape over https"),
    "scrape under a foreign name": (lambda r: r.get("ServiceMonitor", "moe-router")["spec"][
        "endpoints"][0]["tlsConfig"].update(serverName="example.com"), "serverName example.com"),
    "router rpc open to all": (lambda r: _router_policy(r).pop("from"),
                               "router rpc should admit only named client namespaces"),
    "router rpc from a pod selector": (lambda r: _router_policy(r).update(
        {"from": [{"podSelector": {}}]}), "router rpc should admit only named client"),
}


def _model_source(r):
    return next(c for c in r.of("ConfigMap") if "MODEL_URI" in (c.get("data") or {}))["data"]


# The same for an instance whose pods fetch the model (components/model-fetch).
FETCH_MUTATIONS = {
    "no checksum": (lambda r: _model_source(r).pop("MODEL_SHA256"), "no MODEL_SHA256"),
    "a checksum that is no sha256": (lambda r: _model_source(r).update(MODEL_SHA256="abc"),
                                     "no MODEL_SHA256"),
    "the model read from the download directory": (lambda r: _set_config(
        r, lambda c: c["model"].update(path="/models/.partial/model")), "renames into place"),
    "no init container": (lambda r: pod_template(r.get("StatefulSet", G1))["spec"].pop(
        "initContainers"), "no fetch-model init container"),
    "init container as root": (lambda r: pod_template(r.get("Deployment", "moe-router"))[
        "spec"]["initContainers"][0]["securityContext"].update(runAsNonRoot=False),
        "runAsNonRoot"),
}


def self_test(name, objs, f, mutations=None):
    import copy
    for what, (mutate, expect) in (mutations or MUTATIONS).items():
        r = Rendered(name, copy.deepcopy(objs))
        mutate(r)
        probe = dl.Failures()
        try:
            run_checks(r, probe)
        except Exception as e:  # a crash on broken input is a bug of the checks
            probe.check(False, f"crashed: {e!r}")
        f.check(any(expect in m for m in probe.items),
                f"self-test: the checks did not notice '{what}' in {name} (expected a failure "
                f"with '{expect}', got {probe.items})")


def main():
    f = dl.Failures()
    names = dl.overlays()
    f.check({"gpu", "cpu"} <= set(names), f"overlays gpu and cpu expected, found {names}")
    shared = {}  # namespace -> overlays that install the alert rules and dashboards
    for name in names:
        try:
            objs = dl.render(os.path.join(dl.K8S, "overlays", name))
        except RuntimeError as e:
            f.check(False, str(e))
            continue
        r = Rendered(name, objs)
        shared.setdefault(r.ns, [])
        if r.of("PrometheusRule"):
            shared[r.ns].append(name)
        run_checks(r, f)
        print(f"{name}: {len(r.objs)} objects checked")
        if name == "cpu":
            self_test(name, objs, f)
            print(f"{name}: {len(MUTATIONS)} broken variants rejected")
        if name == "cpu-replicated":
            self_test(name, objs, f, FETCH_MUTATIONS)
            print(f"{name}: {len(FETCH_MUTATIONS)} broken variants rejected")
        if name == "cpu-tls":
            self_test(name, objs, f, TLS_MUTATIONS)
            print(f"{name}: {len(TLS_MUTATIONS)} broken variants rejected")
    for ns, with_rules in sorted(shared.items()):
        f.check(len(with_rules) == 1, f"namespace {ns}: the alert rules and dashboards should "
                                      f"come with exactly one instance, not {with_rules} (the "
                                      f"others include components/monitoring-targets only)")
    return f.report("policy")


if __name__ == "__main__":
    sys.exit(main())
