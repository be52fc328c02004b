#!/usr/bin/env bash
# Builds Chronicle and runs `chronicle server start-dev` (arguments are passed through).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh >&2
cargo build --release -p chronicle-server >&2
exec "${CARGO_TARGET_DIR:-target}/release/chronicle" server start-dev "$@"
