#!/usr/bin/env python3
"""Unit tests of tools/moe_placement.py (moe-placement: replicate hot experts from the router's
load). Usage: test_moe_placement.py [PATH-OF-build/bin/moe-placement]; with the path, the
end-to-end test also runs the built copy."""

import os
import subprocess
import sys
import tempfile
import unittest

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.normpath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(REPO, "tools"))
import moe_placement as mp  # noqa: E402

TOOL = os.path.join(REPO, "tools", "moe_placement.py")
DEFAULT = os.path.join(REPO, "deploy", "local", "default-cluster.yaml")
BUILT = None  # set from argv

# The embedded default model: hidden 1024, intermediate 3584, 8 experts, 2 MoE layers. One
# expert on one layer is 3 * 1024 * 3584 * 4 B = 42 MiB, on both layers 84 MiB.
MODEL_JSON = ('{"model_type": "mixtral", "hidden_size": 1024, "intermediate_size": 3584, '
              '"num_local_experts": 8, "num_experts_per_tok": 2, "num_hidden_layers": 2}')
MODEL = mp.model_info(yaml.safe_load(MODEL_JSON), "config.json")
PER_EXPERT = 84  # MiB on both layers

SAMPLE = """\
# HELP moe_expert_assignments_total Token-to-expert assignments routed.
# TYPE moe_expert_assignments_total counter
moe_expert_assignments_total{layer="0",expert="0"} 100
moe_expert_assignments_total{expert="1",layer="0"} 1.0e+02
moe_expert_assignments_total{layer="0", expert="2"} 100 1712345678000
moe_expert_assignments_total{layer="0",expert="3"} 9e2
moe_expert_assignments_totally_not{layer="0",expert="3"} 5
moe_expert_assignments_total_created{layer="0",expert="3"} 1.7e9
moe_router_requests_total{code="ok"} 12
"""


def skewed(hot=3, layers=(0, 1), hot_count=1000, cold_count=100):
    """Prometheus text where expert `hot` gets hot_count assignments on each layer, the others
    cold_count."""
    lines = ["# TYPE moe_expert_assignments_total counter"]
    for layer in layers:
        for e in range(8):
            v = hot_count if e == hot else cold_count
            lines.append(f'moe_expert_assignments_total{{layer="{layer}",expert="{e}"}} {v}')
    return "\n".join(lines) + "\n"


def cluster(shards=None, **extra):
    doc = {
        "model": {"path": "../../models/default"},
        "router": {"listen": "127.0.0.1:7100", "admin": "127.0.0.1:9100",
                   "batching": {"enabled": True, "window_us": 2000}},
        "shards": shards or [
            {"name": "shard-0", "listen": "127.0.0.1:7201", "experts": "0-3", "threads": 1},
            {"name": "shard-1", "listen": "127.0.0.1:7202", "experts": "4-7", "threads": 1},
        ],
        "timeouts": {"request_ms": 60000, "drain_ms": 0},
    }
    doc.update(extra)
    return doc


def holders(doc, e):
    return [s["name"] for s in doc["shards"] if e in s["experts"]]


class MetricsTest(unittest.TestCase):
    def test_parses_the_sample(self):
        load = mp.parse_metrics(SAMPLE)
        self.assertEqual(load, {(0, 0): 100.0, (0, 1): 100.0, (0, 2): 100.0, (0, 3): 900.0})

    def test_series_of_the_same_pair_are_summed(self):
        # The counter's name before the metric migration (README) is still read, and summed.
        text = ('moe_expert_tokens_routed_total{layer="0",expert="1",instance="a"} 2\n'
                'moe_expert_tokens_routed_total{instance="b",layer="0",expert="1"} 3.5\n')
        self.assertEqual(mp.parse_metrics(text), {(0, 1): 5.5})

    def test_no_series_is_an_error(self):
        with self.assertRaisesRegex(mp.ConfigError, "no moe_expert_assignments_total series"):
            mp.parse_metrics('moe_router_requests_total{code="ok"} 1\n# only comments\n')

    def test_bad_lines_name_the_line(self):
        with self.assertRaisesRegex(mp.ConfigError, "m.txt:2: .*without the expert label"):
            mp.parse_metrics('# x\nmoe_expert_tokens_routed_total{layer="0"} 1\n', "m.txt")
        with self.assertRaisesRegex(mp.ConfigError, "m.txt:1: .*not a number"):
            mp.parse_metrics('moe_expert_tokens_routed_total{layer="0",expert="1"} x\n', "m.txt")
        with self.assertRaisesRegex(mp.ConfigError, "not a finite count"):
            mp.parse_metrics('moe_expert_tokens_routed_total{layer="0",expert="1"} NaN\n')

    def test_shares_per_layer(self):
        s = mp.shares(mp.parse_metrics(SAMPLE), 8, [0, 1])
        self.assertEqual(list(s), [0])  # layer 1 has no traffic
        self.assertAlmostEqual(s[0][3], 0.75)
        self.assertEqual(s[0][7], 0.0)


