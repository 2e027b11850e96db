#!/usr/bin/env bash
# Installs every Debian package that building and testing moe-cluster needs. Safe to re-run: when
# everything is already installed it does nothing. The CUDA toolkit is not a Debian package here;
# when /usr/local/cuda/bin/nvcc exists the build compiles the CUDA backend, otherwise it skips it.
set -euo pipefail
pkgs=(
  build-essential cmake ninja-build pkg-config python3
  capnproto libcapnp-dev            # RPC and wire format
  prometheus-cpp-dev                # metrics
  libyaml-cpp-dev                   # cluster config
  libboost-dev                      # Asio/Beast (admin plane)
  libopenblas-dev                   # CPU GEMMs
  nlohmann-json3-dev                # safetensors headers, config.json
  libgtest-dev libgmock-dev         # tests
  procps                            # pgrep/pkill in the launcher test
  prometheus                        # prometheus + promtool: moe-cluster --prometheus, observability test
)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#pkgs[@]} packages present"
  exit 0
fi
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "install-deps: installing ${missing[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "install-deps: done"
