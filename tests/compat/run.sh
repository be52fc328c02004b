#!/usr/bin/env bash
# Runs the compatibility suite: tests/compat/run.sh [pytest args...]
#
#   COMPAT_SERVER=chronicle (default) CHRONICLE_BIN=/path/to/chronicle tests/compat/run.sh
#   COMPAT_SERVER=temporal tests/compat/run.sh          # the reference: temporal server start-dev
#
# COMPAT_PYTHON selects the interpreter (default: the chronicle venv); its bin directory goes first
# on PATH so the venv's `temporal` CLI is used. Exits with pytest's status.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
PYTHON="${COMPAT_PYTHON:-/root/.cache/chronicle-venv/bin/python}"

if [[ ! -x "$PYTHON" ]]; then
    echo "run.sh: no python at $PYTHON (set COMPAT_PYTHON; see tests/compat/README.md)" >&2
    exit 2
fi
export PATH="$(dirname "$PYTHON"):$PATH"

cd "$REPO"
exec "$PYTHON" -m pytest -q tests/compat "$@"
