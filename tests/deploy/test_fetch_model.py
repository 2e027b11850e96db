#!/usr/bin/env python3
"""deploy/k8s/components/model-fetch/fetch-model.sh for real (curl over file:// URLs, sha256sum,
tar): the model directory appears only when the archive's checksum matched and it unpacked, a
failure leaves no model directory, and a pod restart with the model in place downloads nothing.
Exit 77 (skip) without curl, sha256sum or tar."""

import hashlib
import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import deploylib as dl  # noqa: E402

SCRIPT = os.path.join(dl.K8S, "components", "model-fetch", "fetch-model.sh")


def archive(path, files, gz):
    with tarfile.open(path, "w:gz" if gz else "w") as t:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def run(weights, uri, sha):
    env = dict(os.environ, MODEL_URI=uri, MODEL_SHA256=sha, HOME=weights)
    return subprocess.run(["sh", SCRIPT, weights], env=env, capture_output=True, text=True,
                          timeout=60)


def main():
    for tool in ("curl", "sha256sum", "tar"):
        if not shutil.which(tool):
            dl.skip(f"{tool} not found")
    f = dl.Failures()
    work = tempfile.mkdtemp(prefix="moe-fetch-test-")
    try:
        model = {"config.json": b'{"model_type": "mixtral"}', "model.safetensors": b"x" * 1000}
        good = os.path.join(work, "model.tar.gz")
        good_sha = archive(good, model, gz=True)
        plain = os.path.join(work, "model.tar")
        plain_sha = archive(plain, model, gz=False)
        no_config = os.path.join(work, "noconfig.tar.gz")
        no_config_sha = archive(no_config, {"model.safetensors": b"y"}, gz=True)
        missing = "file://" + os.path.join(work, "gone.tar.gz")
        cases = [
            # (what, uri, sha, prior state of the volume, exit 0?, model there after?)
            ("a good .tar.gz", "file://" + good, good_sha, None, True, True),
            ("a good .tar", "file://" + plain, plain_sha, None, True, True),
            ("a checksum mismatch", "file://" + good, plain_sha, None, False, False),
            ("an archive without config.json", "file://" + no_config, no_config_sha, None, False,
             False),
            ("a URI that does not answer", missing, good_sha, None, False, False),
            ("a checksum that is not sha256", "file://" + good, "abc", None, False, False),
            ("restart with the model in place: nothing fetched", missing, good_sha, "complete",
             True, True),
            ("a previous partial download is replaced", "file://" + good, good_sha, "partial",
             True, True),
            ("another model in place is replaced, not reused", "file://" + good, good_sha,
             "other", True, True),
        ]
        for what, uri, sha, prior, ok, present in cases:
            weights = tempfile.mkdtemp(dir=work)
            if prior == "complete":
                os.makedirs(os.path.join(weights, "model"))
                open(os.path.join(weights, "model", "config.json"), "w").close()
                with open(os.path.join(weights, ".model-sha256"), "w") as m:
                    m.write(sha + "\n")
            elif prior == "partial":
                os.makedirs(os.path.join(weights, ".partial", "model"))
                open(os.path.join(weights, ".partial", "archive"), "w").close()
            elif prior == "other":
                os.makedirs(os.path.join(weights, "model"))
                with open(os.path.join(weights, ".model-sha256"), "w") as m:
                    m.write("f" * 64 + "\n")
            r = run(weights, uri, sha)
            f.check((r.returncode == 0) == ok, f"{what}: exit {r.returncode}, expected "
                                               f"{'0' if ok else 'non-zero'}\n{r.stdout}{r.stderr}")
            cfg = os.path.join(weights, "model", "config.json")
            f.check(os.path.isfile(cfg) == present,
                    f"{what}: model/config.json {'missing' if present else 'present'} after the "
                    f"run")
            if present and prior != "complete":
                with open(os.path.join(weights, "model", "model.safetensors"), "rb") as fh:
                    f.check(fh.read() == model["model.safetensors"], f"{what}: wrong content")
                f.check(not os.path.exists(os.path.join(weights, ".partial")),
                        f"{what}: download directory left behind")
            print(f"{'ok' if not f.items else '..'}: {what}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return f.report("fetch-model.sh")


if __name__ == "__main__":
    sys.exit(main())
