#!/usr/bin/env python3
"""Unit tests of tools/k8s_cluster_config.py (local cluster YAML -> Kubernetes cluster YAML).
The checked-in overlay files are compared with the generator's output by
`deploy/k8s/generate.py --check` (CTest deploy_generated_up_to_date)."""

import os
import subprocess
import sys
import tempfile
import unittest

import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import deploylib as dl  # noqa: E402

sys.path.insert(0, os.path.join(dl.REPO, "tools"))
import k8s_cluster_config as kcc  # noqa: E402

TOOL = os.path.join(dl.REPO, "tools", "k8s_cluster_config.py")
DEFAULT = os.path.join(dl.REPO, "deploy", "local", "default-cluster.yaml")

LOCAL = {
    "model": {"path": "../../models/default"},
    "router": {"listen": "127.0.0.1:7100", "admin": "127.0.0.1:9100", "device": "cpu",
               "max_tokens": 4096},
    "shards": [
        {"name": "a", "listen": "127.0.0.1:7201", "admin": "127.0.0.1:9201", "device": "auto",
         "experts": "0-3", "layers": [0]},
        {"name": "b", "listen": "127.0.0.1:7202", "device": "cuda:1", "experts": [4, 5, "6-7"]},
        {"name": "c", "listen": "127.0.0.1:7203", "experts": [0, 1, 2, 3, 4, 5, 6, 7],
         "layers": "all"},
    ],
    "timeouts": {"request_ms": 1000, "shard_call_ms": 500, "connect_ms": 100, "drain_ms": 0},
}


