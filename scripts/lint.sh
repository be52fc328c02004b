#!/usr/bin/env bash
# Style and layering checks that CI runs before the tests: rustfmt, clippy with warnings as
# errors, and the rule that the stateless roles (frontend, matching) never link storage, Raft or
# RocksDB. The layering check is the project's shared tool (`../shared/tools/`, beside the clone
# in CI); where it is absent (a plain clone elsewhere) it is skipped with a note.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/chronicle-target}"

rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt
rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy

echo "lint: cargo fmt --check"
cargo fmt --all -- --check
echo "lint: cargo clippy -D warnings"
cargo clippy --workspace --all-targets --quiet -- -D warnings
roles=../shared/tools/check-stateless-roles
if [ -f "$roles" ]; then
    echo "lint: stateless roles"
    bash "$roles"
else
    echo "lint: $roles not found; stateless-roles check skipped"
fi
