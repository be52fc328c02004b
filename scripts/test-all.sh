#!/usr/bin/env bash
# Runs every test: style and layering checks (scripts/lint.sh: rustfmt, clippy -D warnings, the
# stateless-roles rule), the Rust unit and integration tests (real servers on free ports, driven
# by the official Rust SDK), then the Python compatibility suite and the `temporal` CLI tests
# against a real `chronicle server start-dev`.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
VENV="${CHRONICLE_VENV:-$HOME/.cache/chronicle-venv}"
# Builds outside the clone by default (as CI does), shared with scripts/start-dev.sh.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/chronicle-target}"
TARGET="$CARGO_TARGET_DIR"

./scripts/lint.sh
cargo build -p chronicle-server
CHRONICLE_SKIP_SETUP=1 ./scripts/check-deploy.sh  # chart, alerts, dashboards, real scrape (~30 s)
cargo nextest run --workspace --no-fail-fast
./scripts/fuzz.sh  # each cargo-fuzz target for 20 s (docs/security.md, "Fuzzing and failpoints")

CHRONICLE_BIN="$PWD/$TARGET/debug/chronicle"
[ -x "$CHRONICLE_BIN" ] || CHRONICLE_BIN="$TARGET/debug/chronicle"
export CHRONICLE_BIN COMPAT_SERVER=chronicle
PATH="$VENV/bin:$PATH" "$VENV/bin/python" -m pytest -q tests/compat
# Again with the roles as separate processes (history, matching, frontend over the internal API).
COMPAT_SERVER=chronicle-split PATH="$VENV/bin:$PATH" "$VENV/bin/python" -m pytest -q tests/compat
