#!/usr/bin/env bash
# Installs every Debian package (and the PyPI packages) that building and testing moe-cluster
# needs. Safe to re-run: when everything is already installed it does nothing. The CUDA toolkit is not a Debian package here;
# when /usr/local/cuda/bin/nvcc exists the build compiles the CUDA backend, otherwise it skips it.
#
# The Python client's tests (client/python, ctest python_client) run in their own virtual
# environment, outside the repository so that every clone shares it:
#   MOE_PYTHON_VENV   where it lives (default ~/.cache/moe-cluster/venv)
#   MOE_PYTHON_TORCH  0: leave out torch and transformers (their tests then skip, saying so).
#                     PyPI has no CPU-only torch for Linux: the wheel links the CUDA libraries
#                     at import, so they come along (~3 GB, ~6 min on the 2-core VM, once).
set -euo pipefail
pkgs=(
  build-essential cmake ninja-build pkg-config python3 python3-venv
  capnproto libcapnp-dev            # RPC and wire format; kj-tls (it pulls libssl-dev: config tls:)
  prometheus-cpp-dev                # metrics
  libyaml-cpp-dev                   # cluster config
  libboost-dev                      # Asio/Beast (admin plane)
  libssl-dev openssl                # OpenSSL: HTTPS on the admin plane (admin.tls); tests make certs
  libopenblas-dev                   # CPU GEMMs
  libdnnl-dev                       # oneDNN: bf16 and small-batch CPU matmuls
  nlohmann-json3-dev                # safetensors headers, config.json
  libcli11-dev                      # every program's command line (common/cli.h)
  libgtest-dev libgmock-dev         # tests
  procps                            # pgrep/pkill in the launcher test
  prometheus                        # prometheus + promtool: moe-cluster --prometheus, observability test
  python3-yaml iproute2 curl        # deploy tests: config generator, network namespaces
)
# Only the tests need these (not the images' builder stage, which tests/deploy/lint_dockerfiles.py
# holds to the list above): the fuzzers' clang build (tests/fuzz: libFuzzer, ASan, UBSan), and the
# openssl command that makes the TLS tests' certificates (scripts/make-tls-certs.sh).
test_pkgs=(clang libclang-rt-14-dev openssl)
# Kubernetes schemas for validating the manifests offline (tests/deploy), pinned.
pip_pkgs=(kubernetes-validate==1.37.0 PyYAML)

install_pip() {
  if python3 -c 'import kubernetes_validate, yaml' 2>/dev/null; then return 0; fi
  echo "install-deps: pip installing ${pip_pkgs[*]}"
  # Debian's own python refuses pip without this flag; a pyenv/venv python does not need it.
  python3 -m pip install -q "${pip_pkgs[@]}" 2>/dev/null ||
    python3 -m pip install -q --break-system-packages "${pip_pkgs[@]}"
}
# The client's test venv: the package's dependencies (numpy, pycapnp; PyYAML for tls_context on a
# YAML file), pytest, setuptools (the packaging test builds the wheel offline), and torch +
# transformers for the hf.offload tests.
client_pkgs=(numpy==2.4.6 pycapnp==2.2.4 pytest==9.2.0 setuptools==84.2.1 PyYAML==6.0.4)
torch_pkgs=(torch==2.15.0 transformers==5.24.0)
install_client_venv() {
  # ~ as Python's expanduser sees it (as tests/client_python/run_pytest.py does), even without $HOME
  local venv="${MOE_PYTHON_VENV:-$(python3 -c 'import os; print(os.path.expanduser("~"))')/.cache/moe-cluster/venv}"
  local want="import numpy, capnp, pytest, setuptools, yaml"
  [ "${MOE_PYTHON_TORCH:-1}" = 0 ] || want="$want, torch, transformers"
  if "$venv/bin/python" -c "$want" 2>/dev/null; then return 0; fi
  echo "install-deps: Python client test venv $venv"
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check "${client_pkgs[@]}"
  if [ "${MOE_PYTHON_TORCH:-1}" != 0 ]; then
    echo "install-deps: torch and transformers into $venv (about 3 GB)"
    "$venv/bin/python" -m pip install -q --disable-pip-version-check "${torch_pkgs[@]}"
  fi
}
missing=()
for p in "${pkgs[@]}" "${test_pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all $((${#pkgs[@]} + ${#test_pkgs[@]})) packages present"
  install_pip
  install_client_venv
  exit 0
fi
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "install-deps: installing ${missing[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
install_pip
install_client_venv
echo "install-deps: done"