class ConvertTest(unittest.TestCase):
    def test_addresses_follow_the_statefulset(self):
        c = kcc.convert(LOCAL, namespace="prod")
        for i, s in enumerate(c["shards"]):
            host = f"moe-expert-{i}.moe-expert.prod.svc.cluster.local"
            self.assertEqual(s["listen"], f"{host}:7201")
            self.assertEqual(s["admin"], f"{host}:9201")  # even when the local shard had none
        self.assertEqual(c["router"]["listen"], "moe-router.prod.svc.cluster.local:7100")
        self.assertEqual(c["router"]["admin"], "moe-router.prod.svc.cluster.local:9100")

    def test_everything_else_carried_over(self):
        c = kcc.convert(LOCAL)
        self.assertEqual([s["name"] for s in c["shards"]], ["a", "b", "c"])
        self.assertEqual(c["shards"][0]["experts"], "0-3")
        self.assertEqual(c["shards"][1]["experts"], [4, 5, "6-7"])
        self.assertEqual(c["shards"][0]["layers"], [0])
        self.assertEqual(c["shards"][2]["layers"], "all")
        self.assertNotIn("layers", c["shards"][1])
        self.assertEqual([s.get("device") for s in c["shards"]], ["auto", "cuda:1", None])
        self.assertEqual(c["router"]["device"], "cpu")
        self.assertEqual(c["router"]["max_tokens"], 4096)
        self.assertEqual(c["timeouts"]["request_ms"], 1000)
        self.assertEqual(c["timeouts"]["shard_call_ms"], 500)
        self.assertEqual(c["timeouts"]["connect_ms"], 100)

    def test_routing_and_shared_expert_carried_over(self):
        local = dict(LOCAL, routing={"noisy_topk": {"seed": 7}, "capacity_factor": 1.25,
                                     "capacity_renormalize": True,
                                     "missing_expert": "reroute"})
        local["shards"] = [dict(LOCAL["shards"][0], shared_expert=True)] + LOCAL["shards"][1:]
        c = kcc.convert(local)
        self.assertEqual(c["routing"], local["routing"])
        self.assertTrue(c["shards"][0]["shared_expert"])
        self.assertNotIn("shared_expert", c["shards"][1])
        self.assertEqual(yaml.safe_load(kcc.render(c, [])), c)  # reads back as written
        self.assertNotIn("routing", kcc.convert(LOCAL))
        with self.assertRaisesRegex(kcc.ConfigError, "routing.capacity: unknown key"):
            kcc.convert(dict(LOCAL, routing={"capacity": 2}))

    def test_model_path_and_drain(self):
        c = kcc.convert(LOCAL, model_path="/weights/mixtral", drain_ms=7000)
        self.assertEqual(c["model"]["path"], "/weights/mixtral")
        self.assertEqual(c["timeouts"]["drain_ms"], 7000)  # 0 locally -> the k8s value
        kept = dict(LOCAL, timeouts={"drain_ms": 3000})
        self.assertEqual(kcc.convert(kept)["timeouts"]["drain_ms"], 3000)
        unset = {k: v for k, v in LOCAL.items() if k != "timeouts"}
        self.assertEqual(kcc.convert(unset)["timeouts"], {"drain_ms": 15000})
        with self.assertRaises(kcc.ConfigError):
            kcc.convert(LOCAL, model_path="models")  # must be a mount path

    def test_names_domain_ports_devices_hosts(self):
        c = kcc.convert(LOCAL, namespace="ml", statefulset="shard", headless_service="shards",
                        router_service="gate", cluster_domain="k8s.example", rpc_port=8000,
                        admin_port=8001, router_port=7000, router_admin_port=7001,
                        shard_device="cpu")
        self.assertEqual(c["shards"][2]["listen"], "shard-2.shards.ml.svc.k8s.example:8000")
        self.assertEqual(c["shards"][2]["admin"], "shard-2.shards.ml.svc.k8s.example:8001")
        self.assertEqual(c["router"]["listen"], "gate.ml.svc.k8s.example:7000")
        self.assertEqual({s["device"] for s in c["shards"]}, {"cpu"})
        c = kcc.convert(LOCAL, shard_hosts=["10.0.0.2", "10.0.0.3", "10.0.0.4"],
                        router_host="10.0.0.1")
        self.assertEqual(c["shards"][1]["listen"], "10.0.0.3:7201")
        self.assertEqual(c["router"]["listen"], "10.0.0.1:7100")
        with self.assertRaises(kcc.ConfigError):
            kcc.convert(LOCAL, shard_hosts=["10.0.0.2"])
        with self.assertRaises(kcc.ConfigError):
            kcc.convert(LOCAL, namespace="Not_A_Label")

    def test_blas_threads_are_not_carried_but_can_be_set(self):
        local = dict(LOCAL, router=dict(LOCAL["router"], threads=1),
                     shards=[dict(sh, threads=1) for sh in LOCAL["shards"]])
        c = kcc.convert(local)
        self.assertNotIn("threads", c["router"])
        self.assertTrue(all("threads" not in sh for sh in c["shards"]))
        c = kcc.convert(local, shard_threads=4, router_threads=2)
        self.assertEqual(c["router"]["threads"], 2)
        self.assertEqual([sh["threads"] for sh in c["shards"]], [4] * len(LOCAL["shards"]))

    def test_errors_name_the_key(self):
        cases = [
            (dict(LOCAL, extra=1), "extra: unknown key"),
            (dict(LOCAL, router={"listen": "x:1", "thread": 2}), "router.thread: unknown key"),
            (dict(LOCAL, shards=[{"name": "a", "listen": "x:1", "experts": [0], "gpu": 0}]),
             "shards[0].gpu: unknown key"),
            (dict(LOCAL, shards=[{"name": "a", "listen": "x:1"}]), "shards[0].experts: missing"),
            (dict(LOCAL, shards=[]), "shards: expected a non-empty list"),
            (dict(LOCAL, shards=[LOCAL["shards"][0], LOCAL["shards"][0]]), "used twice"),
            (dict(LOCAL, timeouts={"drain": 1}), "timeouts.drain: unknown key"),
            ({k: v for k, v in LOCAL.items() if k != "model"}, "model: missing"),
        ]
        for local, msg in cases:
            with self.assertRaises(kcc.ConfigError, msg=msg) as e:
                kcc.convert(local)
            self.assertIn(msg, str(e.exception))

    def test_rendered_yaml_reads_back(self):
        c = kcc.convert(LOCAL, namespace="prod")
        text = kcc.render(c, ["header"])
        self.assertTrue(text.startswith("# header\n"))
        self.assertEqual(yaml.safe_load(text), c)
        # Ranges stay quoted strings, as the local file writes them.
        self.assertIn('experts: "0-3"', text)

    def test_podmonitor_patch(self):
        local = dict(LOCAL, shards=[dict(LOCAL["shards"][0], name="a$1")] + LOCAL["shards"][1:])
        c = kcc.convert(local)
        ops = yaml.safe_load(kcc.podmonitor_patch(c, ["h"], statefulset="moe-expert"))
        self.assertEqual(ops[0]["op"], "add")
        self.assertEqual(ops[0]["path"], "/spec/podMetricsEndpoints/0/relabelings")
        rel = ops[0]["value"]
        self.assertEqual([(r["regex"], r["replacement"]) for r in rel],
                         [("moe-expert-0", "a$$1"), ("moe-expert-1", "b"), ("moe-expert-2", "c")])
        self.assertTrue(all(r["targetLabel"] == "shard" and
                            r["sourceLabels"] == ["__meta_kubernetes_pod_name"] for r in rel))


