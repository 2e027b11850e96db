#!/usr/bin/env python3
"""Static checks of deploy/docker/Dockerfile.{router,expert} (no Docker engine needed):

  - multi-stage: every FROM names its stage (FROM image AS name), base images carry a tag
  - no ADD of URLs (downloads go through RUN curl, checked and cached with the layer)
  - apt-get install with --no-install-recommends, apt lists removed in the same RUN
  - the builder installs the build packages of scripts/install-deps.sh; the cmake targets exist
  - final stage: no build tools, COPY --from only from earlier stages, a numeric non-root USER
    (Kubernetes can only verify runAsNonRoot for a numeric user), EXPOSE = the container ports of
    the Kubernetes workload, exec-form ENTRYPOINT naming the binary the workload runs
  - the .dockerignore files keep .git/build trees/models out and keep what the build needs
  - with BIN_DIR (optional argument, a build's bin/): every shared library moe-router and
    moe-client load on this Debian machine comes from a package the router's final stage
    installs (or one of their dependencies)

  python3 tests/deploy/lint_dockerfiles.py [BIN_DIR]
"""

import fnmatch
import json
import os
import re
import shlex
import shutil
import subprocess
import sys

import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import deploylib as dl  # noqa: E402

DOCKER = os.path.join(dl.REPO, "deploy", "docker")
IMAGES = {
    # Dockerfile: (k8s manifest, binary, other binaries the image must carry)
    "router": ("router-deployment.yaml", "moe-router", ["moe-client"]),
    "expert": ("expert-group/expert-statefulset.yaml", "moe-expert", []),
}
BUILD_ONLY = re.compile(r"(-dev$|^build-essential$|^cmake$|^ninja-build$|^g\+\+|^gcc$|^capnproto$|"
                        r"^cuda-nvcc|^pkg-config$)")
# Of scripts/install-deps.sh, what compiling needs: the -dev packages and the tool chain (the
# rest, e.g. procps or prometheus, serves the tests).
BUILD_TOOLS = {"build-essential", "cmake", "ninja-build", "pkg-config", "capnproto"}


def instructions(path):
    """[(INSTRUCTION, argument text, line)] with continuations joined and comments dropped."""
    out, buf, start = [], "", 0
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            s = line.rstrip("\n")
            if not buf and (not s.strip() or s.lstrip().startswith("#")):
                continue
            if buf and s.lstrip().startswith("#"):
                continue  # comment lines inside a continuation
            if not buf:
                start = n
            if s.endswith("\\"):
                buf += s[:-1] + " "
                continue
            buf += s
            word, _, rest = buf.strip().partition(" ")
            out.append((word.upper(), rest.strip(), start))
            buf = ""
    return out


def stages(instrs):
    """[(name, image, [instructions])], with global ARG defaults expanded in FROM."""
    args, result = {}, []
    for ins, rest, line in instrs:
        if ins == "ARG" and not result:
            k, _, v = rest.partition("=")
            args[k.strip()] = v.strip().strip('"')
        elif ins == "FROM":
            image = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)),
                           rest.split()[0])
            m = re.match(r"^(\S+)\s+AS\s+(\S+)$", rest, re.IGNORECASE)
            result.append((m.group(2) if m else None, image, [], line))
        elif result:
            result[-1][2].append((ins, rest, line))
    return result


def install_deps_packages():
    text = open(os.path.join(dl.REPO, "scripts", "install-deps.sh"), encoding="utf-8").read()
    m = re.search(r"pkgs=\((.*?)\n\)", text, re.S)
    pkgs = []
    for line in m.group(1).splitlines():
        pkgs += line.split("#")[0].split()
    return set(pkgs)


def apt_packages(run):
    out = []
    for cmd in re.split(r"&&|;", run):
        words = shlex.split(cmd.replace("\\", " "))
        if "apt-get" in words and "install" in words:
            out += [w.strip('"') for w in words[words.index("install") + 1:]
                    if not w.startswith("-")]
    return out


def executables():
    names = set()
    for root, dirs, files in os.walk(dl.REPO):
        dirs[:] = [d for d in dirs if not d.startswith((".", "build"))]
        if "CMakeLists.txt" in files:
            text = open(os.path.join(root, "CMakeLists.txt"), encoding="utf-8").read()
            names.update(re.findall(r"add_executable\(\s*([\w-]+)", text))
    return names


