#!/usr/bin/env bash
# The console live-view benchmark (host/console/bench/live.mjs): release host and agent, a file
# written at RATE lines/s (default 5000) for SECONDS (default 60), one stream in headless
# Chromium; prints long tasks, frame rate, JS heap, DOM size and whether every line arrived.
#   scripts/console-bench.sh                 RATE=5000 SECONDS=60 scripts/console-bench.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p logfleet-host -p logfleet-agent
target=${CARGO_TARGET_DIR:-target}
BIN_DIR="$target/release" node host/console/bench/live.mjs
