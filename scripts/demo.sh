#!/usr/bin/env bash
# README command 1: on a fresh machine, install dependencies, build, generate the embedded default
# model (Mixtral-shaped: hidden 1024, intermediate 3584, 8 experts, top-2, 2 MoE layers) into
# models/default, start the local cluster (router + 2 shards), drive traffic with the parity
# check, print throughput and latency, and stop the cluster.
#   scripts/demo.sh                 # traffic + parity check, then stop
#   scripts/demo.sh --serve         # keep the cluster up until Ctrl-C
#   TOKENS=8192 BATCH=512 scripts/demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh
config=deploy/local/default-cluster.yaml
if [ ! -f models/default/config.json ] || [ ! -f models/default/model.safetensors ]; then
  build/bin/moe-make-checkpoint --out models/default --seed 1
fi
if [ "${1:-}" = "--serve" ]; then
  exec build/bin/moe-cluster --config "$config"
fi
exec build/bin/moe-cluster --config "$config" -- \
  build/bin/moe-client --config "$config" --tokens "${TOKENS:-2048}" --batch "${BATCH:-256}" --check
