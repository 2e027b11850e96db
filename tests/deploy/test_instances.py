#!/usr/bin/env python3
"""Two instances in one namespace: every overlay rendered (kubectl kustomize), grouped by
namespace; where a namespace holds several instances (overlays/cpu and overlays/cpu-replicated in
moe-dev), no two objects share a kind and name, no selector of one instance selects a pod of
another, their monitors scrape only their own pods, and every object of the namespace validates
against the Kubernetes schemas (as validate_manifests.py). Broken variants (a shared name, a
selector without the instance) must be caught. Exit 77 (skip) without kubectl or
kubernetes-validate."""

import copy
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import check_policy as cp  # noqa: E402
import deploylib as dl  # noqa: E402
import validate_manifests as vm  # noqa: E402  (skips without kubernetes-validate)


def collisions(instances):
    """instances: {instance: [objects]} of one namespace -> problems (empty: none)."""
    problems = []
    owner = {}
    for inst, objs in instances.items():
        for o in objs:
            key = (o["kind"], o["metadata"]["name"])
            if key in owner and owner[key] != inst:
                problems.append(f"{key[0]}/{key[1]} is both {owner[key]}'s and {inst}'s")
            owner[key] = inst
    for inst, objs in instances.items():
        for o in objs:
            for where, sel in cp.selectors_of(o):
                for other, others in instances.items():
                    if other == inst:
                        continue
                    for w in (x for x in others if x["kind"] in cp.WORKLOAD_KINDS):
                        if dl.selector_matches(sel, cp.pod_template(w)["metadata"].get("labels")):
                            problems.append(f"{inst}: {dl.kn(o)} {where} selects the pods of "
                                            f"{other}'s {dl.kn(w)}")
    return problems


def main():
    f = dl.Failures()
    crds = vm.crd_validators()
    by_ns = {}
    for name in dl.overlays():
        objs = dl.render(os.path.join(dl.K8S, "overlays", name))
        r = cp.Rendered(name, objs)
        f.check(r.instance, f"overlays/{name}: no instance label")
        by_ns.setdefault(r.ns, {})
        f.check(r.instance not in by_ns[r.ns], f"overlays/{name}: instance {r.instance} is "
                                               f"already installed in {r.ns}")
        by_ns[r.ns][r.instance] = objs
    shared = {ns: insts for ns, insts in by_ns.items() if len(insts) >= 2}
    f.check(shared, "no namespace holds two instances: nothing shows that they can coexist "
                    f"({ {ns: sorted(i) for ns, i in by_ns.items()} })")
    for ns, instances in sorted(shared.items()):
        for p in collisions(instances):
            f.check(False, f"namespace {ns}: {p}")
        n = 0
        for inst, objs in instances.items():
            for o in objs:
                n += 1
                for err in vm.errors_of(o, crds):
                    f.check(False, f"namespace {ns}: {inst}: {dl.kn(o)}: {err}")
        print(f"namespace {ns}: instances {sorted(instances)}, {n} objects, no collision, "
              f"schemas ok")
        # The checks must notice what they exist for.
        a, b = sorted(instances)[:2]
        for what, mutate, expect in [
            ("a name shared by two instances",
             lambda i: next(o for o in i[b] if o["kind"] == "Service")["metadata"].update(
                 name=next(o for o in i[a] if o["kind"] == "Service")["metadata"]["name"]),
             "is both"),
            ("a Service selecting every instance's routers",
             lambda i: next(o for o in i[b] if o["kind"] == "Service" and "moe-router" in o[
                 "metadata"]["name"])["spec"]["selector"].pop(cp.INSTANCE_LABEL),
             "selects the pods of"),
            ("a PDB over both instances' shards",
             lambda i: next(o for o in i[a] if o["kind"] == "PodDisruptionBudget" and "expert"
                            in o["metadata"]["name"])["spec"]["selector"]["matchLabels"].pop(
                 cp.INSTANCE_LABEL),
             "selects the pods of"),
        ]:
            broken = copy.deepcopy(instances)
            mutate(broken)
            found = collisions(broken)
            f.check(any(expect in p for p in found),
                    f"self-test: '{what}' not noticed (expected '{expect}', got {found})")
    return f.report("two instances per namespace")


if __name__ == "__main__":
    sys.exit(main())