class ModelTest(unittest.TestCase):
    def test_default_model(self):
        self.assertEqual(MODEL, {"hidden": 1024, "intermediate": 3584, "shared_intermediate": 0,
                                 "experts": 8, "moe_layers": [0, 1]})

    def test_family_keys(self):
        q = mp.model_info({"model_type": "qwen2_moe", "hidden_size": 64, "intermediate_size": 999,
                           "moe_intermediate_size": 32, "num_experts": 6,
                           "num_hidden_layers": 4, "decoder_sparse_step": 2,
                           "shared_expert_intermediate_size": 48}, "c")
        self.assertEqual((q["intermediate"], q["experts"], q["moe_layers"],
                          q["shared_intermediate"]), (32, 6, [1, 3], 48))
        d = mp.model_info({"model_type": "deepseek_v3", "hidden_size": 64,
                           "moe_intermediate_size": 16, "n_routed_experts": 8,
                           "num_hidden_layers": 3, "first_k_dense_replace": 1,
                           "n_shared_experts": 2}, "c")
        self.assertEqual((d["experts"], d["moe_layers"], d["shared_intermediate"]),
                         (8, [1, 2], 32))
        with self.assertRaisesRegex(mp.ConfigError, "c: key 'intermediate_size' missing"):
            mp.model_info({"model_type": "mixtral", "hidden_size": 8}, "c")


