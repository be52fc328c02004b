#!/usr/bin/env bash
# Visibility at scale (issue 14 §3): a start-dev data directory holding CLOSED closed and OPEN
# open workflows, then the latency of CountWorkflowExecutions and of the first page of
# ListWorkflowExecutions for selective and broad queries (median and max of 20 calls each,
# through the official Python SDK), and echo start throughput on that directory against an
# empty one (the cost of the indexes as they grow).
#   benches/visibility_scale.sh [CLOSED] [OPEN] [OUTPUT_DIR]   (defaults 1000000 10000 bench-results/visibility)
# Needs the release build (built here) and the venv of scripts/setup.sh. The data directory is
# kept in OUTPUT_DIR/data (several GB at a million runs); delete it afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/chronicle-target}"
VENV="${CHRONICLE_VENV:-$HOME/.cache/chronicle-venv}"
CLOSED="${1:-1000000}"
OPEN="${2:-10000}"
OUT="${3:-bench-results/visibility}"
B="$CARGO_TARGET_DIR/release"
[ "${CHRONICLE_BENCH_SKIP_BUILD:-}" = 1 ] || cargo build --release -p chronicle-server -p chronicle-bench
mkdir -p "$OUT"
DATA="$OUT/data"
EMPTY="$(mktemp -d)"
PID=""
cleanup() { [ -n "$PID" ] && kill "$PID" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$EMPTY"; }
trap cleanup EXIT

serve() {  # serve DIR PORT
    "$B/chronicle" server start-dev --ip 127.0.0.1 --port "$2" --data-dir "$1" --headless \
        --log-level warn >>"$OUT/server.log" 2>&1 &
    PID=$!
    for _ in $(seq 1 120); do
        "$VENV/bin/python" -c "import socket,sys; socket.create_connection(('127.0.0.1', $2), 1)" \
            2>/dev/null && break
        sleep 0.5
    done
    sleep 2
}
stop() { kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; PID=""; }
bench() { "$B/chronicle-bench" run --address "127.0.0.1:$1" --server-pid "$PID" --no-progress \
    --workflow-pollers 32 --activity-pollers 32 "${@:2}"; }

# Echo throughput on an empty directory first (the reference for the indexes' cost).
serve "$EMPTY" 7701
bench 7701 --scenario echo --concurrency 50 --duration 20s --json "$OUT/echo-empty.json" \
    | tee "$OUT/echo-empty.txt"
stop

serve "$DATA" 7702
if [ ! -f "$OUT/filled" ]; then
    echo "filling: $CLOSED closed (echo), then $OPEN open (parked on a 1 h timer)"
    bench 7702 --scenario echo --concurrency 200 --count "$CLOSED" --describe-sample 0 \
        --workflow-timeout 10m | tee "$OUT/fill-closed.txt"
    bench 7702 --scenario timer --timer-duration 1h --no-wait --concurrency 200 --count "$OPEN" \
        --describe-sample 0 | tee "$OUT/fill-open.txt"
    touch "$OUT/filled"
fi
du -sh "$DATA" | tee "$OUT/size.txt"
sleep 5
# The query client has been seen to die with SIGSEGV at interpreter exit after printing every
# result; the echo run below must still happen.
{ "$VENV/bin/python" - "127.0.0.1:7702" || echo "(query client exited with status $?)"; } <<'EOF' | tee "$OUT/queries.txt"
import asyncio, statistics, sys, time
from temporalio.client import Client

QUERIES = [
    ("count, open runs (selective)", "count", "ExecutionStatus = 'Running'"),
    ("count, open runs of a type", "count", "ExecutionStatus = 'Running' AND WorkflowType = 'bench-timer'"),
    ("count, all runs", "count", ""),
    ("count, by status", "count", "GROUP BY ExecutionStatus"),
    ("list first page, open runs", "list", "ExecutionStatus = 'Running'"),
    ("list first page, closed runs", "list", "ExecutionStatus = 'Completed'"),
    ("list first page, all runs", "list", ""),
    ("list first page, type and status", "list", "WorkflowType = 'bench-echo' AND ExecutionStatus = 'Completed'"),
]

async def main():
    client = await Client.connect(sys.argv[1])
    print(f"{'query':<36} {'median ms':>10} {'max ms':>8}  result")
    for label, kind, query in QUERIES:
        times, result = [], None
        for _ in range(20):
            started = time.perf_counter()
            if kind == "count":
                r = await client.count_workflows(query or None)
                result = r.count if not r.groups else {tuple(g.group_values): g.count for g in r.groups}
            else:
                page = await client.workflow_service.list_workflow_executions(
                    __import__("temporalio.api.workflowservice.v1", fromlist=["x"]).ListWorkflowExecutionsRequest(
                        namespace="default", query=query, page_size=100))
                result = f"{len(page.executions)} rows"
            times.append((time.perf_counter() - started) * 1000)
        print(f"{label:<36} {statistics.median(times):>10.1f} {max(times):>8.1f}  {result}")

asyncio.run(main())
EOF
bench 7702 --scenario echo --concurrency 50 --duration 20s --json "$OUT/echo-full.json" \
    | tee "$OUT/echo-full.txt"
stop
echo "results in $OUT (data directory kept in $DATA)"