class ReplicaGroupTest(unittest.TestCase):
    def test_r2_gives_two_entries_per_group_with_identical_experts(self):
        c = kcc.convert(LOCAL, namespace="prod", replicas=2)
        names = [s["name"] for s in c["shards"]]
        self.assertEqual(names, ["moe-expert-g0-0", "moe-expert-g0-1", "moe-expert-g1-0",
                                 "moe-expert-g1-1", "moe-expert-g2-0", "moe-expert-g2-1"])
        for s in c["shards"]:  # each entry at its own pod's stable DNS name
            host = f"{s['name']}.moe-expert.prod.svc.cluster.local"
            self.assertEqual((s["listen"], s["admin"]), (f"{host}:7201", f"{host}:9201"))
        for k, local in enumerate(LOCAL["shards"]):
            pair = c["shards"][2 * k:2 * k + 2]
            strip = [{x: v for x, v in s.items() if x not in ("name", "listen", "admin")}
                     for s in pair]
            self.assertEqual(strip[0], strip[1])  # replicas: the same experts, layers, device
            self.assertEqual(strip[0]["experts"], local["experts"])
            self.assertEqual(strip[0].get("layers"), local.get("layers"))
            self.assertEqual(strip[0].get("device"), local.get("device"))
        self.assertEqual(yaml.safe_load(kcc.render(c, [])), c)

    def test_r3_and_what_groups_carry(self):
        local = dict(LOCAL, shards=[dict(LOCAL["shards"][0], shared_expert=True,
                                         expert={"batching": {"enabled": True}})])
        c = kcc.convert(local, replicas=3, shard_device="cpu", shard_threads=2)
        self.assertEqual(len(c["shards"]), 3)
        for s in c["shards"]:
            self.assertTrue(s["shared_expert"])
            self.assertEqual(s["expert"], {"batching": {"enabled": True}})
            self.assertEqual((s["device"], s["threads"]), ("cpu", 2))
        groups = kcc.replica_groups(local, replicas=3)
        self.assertEqual(groups, [{"name": "g0", "statefulset": "moe-expert-g0", "source": "a",
                                   "experts": "0-3", "pods": ["moe-expert-g0-0", "moe-expert-g0-1",
                                                              "moe-expert-g0-2"]}])

    def test_r1_keeps_todays_layout(self):
        self.assertEqual(kcc.convert(LOCAL, namespace="prod", replicas=1),
                         kcc.convert(LOCAL, namespace="prod"))
        c = kcc.convert(LOCAL, namespace="prod", replicas=1)
        self.assertEqual([s["name"] for s in c["shards"]], ["a", "b", "c"])
        self.assertEqual(c["shards"][1]["listen"],
                         "moe-expert-1.moe-expert.prod.svc.cluster.local:7201")
        self.assertEqual(kcc.replica_groups(LOCAL, replicas=1), [])
        with open(DEFAULT) as f:
            local = yaml.safe_load(f)
        # Byte for byte what the generator wrote before replica groups existed.
        text = kcc.render(kcc.convert(local, namespace="moe-dev", shard_device="cpu"), ["h"])
        self.assertIn("  - name: shard-0\n    listen: moe-expert-0.moe-expert.moe-dev.svc"
                      ".cluster.local:7201\n", text)
        self.assertNotIn("replica group", text)

    def test_r_below_1_is_an_error(self):
        for bad in (0, -1, 1.5, "2", True):
            with self.assertRaisesRegex(kcc.ConfigError, "--replicas"):
                kcc.convert(LOCAL, replicas=bad)

    def test_names_and_limits(self):
        c = kcc.convert(LOCAL, replicas=2, statefulset="shard", headless_service="shards",
                        namespace="ml", cluster_domain="k8s.example")
        self.assertEqual(c["shards"][5]["listen"], "shard-g2-1.shards.ml.svc.k8s.example:7201")
        with self.assertRaisesRegex(kcc.ConfigError, "longer than 52"):
            kcc.convert(LOCAL, replicas=2, statefulset="x" * 50)
        hosts = [f"10.0.0.{i}" for i in range(6)]
        c = kcc.convert(LOCAL, replicas=2, shard_hosts=hosts)
        self.assertEqual([s["listen"] for s in c["shards"]], [f"{h}:7201" for h in hosts])
        with self.assertRaisesRegex(kcc.ConfigError, "3 hosts for 6 shards"):
            kcc.convert(LOCAL, replicas=2, shard_hosts=hosts[:3])

    def test_podmonitor_patch_labels_every_pod(self):
        c = kcc.convert(LOCAL, replicas=2)
        ops = yaml.safe_load(kcc.podmonitor_patch(c, ["h"], replicas=2))
        rel = ops[0]["value"]
        self.assertEqual([(r["regex"], r["replacement"]) for r in rel],
                         [(s["name"], s["name"]) for s in c["shards"]])

    def test_group_kustomizations(self):
        groups = kcc.replica_groups(LOCAL, replicas=2)
        files = kcc.group_kustomizations(groups, ["h"], "../../base/expert-group", replicas=2)
        self.assertEqual(sorted(files), ["g0/kustomization.yaml", "g1/kustomization.yaml",
                                         "g2/kustomization.yaml", "kustomization.yaml"])
        self.assertEqual(yaml.safe_load(files["kustomization.yaml"])["resources"],
                         ["g0", "g1", "g2"])
        g1 = yaml.safe_load(files["g1/kustomization.yaml"])
        self.assertEqual(g1["resources"], ["../../base/expert-group"])
        self.assertEqual(g1["nameSuffix"], "-g1")
        self.assertEqual(g1["labels"], [{"pairs": {kcc.GROUP_LABEL: "g1"},
                                         "includeSelectors": True, "includeTemplates": True}])
        self.assertEqual(g1["replicas"], [{"name": "moe-expert", "count": 2}])


