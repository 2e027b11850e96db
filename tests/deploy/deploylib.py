"""Shared helpers of the deploy tests: find the repository and kubectl, render overlays, match
label selectors. Python 3 stdlib + PyYAML."""

import os
import shutil
import subprocess
import sys

import yaml

REPO = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
K8S = os.path.join(REPO, "deploy", "k8s")
SKIP = 77  # CTest SKIP_RETURN_CODE


def skip(msg):
    print(f"SKIP: {msg}")
    sys.exit(SKIP)


def overlays():
    d = os.path.join(K8S, "overlays")
    return sorted(o for o in os.listdir(d) if os.path.isfile(os.path.join(d, o, "kustomization.yaml")))


def kubectl():
    k = os.environ.get("KUBECTL") or shutil.which("kubectl")
    if not k:
        skip("kubectl not found (needed for `kubectl kustomize`; set KUBECTL or install kubectl "
             ">= 1.27, which works offline)")
    return k


def render(path):
    """`kubectl kustomize PATH` as a list of objects (no cluster needed)."""
    r = subprocess.run([kubectl(), "kustomize", path], capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        raise RuntimeError(f"kubectl kustomize {os.path.relpath(path, REPO)} failed:\n{r.stderr}")
    return [d for d in yaml.safe_load_all(r.stdout) if d]


def kn(obj):
    return f"{obj['kind']}/{obj['metadata']['name']}"


def selector_matches(selector, labels):
    """A LabelSelector (matchLabels + matchExpressions) against a label map. An empty selector
    matches everything, as in Kubernetes."""
    if selector is None:
        return False
    labels = labels or {}
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for e in selector.get("matchExpressions") or []:
        key, op, values = e["key"], e["operator"], e.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


class Failures:
    """Collects every failed check so one run reports them all."""

    def __init__(self):
        self.items = []

    def check(self, ok, msg):
        if not ok:
            self.items.append(msg)
        return ok

    def report(self, what):
        if self.items:
            for m in self.items:
                print(f"FAIL: {m}")
            print(f"{what}: {len(self.items)} failure(s)")
            return 1
        print(f"{what}: ok")
        return 0
