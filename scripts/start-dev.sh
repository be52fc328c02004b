#!/usr/bin/env bash
# Builds Chronicle and runs `chronicle server start-dev` (arguments are passed through).
set -euo pipefail
cd "$(dirname "$0")/.."
# The same build directory as the test command and CI, so one build serves all three.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/chronicle-target}"
./scripts/setup.sh >&2
cargo build --release -p chronicle-server >&2
exec "$CARGO_TARGET_DIR/release/chronicle" server start-dev "$@"
