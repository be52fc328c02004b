#!/usr/bin/env bash
# The cluster's figures in docs/benchmarks.md: `chronicle server start-local-cluster` (three
# replicated history nodes, matching and two frontends, each its own process) against
# `chronicle server start-dev` on the same machine, same harness, interleaved runs. The
# cluster's server CPU and bytes written are summed over all of its processes. Then the shard
# count sweep: the same load on a fresh local cluster per shard count, and the cluster's idle
# CPU (every process, 20 s without load).
#   scripts/bench-cluster-vs-dev.sh [OUTPUT_DIR] [SHARD_COUNTS...]
#   (defaults: bench-results/cluster, and 1 2 4 8 16 64; the side-by-side uses
#   start-local-cluster's default shard count, CLUSTER_SHARDS=N to choose one)
# Needs the release build (built here). Both servers durable: every acknowledged write fsynced.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/chronicle-target}"
OUT="${1:-bench-results/cluster}"
shift || true
SWEEP=("$@")
[ ${#SWEEP[@]} -gt 0 ] || SWEEP=(1 2 4 8 16 64)
SHARDS="${CLUSTER_SHARDS:-default}"
B="$CARGO_TARGET_DIR/release"
[ "${CHRONICLE_BENCH_SKIP_BUILD:-}" = 1 ] || cargo build --release -p chronicle-server -p chronicle-bench
mkdir -p "$OUT"
WORK="$(mktemp -d)"
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

# Starts a local cluster with $1 shards ("default": start-local-cluster's own count) on port $2;
# sets CLUSTER_PID and CLUSTER_PIDS (every child's pid, comma-separated as pid=... target options).
start_cluster() {
    local shards=$1 port=$2 dir="$WORK/cluster-$1" count=()
    [ "$shards" = default ] || count=(--num-shards "$shards")
    "$B/chronicle" server start-local-cluster --history 3 --frontend 2 "${count[@]}" \
        --port "$port" --data-dir "$dir" --log-level warn >"$OUT/cluster-$shards.log" 2>&1 &
    CLUSTER_PID=$!
    PIDS+=("$CLUSTER_PID")
    for _ in $(seq 1 240); do
        grep -q '^ready' "$OUT/cluster-$shards.log" && break
        kill -0 "$CLUSTER_PID" 2>/dev/null || { cat "$OUT/cluster-$shards.log"; exit 1; }
        sleep 0.5
    done
    grep -q '^ready' "$OUT/cluster-$shards.log" || { cat "$OUT/cluster-$shards.log"; exit 1; }
    CLUSTER_PIDS="$(grep -o 'pid=[0-9]*' "$OUT/cluster-$shards.log" | paste -sd, -)"
}

stop_cluster() {
    kill -INT "$CLUSTER_PID" 2>/dev/null || true
    wait "$CLUSTER_PID" 2>/dev/null || true
}

# CPU seconds used by the given pids (comma-separated pid=N list) over $2 seconds of idling.
idle_cpu() {
    local pids="${1//pid=/}" seconds=$2
    local tick before after
    tick="$(getconf CLK_TCK)"
    sum() { local t=0; for p in ${pids//,/ }; do
        t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done; echo "$t"; }
    before="$(sum)"; sleep "$seconds"; after="$(sum)"
    awk -v d="$((after - before))" -v t="$tick" -v s="$seconds" \
        'BEGIN { printf "%.1f%% of one core", 100 * d / t / s }'
}

COMMON=(--repeat 2 --workflow-pollers 32 --activity-pollers 32 --no-progress)
DEV_DATA="$WORK/dev"
"$B/chronicle" server start-dev --ip 127.0.0.1 --port 7601 --data-dir "$DEV_DATA" \
    --log-level warn --headless >"$OUT/start-dev.log" 2>&1 &
DEV_PID=$!
PIDS+=("$DEV_PID")
start_cluster "$SHARDS" 7611
sleep 3

# 1. The default cluster against start-dev.
T=(--target "start-dev=127.0.0.1:7601,pid=$DEV_PID" --target "cluster=127.0.0.1:7611,${CLUSTER_PIDS}")
run() { local name=$1; shift; "$B/chronicle-bench" compare "${T[@]}" "${COMMON[@]}" "$@" \
    --json "$OUT/$name.json" | tee "$OUT/$name.txt"; }
run echo-c50 --scenario echo --concurrency 50 --duration 20s
run sequential3-c50 --scenario sequential --activities 3 --concurrency 50 --duration 20s
run echo-rate100 --scenario echo --rate 100 --duration 20s
# The count the cluster runs with, from its `ready ... shards=N` line.
count="$(grep -o 'shards=[0-9]*' "$OUT/cluster-$SHARDS.log" | cut -d= -f2)"
echo "idle CPU, cluster of $count shards (every process, 20 s): $(idle_cpu "$CLUSTER_PIDS" 20)" \
    | tee "$OUT/idle-$count.txt"
echo "idle CPU, start-dev (20 s): $(idle_cpu "pid=$DEV_PID" 20)" | tee "$OUT/idle-start-dev.txt"
stop_cluster
kill "$DEV_PID" 2>/dev/null || true

# 2. The shard-count sweep, one fresh cluster per count.
port=7621
for shards in "${SWEEP[@]}"; do
    start_cluster "$shards" "$port"
    sleep 3
    echo "idle CPU, cluster of $shards shards (every process, 20 s): $(idle_cpu "$CLUSTER_PIDS" 20)" \
        | tee "$OUT/idle-$shards.txt"
    server_pids=()
    IFS=, read -r -a each <<<"${CLUSTER_PIDS//pid=/}"
    for p in "${each[@]}"; do server_pids+=(--server-pid "$p"); done
    "$B/chronicle-bench" run --address "127.0.0.1:$port" "${server_pids[@]}" \
        --scenario echo --concurrency 50 --duration 20s --workflow-pollers 32 \
        --activity-pollers 32 --no-progress --json "$OUT/sweep-$shards.json" \
        | tee "$OUT/sweep-$shards.txt"
    stop_cluster
    port=$((port + 10))
done
echo "results in $OUT"
