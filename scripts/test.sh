#!/usr/bin/env bash
# README command 2: install dependencies, build, and run every test (unit, backend ops on every
# available backend, checkpoint I/O, integration over real processes on loopback).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh
# Integration tests bind loopback ports; one at a time keeps them from racing for the same port.
ctest --test-dir build --output-on-failure --timeout 600 "$@"
