#!/usr/bin/env python3
"""Every program a user runs follows the same command-line conventions (common/cli.h):

  --help       exit 0, the usage on stdout, naming every flag the README, scripts, tests and
               deploy manifests use (so a flag is not renamed or lost)
  --version    exit 0, "<program> <version>" on stdout, the version of project() in CMakeLists.txt
  a bad value  exit 2 (an unknown flag, a value that is not a number or out of range, a missing
               value), stderr naming the flag and the reason; never a crash (a signal) or a hang

The real binaries of a build run here, one table row per case; nothing else is started (no
value in the table gets as far as loading a model).

  python3 tests/cli/cli_test.py BIN_DIR
"""

import os
import subprocess
import sys
import tempfile
import unittest

REPO = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
sys.path.insert(0, os.path.join(REPO, "tools"))
import moe_version  # noqa: E402

BIN = None  # set from argv
TOOLS = os.path.join(REPO, "tools")
EXISTING = os.path.join(REPO, "deploy", "local", "default-cluster.yaml")  # a file that exists

# program -> (how to run it, flags --help must list, [(bad arguments, text stderr must contain)]).
# A program's `bin:` name is looked up in BIN_DIR; `py:` runs a script of tools/ with python3.
PROGRAMS = {
    "moe-router": ("bin:moe-router", ["--config", "--listen", "--admin"], [
        (["--config"], "--config: needs a value"),
        ([], "--config is required"),
        (["--config", "/nonexistent.yaml"], "--config"),
        (["--config", EXISTING, "--listen", "nohost"], "--listen: 'nohost' is not host:port"),
        (["--config", EXISTING, "--admin", "127.0.0.1:70000"], "--admin: port '70000'"),
        (["--config", EXISTING, "--shard", "s0"], "--shard"),  # a shard flag: not the router's
    ]),
    "moe-expert": ("bin:moe-expert", ["--config", "--shard", "--shard-index",
                                      "--shard-index-from-hostname", "--listen", "--admin"], [
        (["--config", EXISTING], "name the shard with one of --shard"),
        (["--config", EXISTING, "--shard-index", "-1"], "--shard-index: -1 is out of range"),
        (["--config", EXISTING, "--shard-index", "abc"], "--shard-index: 'abc' is not a whole"),
        (["--config", EXISTING, "--shard", "a", "--shard-index", "1"], "--shard excludes"),
        (["--config", EXISTING, "--shard-index-from-hostname=maybe"],
         "--shard-index-from-hostname: 'maybe' is not a switch value"),
    ]),
    "moe-cluster": ("bin:moe-cluster", ["--config", "--log-dir", "--ready-timeout-s",
                                        "--prometheus", "--prometheus-rules",
                                        "--prometheus-scrape-interval"], [
        (["--config", EXISTING, "--ready-timeout-s", "0"], "--ready-timeout-s: 0 is out of range"),
        (["--config", EXISTING, "--ready-timeout-s", "-5"], "--ready-timeout-s: -5 is out of"),
        (["--config", EXISTING, "--prometheus=nohost"], "--prometheus: 'nohost' is not host:port"),
        (["--config", EXISTING, "--prometheus-scrape-interval", "5"],
         "--prometheus-scrape-interval: '5' is not a Prometheus duration"),
        (["--config", EXISTING, "--prometheus-rules", "/nonexistent.yml"], "--prometheus-rules"),
        (["--log-dir", "/tmp", "--", "true"], "--config is required"),
    ]),
    "moe-client": ("bin:moe-client", ["--config", "--router", "--tokens", "--batch", "--input",
                                      "--layer", "--concurrency", "--dtype", "--seed", "--check",
                                      "--model", "--tolerance", "--deadline-ms", "--json",
                                      "--quiet"], [
        (["--router", "127.0.0.1:1", "--tokens", "-5"], "--tokens: -5 is out of range"),
        (["--router", "127.0.0.1:1", "--batch", "abc"], "--batch: 'abc' is not a whole number"),
        (["--router", "127.0.0.1:1", "--batch", "0"], "--batch: 0 is out of range"),
        (["--router", "127.0.0.1:1", "--tokens", "99999999999999999999999"],
         "--tokens: 99999999999999999999999 is out of range"),
        (["--router", "127.0.0.1:1", "--layer", "-2"], "--layer: -2 is out of range"),
        (["--router", "127.0.0.1:1", "--dtype", "f64"], "--dtype: 'f64' is not one of f32|bf16"),
        (["--router", "127.0.0.1:1", "--tolerance", "nan"], "--tolerance: 'nan' is not a finite"),
        (["--router", "127.0.0.1:1", "--check=maybe"], "--check: 'maybe' is not a switch value"),
        (["--router", "127.0.0.1"], "--router: '127.0.0.1' is not host:port"),
        (["--tokens", "5"], "name the router with --config or --router"),
        (["--router", "127.0.0.1:1", "--tokens"], "--tokens: needs a value"),
    ]),
    "moe-bench": ("bin:moe-bench", ["--config", "--batches", "--concurrency",
                                    "--concurrency-tokens", "--repeats", "--client-overhead",
                                    "--dram-gbps", "--batch1-samples", "--json"], [
        (["--client-overhead", "-1"], "--client-overhead: -1 is out of range"),
        (["--batches", "0"], "--batches: in list '0': 0 is out of range"),
        (["--batches", "1,,8"], "--batches: in list '1,,8': '' is not a whole number"),
        (["--concurrency", "16y8"], "--concurrency: '16y8' is not CLIENTSxBATCH"),
        (["--concurrency", "-1x8"], "--concurrency: clients in '-1x8': -1 is out of range"),
        (["--repeats", "0"], "--repeats: 0 is out of range"),
        (["--concurrency-tokens", "abc"], "--concurrency-tokens: 'abc' is not a whole number"),
        (["--batch1-samples", "0"], "--batch1-samples: 0 is out of range"),
        (["--dram-gbps", "nan"], "--dram-gbps: 'nan' is not a finite"),
    ]),
    "moe-chaos-bench": ("bin:moe-chaos-bench", ["--config", "--requests", "--rounds"], [
        (["--requests", "0"], "--requests: 0 is out of range"),
        (["--rounds", "-5"], "--rounds: -5 is out of range"),
        (["--rounds", "x"], "--rounds: 'x' is not a whole number"),
    ]),
    "moe-gate-bench": ("bin:moe-gate-bench", ["--hidden", "--experts", "--batches",
                                              "--repeats"], [
        (["--hidden", "0"], "--hidden: 0 is out of range"),
        (["--experts", "abc"], "--experts: 'abc' is not a whole number"),
        (["--repeats", "1.5"], "--repeats: '1.5' is not a whole number"),
    ]),
    "moe-expert-ffn-bench": ("bin:moe-expert-ffn-bench", [
        "--hidden", "--intermediate", "--experts", "--top-k", "--batches", "--dtypes", "--variants",
        "--repeats", "--threads", "--device", "--rows-per-expert"], [
        (["--hidden", "0"], "--hidden: 0 is out of range"),
        (["--repeats", "1.5"], "--repeats: '1.5' is not a whole number"),
        (["--dtypes", "f64"], "--dtypes: unknown dtype 'f64'"),
        (["--variants", "gelu"], "--variants: unknown variant 'gelu'"),
        (["--device", "foo"], "--device: 'foo' is not cpu or cuda:N"),
    ]),
    "moe-make-checkpoint": ("bin:moe-make-checkpoint", [
        "--out", "--model-type", "--hidden", "--intermediate", "--experts", "--top-k", "--layers",
        "--seed", "--dtype", "--files", "--norm-topk-prob", "--shared-intermediate",
        "--decoder-sparse-step", "--mlp-only-layers", "--first-k-dense", "--n-group",
        "--topk-group", "--routed-scaling", "--moe-expert-interval", "--moe-single-layer-gate",
        "--moe-mixtral-gating", "--moe-feature-no-mul-topk", "--moe-logits-norm",
        "--noise-weights"], [
        (["--out", "OUT", "--hidden", "-5"], "--hidden: -5 is out of range"),
        (["--out", "OUT", "--experts", "8k"], "--experts: '8k' is not a whole number"),
        (["--out", "OUT", "--model-type", "llama"], "--model-type: 'llama' is not one of"),
        (["--out", "OUT", "--top-k", "9"], "--top-k: at most --experts"),
        (["--out", "OUT", "--routed-scaling", "0"], "--routed-scaling: 0 is out of range"),
        (["--out", "OUT", "--mlp-only-layers", "0,"], "--mlp-only-layers: in list '0,'"),
        (["--out", "OUT", "--norm-topk-prob=maybe"], "--norm-topk-prob: 'maybe' is not a switch"),
        (["--out", "OUT", "--model-type", "MoE++", "--experts", "4"], "MoE++ needs --top-k 2"),
        (["--hidden", "64"], "--out is required"),
    ]),
    "moe-placement": ("bin:moe-placement", ["--config", "--metrics", "--replicas", "--hot-share",
                                            "--memory-budget-mib", "--out"], [
        (["--config", EXISTING, "--metrics", "m.txt", "--replicas", "x",
          "--memory-budget-mib", "1"], "--replicas: invalid int value: 'x'"),
        (["--config", EXISTING, "--metrics", "m.txt", "--replicas", "2"],
         "--memory-budget-mib"),
    ]),
    "tools/moe_placement.py": ("py:moe_placement.py", ["--config", "--replicas"], [
        (["--config", EXISTING, "--metrics", "m.txt", "--replicas", "2",
          "--memory-budget-mib", "abc"], "--memory-budget-mib: invalid float value: 'abc'"),
    ]),
    "tools/k8s_cluster_config.py": ("py:k8s_cluster_config.py", [
        "--output", "--namespace", "--replicas", "--rpc-port", "--groups-dir"], [
        ([EXISTING, "--rpc-port", "x"], "--rpc-port: invalid int value: 'x'"),
        ([EXISTING, "--rpc-port", "70000"], "--rpc-port: 70000 is not in 1..65535"),
    ]),
}


