#!/usr/bin/env bash
# The side-by-side figures of docs/benchmarks.md: Chronicle start-dev (durable, its defaults)
# against Temporal's dev server (in memory), same harness, same settings, interleaved.
# Needs the release build and the venv of scripts/setup.sh (for the `temporal` CLI).
#   scripts/bench-vs-temporal.sh [OUTPUT_DIR]     (default: bench-results/)
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/chronicle-target}"
VENV="${CHRONICLE_VENV:-$HOME/.cache/chronicle-venv}"
OUT="${1:-bench-results}"
B="$CARGO_TARGET_DIR/release"
cargo build --release -p chronicle-server -p chronicle-bench
mkdir -p "$OUT"
DATA="$(mktemp -d)"

"$B/chronicle" server start-dev --ip 127.0.0.1 --port 7501 --data-dir "$DATA" --log-level warn \
  > "$OUT/chronicle.log" 2>&1 &
CP=$!
# Eager activities on, so both servers can answer the harness's eager requests.
"$VENV/bin/temporal" server start-dev --headless --ip 127.0.0.1 --port 7502 --ui-port 7503 \
  --http-port 7504 --metrics-port 7505 --log-level warn \
  --dynamic-config-value system.enableActivityEagerExecution=true > "$OUT/temporal.log" 2>&1 &
TP=$!
trap 'kill $CP $TP 2>/dev/null || true; rm -rf "$DATA"' EXIT
sleep 8

T="--target temporal=127.0.0.1:7502,pid=$TP --target chronicle=127.0.0.1:7501,pid=$CP"
COMMON="--repeat 2 --workflow-pollers 32 --activity-pollers 32 --no-progress"
run() { local name=$1; shift; "$B/chronicle-bench" compare $T $COMMON "$@" --json "$OUT/$name.json" \
  --plot "$OUT/$name.svg" | tee "$OUT/$name.txt"; }
run echo-c50 --scenario echo --concurrency 50 --duration 15s
run seq3-c50 --scenario sequential --activities 3 --concurrency 50 --duration 15s
run seq3-c50-noeager --no-eager-activities --scenario sequential --activities 3 --concurrency 50 --duration 15s
run echo-r40 --scenario echo --rate 40 --duration 15s
run seq3-r10 --scenario sequential --activities 3 --rate 10 --duration 15s
