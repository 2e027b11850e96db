#!/usr/bin/env bash
# Configures and builds everything into build/ (binaries in build/bin). Extra arguments go to the
# CMake configure step, e.g. -DMOE_ENABLE_CUDA=OFF or -DCMAKE_CUDA_ARCHITECTURES=80.
set -euo pipefail
cd "$(dirname "$0")/.."
cmake -S . -B build -G Ninja "$@" >/dev/null
cmake --build build -j"$(nproc)"
