#!/usr/bin/env python3
"""Renders deploy/k8s/base, base/expert-group (one replica group) and every overlay with
`kubectl kustomize` and validates every object against the Kubernetes OpenAPI schema of a pinned
version in strict mode (unknown fields are errors), using the schemas bundled by the pip package
kubernetes-validate; Prometheus operator and cert-manager objects are validated against
tests/deploy/schemas/*.json (compact schemas derived from the upstream CRDs and API reference,
additionalProperties: false). Offline. Exit 77 (skip) when kubectl or kubernetes-validate is
missing.

  pip install kubernetes-validate==1.37.0
  python3 tests/deploy/validate_manifests.py
"""

import copy
import json
import os
import sys

import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import deploylib as dl  # noqa: E402

KUBERNETES_VALIDATE_VERSION = "1.37.0"  # the pip package (schemas bundled, no network)
K8S_SCHEMA_VERSION = "1.30.0"  # oldest Kubernetes these manifests target
CRD_SCHEMAS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "servicemonitor-monitoring-v1.json",
    ("monitoring.coreos.com/v1", "PodMonitor"): "podmonitor-monitoring-v1.json",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "prometheusrule-monitoring-v1.json",
    # cert-manager (overlays with TLS): compact schemas written from its API reference.
    ("cert-manager.io/v1", "Certificate"): "certificate-cert-manager-v1.json",
    ("cert-manager.io/v1", "Issuer"): "issuer-cert-manager-v1.json",
}

try:
    import jsonschema
    import kubernetes_validate
    from kubernetes_validate.version import __version__ as kv_version
except ImportError:
    dl.skip(f"python package kubernetes-validate not installed "
            f"(pip install kubernetes-validate=={KUBERNETES_VALIDATE_VERSION})")


def crd_validators():
    out = {}
    for key, name in CRD_SCHEMAS.items():
        with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "schemas", name)) as f:
            schema = json.load(f)
        jsonschema.Draft202012Validator.check_schema(schema)
        out[key] = jsonschema.Draft202012Validator(schema)
    return out


def errors_of(obj, crds):
    """Validation errors of one object (empty list: valid)."""
    key = (obj.get("apiVersion"), obj.get("kind"))
    if key in crds:
        return [f"{'.'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}"
                for e in crds[key].iter_errors(obj)]
    try:
        kubernetes_validate.validate(obj, K8S_SCHEMA_VERSION, strict=True)
    except kubernetes_validate.ValidationError as e:
        return [f"{'.'.join(map(str, e.path)) or '(root)'}: {e.message}"]
    except kubernetes_validate.SchemaNotFoundError as e:
        return [f"no schema: {e.message}"]
    return []


def self_test(objs, crds, f):
    """The validators must actually reject an unknown field and a wrong type, or passing proves
    nothing."""
    for kind, mutate in [
        ("StatefulSet", lambda o: o["spec"]["template"]["spec"]["containers"][0].update(bogus=1)),
        ("Deployment", lambda o: o["spec"].update(replicas="two")),
        ("Service", lambda o: o["spec"].update(clusterIp="None")),  # misspelt clusterIP
        ("PodMonitor", lambda o: o["spec"]["podMetricsEndpoints"][0].update(intervall="5s")),
        ("ServiceMonitor", lambda o: o["spec"].update(endpoint=[])),
        ("PrometheusRule", lambda o: o["spec"]["groups"][0]["rules"][0].update(fore="1m")),
        ("Certificate", lambda o: o["spec"].update(dnsName=["x"])),  # misspelt dnsNames
        ("Certificate", lambda o: o["spec"].update(usages=["server-auth"])),
        ("Issuer", lambda o: o["spec"].update(ca={"secret": "x"})),
        ("ServiceMonitor", lambda o: o["spec"]["endpoints"][0].update(
            tlsConfig={"ca": {"secret": {"name": "x", "key": "ca.crt"}}, "servername": "x"})),
    ]:
        sample = next((o for o in objs if o["kind"] == kind), None)
        if not f.check(sample is not None, f"self-test: no {kind} rendered"):
            continue
        bad = copy.deepcopy(sample)
        mutate(bad)
        f.check(errors_of(bad, crds), f"self-test: a broken {kind} was accepted (validator "
                                      f"is not strict)")


def main():
    print(f"kubernetes-validate {kv_version} (pinned {KUBERNETES_VALIDATE_VERSION}), "
          f"Kubernetes schema {K8S_SCHEMA_VERSION}, strict")
    if kv_version != KUBERNETES_VALIDATE_VERSION:
        print(f"note: kubernetes-validate {kv_version} installed, tests pin "
              f"{KUBERNETES_VALIDATE_VERSION}")
    crds = crd_validators()
    f = dl.Failures()
    targets = [("base", os.path.join(dl.K8S, "base")),
               ("base/expert-group", os.path.join(dl.K8S, "base", "expert-group"))] + [
        (f"overlays/{o}", os.path.join(dl.K8S, "overlays", o)) for o in dl.overlays()]
    f.check(len(targets) >= 4, "expected base, base/expert-group and at least the gpu and cpu "
                               "overlays")
    all_objs = []
    for name, path in targets:
        try:
            objs = dl.render(path)
        except RuntimeError as e:
            f.check(False, str(e))
            continue
        all_objs += objs
        for obj in objs:
            for err in errors_of(obj, crds):
                f.check(False, f"{name}: {dl.kn(obj)}: {err}")
        print(f"{name}: {len(objs)} objects validated")
    # Objects the README applies as they are: examples, and the namespaces (created once, shared
    # by the instances installed in them).
    for sub in ("examples", "namespaces"):
        exdir = os.path.join(dl.K8S, sub)
        for n in sorted(os.listdir(exdir)) if os.path.isdir(exdir) else []:
            if n.endswith(".yaml"):
                with open(os.path.join(exdir, n), encoding="utf-8") as fh:
                    for obj in (d for d in yaml.safe_load_all(fh) if d):
                        for err in errors_of(obj, crds):
                            f.check(False, f"{sub}/{n}: {dl.kn(obj)}: {err}")
                print(f"{sub}/{n}: validated")
    self_test(all_objs, crds, f)
    return f.report("schema validation")


if __name__ == "__main__":
    sys.exit(main())
