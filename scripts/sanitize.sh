#!/usr/bin/env bash
# The whole test suite once under AddressSanitizer + UndefinedBehaviorSanitizer (+ LeakSanitizer):
# configures build-asan/ (-DMOE_SANITIZE=address,undefined), builds every target, runs every
# ctest test there except the fuzz label, and fails on any sanitizer report. CI runs it after
# scripts/test.sh (.ci/run). Needs what scripts/install-deps.sh installs (g++ ships libasan and
# libubsan). Extra arguments go to ctest, e.g. scripts/sanitize.sh -R parity_test.
#
# - CUDA is off in this build: there is no sanitizer for device code, and the CUDA runtime's huge
#   virtual reservations and device mappings do not mix with ASan's shadow memory. The CUDA
#   backend is covered by the normal build's tests on a GPU machine.
# - The fuzz label is left out: the fuzzers are sanitized already, in their own clang build
#   (build-fuzz/, scripts/fuzz.sh), and run under scripts/test.sh.
# - Every process reports to its own file under build-asan/sanitizer-reports/ (log_path), so a
#   report in a server process a test started (moe-router, moe-expert, ...) fails this script even
#   when the test itself only sees the process vanish or never looks at its exit status. Tests
#   spawn the sanitized programs: they find them beside themselves (build-asan/bin) or get that
#   directory from CMake. GCC's UBSan runtime ignores log_path when ASan is linked too: a UBSan
#   report goes to the process's stderr and ends it at once with status 1 (no recovery), failing
#   the test that owns the process; any that reached ctest's log fails this script as well.
# - deploy_dockerfile_lint is left out: it checks that the router image installs every library
#   the built moe-router links, and sanitized programs also link libasan/libubsan, which no image
#   should ship. Its static Dockerfile checks gain nothing from sanitizers; scripts/test.sh runs it.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=build-asan
repo=$PWD
reports=$repo/$dir/sanitizer-reports

start=$(date +%s)
cmake -S . -B "$dir" -G Ninja -DMOE_SANITIZE=address,undefined -DMOE_ENABLE_CUDA=OFF >/dev/null
cmake --build "$dir" -j"$(nproc)"
built=$(date +%s)
echo "sanitize: build $(((built - start) / 60)) min $(((built - start) % 60)) s"

rm -rf "$reports"
mkdir -p "$reports"
# halt_on_error + exitcode: the first report ends the process with status 1 (UBSan too: the build
# has -fno-sanitize-recover=all). log_exe_name names each report file after its program.
common="halt_on_error=1:print_stacktrace=1:log_path=$reports/report:log_exe_name=1"
export ASAN_OPTIONS="$common:exitcode=1:detect_leaks=1:check_initialization_order=1:strict_init_order=1:detect_stack_use_after_return=1:suppressions=$repo/tests/sanitize/asan.supp"
export UBSAN_OPTIONS="$common:suppressions=$repo/tests/sanitize/ubsan.supp"
export LSAN_OPTIONS="suppressions=$repo/tests/sanitize/lsan.supp:print_suppressions=0"

rc=0
# --timeout: for tests without a TIMEOUT of their own (scripts/test.sh gives them 600 s).
ctest --test-dir "$dir" --output-on-failure --timeout 1200 -LE fuzz -E '^deploy_dockerfile_lint$' "$@" || rc=$?
done_at=$(date +%s)
echo "sanitize: tests $(((done_at - built) / 60)) min $(((done_at - built) % 60)) s"

shopt -s nullglob
found=("$reports"/*)
if grep -n -B2 -A20 -E "runtime error:|ERROR: (Address|Leak)Sanitizer" \
  "$dir/Testing/Temporary/LastTest.log" >"$reports/in-ctest-log.txt"; then
  found+=("$reports/in-ctest-log.txt")
else
  rm -f "$reports/in-ctest-log.txt"
fi
if [ ${#found[@]} -gt 0 ]; then
  for f in "${found[@]}"; do
    echo "===== $f"
    cat "$f"
  done
  echo "sanitize: ${#found[@]} sanitizer report(s), above (files in $reports)" >&2
  exit 1
fi
[ "$rc" -eq 0 ] || { echo "sanitize: ctest failed (no sanitizer report)" >&2; exit "$rc"; }
echo "sanitize: every test passed, no sanitizer report"