def command(how):
    kind, name = how.split(":", 1)
    if kind == "bin":
        return [os.path.join(BIN, name)]
    return [sys.executable, os.path.join(TOOLS, name)]


def version_name(program):
    """What --version names: the program's own name."""
    return {"tools/moe_placement.py": "moe-placement",
            "tools/k8s_cluster_config.py": "k8s_cluster_config.py"}.get(program, program)


class CliConventions(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()

    def tearDown(self):
        self.tmp.cleanup()

    def run_cli(self, how, args):
        args = [os.path.join(self.tmp.name, "out") if a == "OUT" else a for a in args]
        r = subprocess.run(command(how) + args, capture_output=True, text=True, timeout=30,
                           cwd=self.tmp.name, stdin=subprocess.DEVNULL)
        self.assertGreaterEqual(r.returncode, 0, f"{how} {args}: killed by signal "
                                                 f"{-r.returncode}\n{r.stderr}")
        return r

    def test_help_exits_0_and_lists_the_flags(self):
        for program, (how, flags, _) in PROGRAMS.items():
            with self.subTest(program=program):
                r = self.run_cli(how, ["--help"])
                self.assertEqual(r.returncode, 0, r.stderr)
                self.assertEqual(r.stderr, "")
                for flag in flags + ["--help", "--version"]:
                    self.assertIn(flag, r.stdout, f"{program} --help does not list {flag}")

    def test_version_exits_0_and_prints_the_project_version(self):
        want_version = moe_version.version()
        self.assertRegex(want_version, r"^\d+\.\d+\.\d+$")
        for program, (how, _, _) in PROGRAMS.items():
            with self.subTest(program=program):
                r = self.run_cli(how, ["--version"])
                self.assertEqual(r.returncode, 0, r.stderr)
                self.assertEqual(r.stdout.strip(), f"{version_name(program)} {want_version}")

    def test_unknown_flag_exits_2_naming_it(self):
        for program, (how, _, _) in PROGRAMS.items():
            with self.subTest(program=program):
                r = self.run_cli(how, ["--no-such-flag"])
                self.assertEqual(r.returncode, 2, r.stderr)
                self.assertIn("--no-such-flag", r.stderr)
                self.assertEqual(r.stdout, "")

    def test_bad_values_exit_2_naming_the_flag_and_the_reason(self):
        for program, (how, _, cases) in PROGRAMS.items():
            for args, message in cases:
                with self.subTest(program=program, args=args):
                    r = self.run_cli(how, args)
                    self.assertEqual(r.returncode, 2, f"{program} {args}: {r.stderr}")
                    self.assertIn(message, r.stderr)
                    self.assertEqual(r.stdout, "")
                    # Nothing was written: a usage error stops before any work.
                    self.assertFalse(os.path.exists(os.path.join(self.tmp.name, "out")))

    def test_every_program_in_bin_is_covered(self):
        """A new executable under bin/ gets a row above (tests and internal tools aside)."""
        covered = {how.split(":", 1)[1] for how, _, _ in PROGRAMS.values()
                   if how.startswith("bin:")}
        users = {f for f in os.listdir(BIN) if f.startswith("moe-")}
        self.assertEqual(users - covered, set())


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: cli_test.py BIN_DIR")
    BIN = os.path.abspath(sys.argv.pop(1))
    unittest.main(verbosity=2)