def covers(name, host):
    """A certificate DNS name matches host (a wildcard stands for exactly one label)."""
    if name.startswith("*."):
        head, _, rest = host.partition(".")
        return bool(head) and rest == name[2:]
    return name == host


class TlsTest(unittest.TestCase):
    OPTS = {"namespace": "prod", "replicas": 2, "tls_dir": "/etc/moe-tls",
            "statefulset": "x-moe-expert", "router_service": "x-moe-router",
            "tls_secret": "x-moe-tls"}

    def test_tls_and_admin_sections(self):
        c = kcc.convert(LOCAL, **self.OPTS)
        files = {"ca": "/etc/moe-tls/ca.crt", "cert": "/etc/moe-tls/tls.crt",
                 "key": "/etc/moe-tls/tls.key"}
        self.assertEqual(c["tls"], files)  # client_auth left at its default: mutual
        self.assertEqual(c["admin"]["tls"], dict(files, client_auth=False))
        self.assertEqual(c["admin"]["expose_paths"], ["/metrics", "/healthz", "/readyz"])
        text = kcc.render(c, ["h"])
        self.assertEqual(yaml.safe_load(text)["admin"], c["admin"])  # renders and reads back
        c = kcc.convert(LOCAL, **dict(self.OPTS, admin_expose_paths=["/metrics"]))
        self.assertEqual(c["admin"]["expose_paths"], ["/metrics"])
        self.assertNotIn("tls", kcc.convert(LOCAL))
        self.assertNotIn("admin", kcc.convert(LOCAL))
        # A local admin.expose_paths is carried over, with or without TLS.
        local = dict(LOCAL, admin={"expose_paths": ["/healthz"]})
        self.assertEqual(kcc.convert(local)["admin"], {"expose_paths": ["/healthz"]})
        self.assertEqual(kcc.convert(local, **self.OPTS)["admin"]["expose_paths"], ["/healthz"])

    def test_tls_errors(self):
        cases = [
            (dict(LOCAL, tls={"ca": "a", "cert": "b", "key": "c"}), {}, "--tls-dir"),
            (dict(LOCAL, admin={"tls": {"ca": "a"}}), {}, "--tls-dir"),
            (dict(LOCAL, admin={"exposed": []}), {}, "admin.exposed: unknown key"),
            (LOCAL, {"tls_dir": "etc/tls"}, "--tls-dir: 'etc/tls' must be absolute"),
            (LOCAL, {"tls_dir": "/t", "admin_expose_paths": ["metrics"]}, "must start with /"),
            (LOCAL, {"client_namespaces": ["Bad_NS"]}, "is not a namespace name"),
        ]
        for local, opts, expected in cases:
            with self.assertRaises(kcc.ConfigError) as e:
                kcc.convert(local, **opts)
            self.assertIn(expected, str(e.exception))

    def test_certificate_covers_every_address(self):
        c = kcc.convert(LOCAL, **self.OPTS)
        files = kcc.tls_manifests(["h"], **self.OPTS)
        self.assertEqual(sorted(files), ["tls-expert-monitor.yaml", "tls-expert.yaml",
                                         "tls-router-monitor.yaml", "tls-router.yaml", "tls.yaml"])
        objs = list(yaml.safe_load_all(files["tls.yaml"]))
        issuers = {o["metadata"]["name"]: o for o in objs if o["kind"] == "Issuer"}
        certs = {o["spec"]["secretName"]: o["spec"] for o in objs if o["kind"] == "Certificate"}
        leaf = certs["x-moe-tls"]
        self.assertTrue(certs["x-moe-tls-ca"]["isCA"])
        self.assertEqual(issuers[leaf["issuerRef"]["name"]]["spec"]["ca"]["secretName"],
                         "x-moe-tls-ca")
        hosts = [s["listen"].rsplit(":", 1)[0] for s in c["shards"]]
        hosts.append(c["router"]["listen"].rsplit(":", 1)[0])
        self.assertEqual(len(hosts), 7)
        for h in hosts:
            self.assertTrue(any(covers(n, h) for n in leaf["dnsNames"]), h)
        self.assertIn("x-moe-router", leaf["dnsNames"])  # clients in the namespace dial it short
        self.assertEqual({"server auth", "client auth"} - set(leaf["usages"]), set())
        for name in ("tls-router.yaml", "tls-expert.yaml"):
            pod = yaml.safe_load(files[name])["spec"]["template"]["spec"]
            self.assertEqual(pod["volumes"][0]["secret"]["secretName"], "x-moe-tls")
            self.assertEqual(pod["containers"][0]["volumeMounts"][0]["mountPath"], "/etc/moe-tls")
            self.assertEqual(pod["containers"][0]["readinessProbe"]["httpGet"]["scheme"], "HTTPS")
        for name in ("tls-router-monitor.yaml", "tls-expert-monitor.yaml"):
            ops = yaml.safe_load(files[name])
            self.assertEqual(ops[0]["value"], "https")
            server = ops[1]["value"]["serverName"]
            self.assertTrue(any(covers(n, server) for n in leaf["dnsNames"]), server)
        with self.assertRaises(kcc.ConfigError):
            kcc.tls_manifests(["h"])  # no tls_dir

    def test_client_namespaces_patch(self):
        ops = yaml.safe_load(kcc.client_namespaces_patch(["h"], client_namespaces=["a", "b"]))
        self.assertEqual(ops[0]["path"], "/spec/ingress/0")
        peers = ops[0]["value"]["from"]
        self.assertEqual(peers[0]["namespaceSelector"]["matchExpressions"][0]["values"],
                         ["a", "b"])
        self.assertEqual(ops[0]["value"]["ports"], [{"port": "rpc", "protocol": "TCP"}])
        with self.assertRaises(kcc.ConfigError):
            kcc.client_namespaces_patch(["h"])