def lint(kind, f):
    path = os.path.join(DOCKER, f"Dockerfile.{kind}")
    name = os.path.relpath(path, dl.REPO)
    if not f.check(os.path.isfile(path), f"{name} missing"):
        return None
    manifest, binary, extra = IMAGES[kind]
    st = stages(instructions(path))
    f.check(len(st) >= 2, f"{name}: not multi-stage")
    seen = []
    for sname, image, body, line in st:
        f.check(sname is not None, f"{name}:{line}: FROM {image} without `AS <stage>`")
        tag = image.rsplit("/", 1)[-1]
        f.check("@sha256:" in image or (":" in tag and not tag.endswith(":latest")),
                f"{name}:{line}: base image {image} needs a pinned tag")
        for ins, rest, ln in body:
            if ins == "ADD":
                f.check(not re.search(r"(https?|ftp)://|git@", rest),
                        f"{name}:{ln}: ADD of a URL (download with RUN curl instead)")
            if ins == "RUN" and "apt-get install" in rest:
                f.check("--no-install-recommends" in rest,
                        f"{name}:{ln}: apt-get install without --no-install-recommends")
                f.check("rm -rf /var/lib/apt/lists" in rest,
                        f"{name}:{ln}: apt lists not removed in the same RUN")
            if ins == "COPY" and "--from=" in rest:
                src = re.search(r"--from=(\S+)", rest).group(1)
                f.check(src in seen, f"{name}:{ln}: COPY --from={src} is not an earlier stage")
        seen.append(sname)

    builder = st[0]
    bpkgs = set()
    for ins, rest, _ in builder[2]:
        if ins == "RUN":
            bpkgs.update(apt_packages(rest))
    needed = {p for p in install_deps_packages() if p.endswith("-dev") or p in BUILD_TOOLS}
    missing = needed - bpkgs
    f.check(not missing, f"{name}: builder lacks packages of scripts/install-deps.sh: "
                         f"{sorted(missing)}")
    text = " ".join(rest for _, _, b, _ in st for ins, rest, _ in b if ins == "RUN")
    targets = set()
    for m in re.finditer(r"--target\s+((?:[\w-]+\s*)+)", text):
        targets.update(m.group(1).split())
    f.check({binary, *extra} <= targets, f"{name}: does not build {binary} {extra}")
    unknown = targets - executables()
    f.check(not unknown, f"{name}: cmake targets {sorted(unknown)} are not add_executable()s")

    final = st[-1]
    body = final[2]
    fpkgs = [p for ins, rest, _ in body if ins == "RUN" for p in apt_packages(rest)]
    tools = [p for p in fpkgs if BUILD_ONLY.search(p)]
    f.check(not tools, f"{name}: final stage installs build tools {tools}")
    users = [rest for ins, rest, _ in body if ins == "USER"]
    if f.check(users, f"{name}: final stage has no USER"):
        uid = users[-1].split(":")[0]
        f.check(uid.isdigit() and int(uid) != 0,
                f"{name}: final USER '{users[-1]}' must be a numeric non-root uid")
    exposed = sorted(int(p.split("/")[0]) for ins, rest, _ in body if ins == "EXPOSE"
                     for p in rest.split())
    with open(os.path.join(dl.K8S, "base", manifest), encoding="utf-8") as fh:
        w = yaml.safe_load(fh)
    c = w["spec"]["template"]["spec"]["containers"][0]
    ports = sorted(p["containerPort"] for p in c["ports"])
    f.check(exposed == ports, f"{name}: EXPOSE {exposed} != container ports {ports} of {manifest}")
    eps = [rest for ins, rest, _ in body if ins == "ENTRYPOINT"]
    if f.check(eps, f"{name}: no ENTRYPOINT"):
        try:
            ep = json.loads(eps[-1])
        except json.JSONDecodeError:
            ep = None
        if f.check(isinstance(ep, list), f"{name}: ENTRYPOINT must be exec form (JSON array)"):
            f.check(os.path.basename(ep[0]) == binary and c["command"][0] == binary,
                    f"{name}: ENTRYPOINT {ep} / manifest command {c['command']} should run "
                    f"{binary}")
    copied = " ".join(rest for ins, rest, _ in body if ins == "COPY")
    for b in [binary, *extra]:
        f.check(re.search(rf"/{re.escape(b)}\b", copied), f"{name}: final stage lacks {b}")
    return fpkgs


def lint_dockerignore(kind, f):
    path = os.path.join(DOCKER, f"Dockerfile.{kind}.dockerignore")
    name = os.path.relpath(path, dl.REPO)
    if not f.check(os.path.isfile(path), f"{name} missing (BuildKit reads "
                                         f"<Dockerfile>.dockerignore; the context is the repo)"):
        return
    pats = [ln.strip() for ln in open(path, encoding="utf-8")
            if ln.strip() and not ln.startswith("#")]

    def ignored(rel):
        out = False
        for p in pats:
            neg = p.startswith("!")
            p = p.lstrip("!").rstrip("/")
            parts = rel.split("/")
            hit = any(fnmatch.fnmatch("/".join(parts[:i]), p) for i in range(1, len(parts) + 1))
            if "**/" in p:
                hit = hit or any(fnmatch.fnmatch(x, p.split("**/")[-1]) for x in parts)
            if hit:
                out = not neg
        return out

    for rel in (".git", "build", "build-k8s", "models"):
        f.check(ignored(rel), f"{name}: {rel} should be ignored")
    needed = ["CMakeLists.txt", "deploy/docker/collect-libs.sh", "scripts/install-deps.sh"]
    text = open(os.path.join(dl.REPO, "CMakeLists.txt"), encoding="utf-8").read()
    needed += re.findall(r"add_subdirectory\(\s*([\w/.-]+)", text)
    for rel in needed:
        f.check(not ignored(rel), f"{name}: ignores {rel}, which the build needs")


