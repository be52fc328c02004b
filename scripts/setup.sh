#!/usr/bin/env bash
# Installs what building and testing Chronicle needs on a fresh Debian/Ubuntu machine:
# libclang (RocksDB's bindings), a C/C++ toolchain, cargo-nextest, and a Python venv with the
# official Temporal Python SDK and CLI for the compatibility suite. Idempotent.
set -euo pipefail

need_apt=()
command -v cc >/dev/null 2>&1 || need_apt+=(build-essential)
command -v c++ >/dev/null 2>&1 || need_apt+=(g++)
# bindgen needs libclang itself (libclang.so / libclang-NN.so), not just libclang-cpp.
compgen -G '/usr/lib/llvm-*/lib/libclang.so*' >/dev/null || compgen -G '/usr/lib/*/libclang-[0-9]*.so*' >/dev/null \
    || need_apt+=(libclang-dev)
command -v python3 >/dev/null 2>&1 || need_apt+=(python3 python3-venv)
# The authorization tests make their keys and sign their tokens with the openssl tool.
command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)
if [ ${#need_apt[@]} -gt 0 ]; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -q
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q "${need_apt[@]}"
fi

if ! cargo nextest --version >/dev/null 2>&1; then
    cargo install cargo-nextest --locked
fi

VENV="${CHRONICLE_VENV:-$HOME/.cache/chronicle-venv}"
if [ ! -x "$VENV/bin/temporal" ] || ! "$VENV/bin/python" -c "import temporalio, pytest, pytest_asyncio" 2>/dev/null; then
    python3 -m venv "$VENV" 2>/dev/null || { apt-get install -y -q python3-venv && python3 -m venv "$VENV"; }
    "$VENV/bin/pip" install -q --upgrade pip
    "$VENV/bin/pip" install -q -r "$(dirname "$0")/../tests/compat/requirements.txt"
fi