class CliTest(unittest.TestCase):
    def test_tls_dir(self):
        r = subprocess.run([sys.executable, TOOL, DEFAULT, "--tls-dir", "/tls",
                            "--admin-expose-paths", "/metrics,/healthz"],
                           capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stderr)
        c = yaml.safe_load(r.stdout)
        self.assertEqual(c["tls"]["cert"], "/tls/tls.crt")
        self.assertEqual(c["admin"]["expose_paths"], ["/metrics", "/healthz"])
        self.assertIs(c["admin"]["tls"]["client_auth"], False)

    def test_writes_config_and_patch(self):
        with tempfile.TemporaryDirectory() as d:
            out, patch = os.path.join(d, "cluster.yaml"), os.path.join(d, "patch.yaml")
            r = subprocess.run([sys.executable, TOOL, DEFAULT, "--namespace", "team-a",
                                "--model-path", "/models/default", "-o", out,
                                "--podmonitor-patch", patch], capture_output=True, text=True)
            self.assertEqual(r.returncode, 0, r.stderr)
            with open(out) as f:
                c = yaml.safe_load(f)
            self.assertEqual(c["model"]["path"], "/models/default")
            self.assertEqual(c["shards"][1]["listen"],
                             "moe-expert-1.moe-expert.team-a.svc.cluster.local:7201")
            with open(patch) as f:
                self.assertEqual(len(yaml.safe_load(f)[0]["value"]), len(c["shards"]))
            with open(DEFAULT) as f:
                local = yaml.safe_load(f)
            self.assertEqual([s["experts"] for s in c["shards"]],
                             [s["experts"] for s in local["shards"]])

    def test_replicas_and_groups_dir(self):
        with tempfile.TemporaryDirectory() as d:
            out, gdir = os.path.join(d, "cluster.yaml"), os.path.join(d, "groups")
            r = subprocess.run([sys.executable, TOOL, DEFAULT, "--replicas", "2", "-o", out,
                                "--groups-dir", gdir, "--group-base", "../base"],
                               capture_output=True, text=True)
            self.assertEqual(r.returncode, 0, r.stderr)
            with open(out) as f:
                c = yaml.safe_load(f)
            self.assertEqual(len(c["shards"]), 4)
            with open(os.path.join(gdir, "g1", "kustomization.yaml")) as f:
                self.assertEqual(yaml.safe_load(f)["resources"], ["../base"])
            for bad in (["--replicas", "0"], ["--groups-dir", gdir]):
                r = subprocess.run([sys.executable, TOOL, DEFAULT, *bad], capture_output=True,
                                   text=True)
                self.assertEqual(r.returncode, 2, bad)
                self.assertIn("--replicas", r.stderr)

    def test_error_exit_status(self):
        with tempfile.TemporaryDirectory() as d:
            bad = os.path.join(d, "bad.yaml")
            with open(bad, "w") as f:
                f.write("model: {path: m}\nshards:\n  - {name: a, listen: 'x:1', experts: [0], "
                        "replicas: 2}\n")
            r = subprocess.run([sys.executable, TOOL, bad], capture_output=True, text=True)
            self.assertEqual(r.returncode, 2)
            self.assertIn("shards[0].replicas: unknown key", r.stderr)


if __name__ == "__main__":
    unittest.main(verbosity=1)