def dpkg_owner(path):
    r = subprocess.run(["dpkg", "-S", os.path.realpath(path)], capture_output=True, text=True)
    if r.returncode != 0:
        r = subprocess.run(["dpkg", "-S", path], capture_output=True, text=True)
    return r.stdout.split(":")[0].strip() if r.returncode == 0 else None


def depends_closure(pkgs):
    seen, todo = set(), list(pkgs)
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        r = subprocess.run(["dpkg-query", "-W", "-f=${Depends}", p], capture_output=True,
                           text=True)
        for alt in r.stdout.split(","):
            for dep in alt.split("|"):
                d = dep.strip().split(" ")[0].split(":")[0]
                if d:
                    todo.append(d)
    return seen


# Broken variants the lint must reject: (Dockerfile, text, replacement).
MUTATIONS = [
    ("router", "USER 10001:10001", "USER root"),
    ("router", "USER 10001:10001", "USER moe"),
    ("expert", "FROM debian:bookworm AS builder", "FROM debian:bookworm"),
    ("router", "FROM debian:bookworm-slim AS runtime", "FROM debian AS runtime"),
    ("router", "COPY . .", "ADD https://example.com/src.tar.gz /src/"),
    ("expert", "EXPOSE 7201 9201", "EXPOSE 7201"),
    ("router", 'ENTRYPOINT ["/usr/local/bin/moe-router"]', "ENTRYPOINT /usr/local/bin/moe-router"),
    ("router", "libopenblas0-pthread \\", "libopenblas0-pthread cmake \\"),
    ("router", "libyaml-cpp-dev ", ""),
    ("expert", "--target moe-expert", "--target moe-expert moe-shard"),
]


def self_test(f):
    import tempfile
    global DOCKER
    real = DOCKER
    for kind, old, new in MUTATIONS:
        with tempfile.TemporaryDirectory() as tmp:
            for n in os.listdir(real):
                shutil.copy(os.path.join(real, n), tmp)
            p = os.path.join(tmp, f"Dockerfile.{kind}")
            text = open(p, encoding="utf-8").read()
            if not f.check(old in text, f"self-test: '{old}' not in Dockerfile.{kind}"):
                continue
            open(p, "w", encoding="utf-8").write(text.replace(old, new, 1))
            DOCKER = tmp
            probe = dl.Failures()
            try:
                lint(kind, probe)
            finally:
                DOCKER = real
            f.check(probe.items, f"self-test: lint accepted Dockerfile.{kind} with "
                                 f"'{old}' -> '{new}'")
    print(f"{len(MUTATIONS)} broken Dockerfile variants rejected")


def main():
    f = dl.Failures()
    self_test(f)
    fpkgs = {}
    for kind in IMAGES:
        fpkgs[kind] = lint(kind, f)
        lint_dockerignore(kind, f)
    if len(sys.argv) > 1 and fpkgs.get("router") is not None:
        # The build here may have CUDA; the router image's does not, so CUDA libraries are
        # left out of the comparison.
        check_runtime_packages(sys.argv[1], fpkgs["router"], f)
    return f.report("Dockerfile lint")


def check_runtime_packages(bin_dir, fpkgs, f):
    if not (shutil.which("ldd") and shutil.which("dpkg")):
        print("note: no ldd/dpkg here; runtime package check skipped")
        return
    allowed = depends_closure(fpkgs) | {"libc6", "libstdc++6", "libgcc-s1"}
    for b in ("moe-router", "moe-client"):
        exe = os.path.join(bin_dir, b)
        if not f.check(os.path.isfile(exe), f"{exe} not built"):
            continue
        out = subprocess.run(["ldd", exe], capture_output=True, text=True).stdout
        for m in re.finditer(r"^\s*(\S+) => (/\S+)", out, re.M):
            soname, lib = m.groups()
            if soname.startswith(("libcudart", "libcublas", "libcuda")):
                continue  # this build has CUDA; the image's does not
            owner = dpkg_owner(lib)
            f.check(owner in allowed, f"Dockerfile.router: {b} needs {soname} from package "
                                      f"{owner}, which the final stage does not install")
    print(f"runtime packages of the router image cover the libraries of {bin_dir}/moe-router, "
          f"moe-client")


if __name__ == "__main__":
    sys.exit(main())
