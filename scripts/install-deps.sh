#!/usr/bin/env bash
# Installs every Debian package (and the one PyPI package) that building and testing moe-cluster
# needs. Safe to re-run: when everything is already installed it does nothing. The CUDA toolkit is not a Debian package here;
# when /usr/local/cuda/bin/nvcc exists the build compiles the CUDA backend, otherwise it skips it.
set -euo pipefail
pkgs=(
  build-essential cmake ninja-build pkg-config python3
  capnproto libcapnp-dev            # RPC and wire format
  prometheus-cpp-dev                # metrics
  libyaml-cpp-dev                   # cluster config
  libboost-dev                      # Asio/Beast (admin plane)
  libopenblas-dev                   # CPU GEMMs
  libdnnl-dev                       # oneDNN: bf16 and small-batch CPU matmuls
  nlohmann-json3-dev                # safetensors headers, config.json
  libcli11-dev                      # every program's command line (common/cli.h)
  libgtest-dev libgmock-dev         # tests
  procps                            # pgrep/pkill in the launcher test
  prometheus                        # prometheus + promtool: moe-cluster --prometheus, observability test
  python3-yaml iproute2 curl        # deploy tests: config generator, network namespaces
)
# Kubernetes schemas for validating the manifests offline (tests/deploy), pinned.
pip_pkgs=(kubernetes-validate==1.37.0 PyYAML)

install_pip() {
  if python3 -c 'import kubernetes_validate, yaml' 2>/dev/null; then return 0; fi
  echo "install-deps: pip installing ${pip_pkgs[*]}"
  # Debian's own python refuses pip without this flag; a pyenv/venv python does not need it.
  python3 -m pip install -q "${pip_pkgs[@]}" 2>/dev/null ||
    python3 -m pip install -q --break-system-packages "${pip_pkgs[@]}"
}
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#pkgs[@]} packages present"
  install_pip
  exit 0
fi
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "install-deps: installing ${missing[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
install_pip
echo "install-deps: done"
