#!/usr/bin/env python3
"""The shard-group autoscaling example (deploy/k8s/autoscaling): the HPA validates against the
Kubernetes schema, scales a StatefulSet overlays/cpu renders (same namespace, instance and group),
keeps >= 2 pods, and reads only metrics the prometheus-adapter rules serve; each rule's series is a
metric of the router's or a shard's contract with the labels its resource overrides name.
Exit 77 (skip) without kubectl or kubernetes-validate."""

import os
import re
import sys

import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import check_policy as cp  # noqa: E402
import deploylib as dl  # noqa: E402
import validate_manifests as vm  # noqa: E402  (skips without kubernetes-validate)

sys.path.insert(0, os.path.join(dl.REPO, "tests", "observability"))
import observability_test as ot  # noqa: E402

AUTOSCALING = os.path.join(dl.K8S, "autoscaling")
TARGET_LABELS = {"namespace", "pod"}  # what Prometheus adds to every target on Kubernetes


def main():
    f = dl.Failures()
    with open(os.path.join(AUTOSCALING, "shard-group-hpa.yaml")) as fh:
        hpa = yaml.safe_load(fh)
    with open(os.path.join(AUTOSCALING, "prometheus-adapter-values.yaml")) as fh:
        rules = yaml.safe_load(fh)["rules"]["custom"]
    for err in vm.errors_of(hpa, vm.crd_validators()):
        f.check(False, f"shard-group-hpa.yaml: {err}")

    r = cp.Rendered("cpu", dl.render(os.path.join(dl.K8S, "overlays", "cpu")))
    ref = hpa["spec"]["scaleTargetRef"]
    sts = r.get(ref["kind"], ref["name"])
    if f.check(sts, f"HPA scales {ref['kind']}/{ref['name']}, which overlays/cpu does not render"):
        f.check(hpa["metadata"]["namespace"] == r.ns, f"HPA in {hpa['metadata']['namespace']}, "
                                                      f"its StatefulSet in {r.ns}")
        want = {k: v for k, v in sts["metadata"]["labels"].items()}
        got = hpa["metadata"].get("labels") or {}
        f.check(all(got.get(k) == want.get(k) for k in (cp.INSTANCE_LABEL, cp.GROUP_LABEL)),
                f"HPA labels {got} do not name its StatefulSet's instance and group {want}")
    f.check(2 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"],
            "HPA minReplicas must be >= 2 (a group keeps a replica through a disruption) and <= "
            "maxReplicas")

    served = {}
    contract = {}
    for header in ("router_service/router_metrics.h", "expert_service/expert_metrics.h"):
        contract.update(ot.parse_contract(os.path.join(dl.REPO, header)))
    for rule in rules:
        m = re.match(r"^(\w+)\{", rule["seriesQuery"])
        name = m.group(1) if m else rule["seriesQuery"]
        if not f.check(name in contract, f"adapter rule series {name} is not a contract metric"):
            continue
        labels = contract[name][1] | TARGET_LABELS
        for label in rule["resources"]["overrides"]:
            f.check(label in labels, f"adapter rule {name}: override label {label} is not a label "
                                     f"of {name} ({sorted(labels)})")
        served[rule["name"]["as"]] = name
    for m in hpa["spec"]["metrics"]:
        f.check(m["type"] == "Pods" and m["pods"]["metric"]["name"] in served,
                f"HPA metric {m} is not a per-pod metric the adapter rules serve "
                f"({sorted(served)})")
    print(f"HPA {hpa['metadata']['name']}: {len(hpa['spec']['metrics'])} metrics, adapter "
          f"serves {sorted(served)}")
    return f.report("shard-group autoscaling")


if __name__ == "__main__":
    sys.exit(main())
