#!/usr/bin/env bash
# The README's test command: every Rust test of the workspace (core and CLI, including
# the quick runs of the examples), then the Python package's tests (python/ci.sh builds
# it into a fresh virtual environment; pip fetches maturin, numpy, POT and pytest).
# Needs the Rust toolchain and Python 3; nothing outside this repository.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "[scripts/test.sh] cargo test --release (workspace default members: wassdl, wassdl-cli)"
cargo test --release
if [ "${WASSDL_SKIP_PYTHON:-0}" = 1 ]; then
    echo "[scripts/test.sh] WASSDL_SKIP_PYTHON=1: Python tests skipped"
else
    bash python/ci.sh
fi