class PlanTest(unittest.TestCase):
    def test_hot_expert_gets_n_replicas(self):
        out, rep = mp.plan(cluster(), MODEL, mp.parse_metrics(skewed(hot=3)), 2, 1.5, 1000)
        self.assertEqual(holders(out, 3), ["shard-0", "shard-1"])
        for e in (0, 1, 2, 4, 5, 6, 7):  # the cold ones stay where they were
            self.assertEqual(len(holders(out, e)), 1, e)
        self.assertEqual(out["shards"][0]["experts"], [0, 1, 2, 3])
        self.assertEqual(out["shards"][1]["experts"], [3, 4, 5, 6, 7])  # sorted list
        self.assertEqual([x["expert"] for x in rep["experts"] if x["hot"]], [3])

    def test_n_1_changes_nothing_but_the_form(self):
        out, _ = mp.plan(cluster(), MODEL, mp.parse_metrics(skewed()), 1, 1.5, 1000)
        self.assertEqual([s["experts"] for s in out["shards"]], [[0, 1, 2, 3], [4, 5, 6, 7]])

    def test_replicas_go_to_the_shards_with_the_most_free_budget(self):
        shards = [{"name": "a", "listen": "x:1", "experts": [0, 1, 2, 3, 4, 5]},
                  {"name": "b", "listen": "x:2", "experts": [6]},
                  {"name": "c", "listen": "x:3", "experts": [7]},
                  {"name": "d", "listen": "x:4", "experts": [6, 7]}]
        load = mp.parse_metrics(skewed(hot=0))
        out, _ = mp.plan(cluster(shards), MODEL, load, 3, 1.5, 1000)
        self.assertEqual(holders(out, 0), ["a", "b", "c"])  # b, c: 1 expert each; b first

    def test_budget_stops_replication(self):
        # 4 experts = 336 MiB per shard; 400 MiB leaves no room for a fifth (420).
        out, rep = mp.plan(cluster(), MODEL, mp.parse_metrics(skewed(hot=3)), 2, 1.5, 400)
        self.assertEqual(holders(out, 3), ["shard-0"])
        self.assertEqual(rep["experts"][3]["replicas"], 1)
        self.assertIn("no shard has room", mp.summary(rep, 2))
        # Two hot experts, room for one more each: the hotter one is placed first.
        text = skewed(hot=3).replace('layer="0",expert="5"} 100', 'layer="0",expert="5"} 800')
        out, _ = mp.plan(cluster(), MODEL, mp.parse_metrics(text), 2, 1.5, 420)
        self.assertEqual(holders(out, 3), ["shard-0", "shard-1"])
        self.assertEqual(holders(out, 5), ["shard-0", "shard-1"])
        out, _ = mp.plan(cluster(), MODEL, mp.parse_metrics(text), 2, 1.5, 419.9)
        self.assertEqual(holders(out, 3), ["shard-0"])

    def test_hottest_first_when_room_is_short(self):
        # Experts 2 and 3 are hot, both on shard-0; shard-1 has room for one more expert only
        # (420 MiB = 5 experts): the hotter of the two gets it, whichever id it has.
        for hot, other, count in ((3, 2, 800), (2, 3, 1200)):
            text = skewed(hot=3, layers=(0,)).replace('layer="0",expert="2"} 100',
                                         f'layer="0",expert="2"}} {count}')
            out, rep = mp.plan(cluster(), MODEL, mp.parse_metrics(text), 2, 1.5, 420)
            self.assertEqual([x["expert"] for x in rep["experts"] if x["hot"]], [2, 3])
            self.assertEqual(holders(out, hot), ["shard-0", "shard-1"])
            self.assertEqual(holders(out, other), ["shard-0"])

    def test_never_drops_the_last_holder(self):
        # Every expert is cold, and expert 0 is even unseen: all stay where they are.
        load = {(0, e): 100.0 for e in range(1, 8)}
        out, _ = mp.plan(cluster(), MODEL, load, 3, 1.5, 10000)
        self.assertEqual([s["experts"] for s in out["shards"]], [[0, 1, 2, 3], [4, 5, 6, 7]])
        # Replicas that exist already are kept, even for cold experts.
        shards = [{"name": "a", "listen": "x:1", "experts": "0-7"},
                  {"name": "b", "listen": "x:2", "experts": [0, 1]}]
        out, _ = mp.plan(cluster(shards), MODEL, mp.parse_metrics(skewed(hot=5)), 2, 1.5, 1000)
        self.assertEqual(out["shards"][1]["experts"], [0, 1, 5])

    def test_budget_too_small_for_the_current_placement(self):
        with self.assertRaisesRegex(mp.ConfigError,
                                    r"shard shard-0 already needs 336\.0 MiB .*too small"):
            mp.plan(cluster(), MODEL, mp.parse_metrics(skewed()), 2, 1.5, 300)

    def test_bad_options(self):
        load = mp.parse_metrics(skewed())
        with self.assertRaisesRegex(mp.ConfigError, "--replicas: 0 must be an integer >= 1"):
            mp.plan(cluster(), MODEL, load, 0, 1.5, 1000)
        with self.assertRaisesRegex(mp.ConfigError, "--memory-budget-mib"):
            mp.plan(cluster(), MODEL, load, 2, 1.5, 0)
        with self.assertRaisesRegex(mp.ConfigError, "shards\\[1\\] \\(shard-1\\): expert 8"):
            mp.plan(cluster([cluster()["shards"][0], dict(cluster()["shards"][1],
                                                         experts="4-8")]),
                    MODEL, load, 2, 1.5, 1000)

    def test_layers_restrict_cost_and_replica_count(self):
        # c serves only layer 1: an expert costs it 42 MiB, and it adds a holder on layer 1 only.
        shards = [{"name": "a", "listen": "x:1", "experts": "0-7"},
                  {"name": "c", "listen": "x:3", "experts": [0], "layers": [1]},
                  {"name": "d", "listen": "x:4", "experts": [1], "layers": [0]}]
        out, rep = mp.plan(cluster(shards), MODEL, mp.parse_metrics(skewed(hot=3)), 2, 1.5, 700)
        self.assertEqual(holders(out, 3), ["a", "c", "d"])  # layer 0 needed d as well
        self.assertEqual(rep["experts"][3]["replicas"], 2)
        self.assertEqual([s["used_mib"] for s in rep["shards"]], [672, 84, 84])
        self.assertEqual(out["shards"][1]["layers"], [1])

    def test_deterministic(self):
        load = mp.parse_metrics(skewed(hot=2))
        a = mp.render(mp.plan(cluster(), MODEL, load, 2, 1.5, 1000)[0])
        b = mp.render(mp.plan(cluster(), MODEL, dict(reversed(list(load.items()))), 2, 1.5,
                              1000)[0])
        self.assertEqual(a, b)


class OutputTest(unittest.TestCase):
    def test_round_trips_and_keeps_other_keys(self):
        doc = cluster(routing={"missing_expert": "reroute", "noisy_topk": {"seed": 7}},
                      future_section={"anything": [1, "two"]})  # unknown keys are left alone
        doc["shards"][0]["layers"] = "all"
        doc["shards"][1]["expert"] = {"batching": {"max_rows": 1024}}
        out, _ = mp.plan(doc, MODEL, mp.parse_metrics(skewed(hot=3)), 2, 1.5, 1000)
        text = mp.render(out, ["header"])
        self.assertTrue(text.startswith("# header\n"))
        back = yaml.safe_load(text)
        self.assertEqual(back, out)
        for key in ("model", "router", "timeouts", "routing", "future_section"):
            self.assertEqual(back[key], doc[key])
        self.assertEqual(list(back), list(doc))  # key order kept
        for before, after in zip(doc["shards"], back["shards"]):
            self.assertEqual({k: v for k, v in before.items() if k != "experts"},
                             {k: v for k, v in after.items() if k != "experts"})
            # What common/config.cc accepts: a list of non-negative ints, none twice.
            self.assertTrue(all(isinstance(e, int) and e >= 0 for e in after["experts"]))
            self.assertEqual(after["experts"], sorted(set(after["experts"])))
        self.assertIn("  experts: [3, 4, 5, 6, 7]\n", text)
        self.assertIn("  listen: 127.0.0.1:7201\n", text)


class CliTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        d = self.tmp.name
        os.makedirs(os.path.join(d, "deploy", "local"))
        os.makedirs(os.path.join(d, "models", "default"))
        with open(os.path.join(d, "models", "default", "config.json"), "w") as f:
            f.write(MODEL_JSON)
        self.config = os.path.join(d, "deploy", "local", "cluster.yaml")
        with open(DEFAULT) as src, open(self.config, "w") as dst:
            dst.write(src.read())  # the real default file, model.path relative to it
        self.metrics = os.path.join(d, "m.txt")
        with open(self.metrics, "w") as f:
            f.write(skewed(hot=3) + 'moe_router_requests_total{code="ok"} 3\n')

    def tearDown(self):
        self.tmp.cleanup()

    def tools(self):
        cmds = [[sys.executable, TOOL]]
        if BUILT:
            cmds.append([BUILT])
        return cmds

    def run_tool(self, cmd, *args):
        return subprocess.run(cmd + list(args), capture_output=True, text=True, timeout=60)

    def test_end_to_end(self):
        for cmd in self.tools():
            out = os.path.join(self.tmp.name, "c2.yaml")
            r = self.run_tool(cmd, "--config", self.config, "--metrics", self.metrics,
                              "--replicas", "2", "--memory-budget-mib", "600", "--out", out)
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertEqual(r.stdout, "")
            self.assertRegex(r.stderr, r"expert +3 share 0\.5882 hot +shard-0 -> shard-0, "
                                       r"shard-1")
            self.assertIn("shard shard-1: 420.0 / 600 MiB, 5 experts", r.stderr)
            with open(out) as f:
                text = f.read()
            new = yaml.safe_load(text)
            with open(self.config) as f:
                old = yaml.safe_load(f)
            self.assertEqual([s["experts"] for s in new["shards"]],
                             [[0, 1, 2, 3], [3, 4, 5, 6, 7]])
            old["shards"][1]["experts"] = new["shards"][1]["experts"]
            old["shards"][0]["experts"] = new["shards"][0]["experts"]
            self.assertEqual(new, old)
            # stdout by default, the same text
            r2 = self.run_tool(cmd, "--config", self.config, "--metrics", self.metrics,
                               "--replicas", "2", "--memory-budget-mib", "600")
            self.assertEqual(r2.returncode, 0, r2.stderr)
            self.assertEqual(r2.stdout, text)

    def test_errors_exit_2(self):
        base = ["--config", self.config, "--memory-budget-mib", "600"]
        empty = os.path.join(self.tmp.name, "empty.txt")
        with open(empty, "w") as f:
            f.write("# HELP nothing\nup 1\n")
        cases = [
            (["--metrics", os.path.join(self.tmp.name, "nope.txt"), "--replicas", "2"],
             "cannot read the metrics"),
            (["--metrics", "http://127.0.0.1:1/metrics", "--replicas", "2"],
             "cannot read the metrics"),
            (["--metrics", empty, "--replicas", "2"], "no moe_expert_assignments_total series"),
            (["--metrics", self.metrics, "--replicas", "0"], "--replicas: 0 must be"),
        ]
        for cmd in self.tools():
            for args, msg in cases:
                r = self.run_tool(cmd, *(base + args))
                self.assertEqual(r.returncode, 2, (args, r.stderr))
                self.assertIn(msg, r.stderr)
                self.assertEqual(r.stdout, "")
            r = self.run_tool(cmd, "--config", self.config, "--metrics", self.metrics,
                              "--replicas", "2", "--memory-budget-mib", "100")
            self.assertEqual(r.returncode, 2)
            self.assertIn("budget is too small to keep the current placement", r.stderr)
            os.remove(os.path.join(self.tmp.name, "models", "default", "config.json"))
            r = self.run_tool(cmd, *(base + ["--metrics", self.metrics, "--replicas", "2"]))
            self.assertEqual(r.returncode, 2)
            self.assertIn("cannot read the model's config.json", r.stderr)
            with open(os.path.join(self.tmp.name, "models", "default", "config.json"), "w") as f:
                f.write(MODEL_JSON)


if __name__ == "__main__":
    if len(sys.argv) > 1 and not sys.argv[1].startswith("-"):
        BUILT = sys.argv.pop(1)
    unittest.main()
