#!/usr/bin/env bash
# The installed package as an engine uses it: `cmake --install` into an empty prefix; a separate
# CMake project (tests/install/consumer, the README's example) finds it with find_package(MoeCluster),
# builds and links MoeCluster::client from there alone; then the installed programs start a cluster
# (moe-make-checkpoint, moe-cluster) and the engine, run against it, must print expected.txt.
# Also: README quotes the consumer's CMakeLists.txt and its README block verbatim.
#   install_test.sh BUILD_DIR [CMAKE_GENERATOR]
set -euo pipefail
build=$(cd "$1" && pwd)
generator=${2:-Ninja}
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
work=$(mktemp -d)
trap 'pkill -KILL -f "$work/" 2>/dev/null || true; rm -rf "$work"' EXIT
fail() { echo "FAIL: $*"; exit 1; }

# README "Call it from your engine — C++" shows exactly what is built here.
python3 - "$repo/README.md" "$here/consumer" <<'PY' || exit 1
import sys
readme = open(sys.argv[1], encoding="utf-8").read()
cmake = open(sys.argv[2] + "/CMakeLists.txt", encoding="utf-8").read()
cmake = "".join(l for l in cmake.splitlines(True) if not l.startswith("#")).strip()
main = open(sys.argv[2] + "/main.cc", encoding="utf-8").read()
block = main.split("// README:begin\n")[1].split("    // README:end")[0]
block = "\n".join(l[4:] for l in block.splitlines())  # as quoted: without main()'s indent
for name, text in (("consumer/CMakeLists.txt", cmake), ("consumer/main.cc README block", block)):
    if text not in readme:
        sys.exit(f"FAIL: README.md does not quote {name} verbatim:\n{text}")
print("ok: README quotes the consumer's CMakeLists.txt and main.cc block")
PY

cmake --install "$build" --prefix "$work/prefix" >"$work/install.log" || { cat "$work/install.log"; fail "cmake --install"; }
for f in include/moe_cluster/client/client.h lib/cmake/MoeCluster/MoeClusterConfig.cmake bin/moe-cluster; do
  [ -e "$work/prefix/$f" ] || fail "$f not installed"
done
echo "ok: cmake --install → $(find "$work/prefix" -type f | wc -l) files"

# The engine's build sees the prefix only (not this source tree or build tree).
cmake -S "$here/consumer" -B "$work/engine" -G "$generator" -DCMAKE_PREFIX_PATH="$work/prefix" \
  -DCMAKE_BUILD_TYPE=Release >"$work/configure.log" 2>&1 || { cat "$work/configure.log"; fail "configure"; }
cmake --build "$work/engine" >"$work/build.log" 2>&1 || { cat "$work/build.log"; fail "build"; }
lib=$(ldd "$work/engine/engine" | awk '/moe_cluster_client/ {print $3}')
[[ "$lib" == "$work/prefix/lib/"* ]] || fail "engine links '$lib', not the installed library"
if grep -rqF -e "-I$repo" -e "$build/" "$work/engine" --include='*.ninja' --include=Makefile \
  --include=CMakeCache.txt --include='flags.make'; then
  fail "the engine's build refers to the source or build tree"
fi
echo "ok: find_package(MoeCluster) + MoeCluster::client built the engine against $lib"

bin=$work/prefix/bin
"$bin/moe-make-checkpoint" --out "$work/model" --hidden 64 --intermediate 96 --experts 4 \
  --layers 2 --dtype f32 >/dev/null
read -r p0 p1 p2 < <(python3 -c 'import socket
ss=[socket.socket() for _ in range(3)]
[s.bind(("127.0.0.1",0)) for s in ss]
print(*[s.getsockname()[1] for s in ss])')
cat >"$work/cluster.yaml" <<YAML
model: {path: model}
router: {listen: "127.0.0.1:$p0", device: cpu}
shards:
  - {name: a, listen: "127.0.0.1:$p1", device: cpu, experts: [0, 1]}
  - {name: b, listen: "127.0.0.1:$p2", device: cpu, experts: [2, 3]}
YAML
rc=0
"$bin/moe-cluster" --config "$work/cluster.yaml" --log-dir "$work/logs" -- \
  "$work/engine/engine" "127.0.0.1:$p0" >"$work/report.txt" 2>"$work/engine.log" || rc=$?
[ "$rc" -eq 0 ] || { cat "$work/engine.log" "$work/report.txt"; fail "engine exited $rc"; }
diff -u "$here/expected.txt" "$work/report.txt" || fail "the engine's report differs from expected.txt"
echo "ok: the engine's report against a cluster of the installed programs is as expected"
