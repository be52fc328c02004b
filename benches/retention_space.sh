#!/usr/bin/env bash
# Does retention give the disk back? Runs N short workflows (chronicle-bench's `echo` scenario)
# in a namespace with a short retention on `chronicle server start-dev`, then reports the data
# directory's size: right after the runs, once retention has deleted every run (count = 0),
# after a clean shutdown, and after a full compaction of the stopped node's RocksDB (range
# tombstones and deleted rows dropped), with the SST bytes of each column family.
#
#   N=20000 RETENTION=30s benches/retention_space.sh
#
# Needs: target/{release,debug}/chronicle, chronicle-bench and compact_data_dir (cargo build -p
# chronicle-server -p chronicle-bench -p chronicle-benches --bins), and the `temporal` CLI.
set -euo pipefail

N=${N:-20000}
RETENTION=${RETENTION:-30s}
CONCURRENCY=${CONCURRENCY:-64}
TARGET=${CARGO_TARGET_DIR:-target}/${PROFILE:-release}
CHRONICLE=${CHRONICLE_BIN:-$TARGET/chronicle}
BENCH=${CHRONICLE_BENCH_BIN:-$TARGET/chronicle-bench}
COMPACT=${COMPACT_BIN:-$TARGET/compact_data_dir}
PORT=${PORT:-17233}
NAMESPACE=retention-bench
DATA=$(mktemp -d /tmp/chronicle-retention-XXXXXX)
ADDR=127.0.0.1:$PORT

size() { du -sb "$DATA" | cut -f1; }
mib() { awk -v b="$1" 'BEGIN { printf "%.1f MiB", b / 1048576 }'; }

"$CHRONICLE" server start-dev --headless --ip 127.0.0.1 -p "$PORT" --data-dir "$DATA" \
  --log-level warn --dynamic-config-value 'system.namespaceMinRetentionLocal=1s' \
  > "$DATA.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 100); do
  temporal operator cluster health --address "$ADDR" >/dev/null 2>&1 && break
  sleep 0.2
done
temporal operator namespace create -n "$NAMESPACE" --retention "$RETENTION" --address "$ADDR" >/dev/null
sleep 1

started=$(date +%s)
"$BENCH" run --address "$ADDR" --namespace "$NAMESPACE" --scenario echo --count "$N" \
  --concurrency "$CONCURRENCY" > "$DATA.bench.txt"
ran=$(( $(date +%s) - started ))
after_runs=$(size)
echo "workflows=$N retention=$RETENTION run_seconds=$ran"
echo "after_runs: $(mib "$after_runs") ($after_runs bytes)"

count() {
  # (The JSON form omits a zero count.)
  temporal workflow count --namespace "$NAMESPACE" --address "$ADDR" | awk '/Total/ { print $2 }'
}
last_close=$(date +%s)
while [ "$(count)" != "0" ]; do
  sleep 1
done
expired=$(( $(date +%s) - last_close ))
after_expiry=$(size)
echo "all runs deleted ${expired}s after the last run closed (retention $RETENTION)"
echo "after_expiry: $(mib "$after_expiry") ($after_expiry bytes)"

kill -TERM $SERVER
wait $SERVER || true
trap - EXIT
stopped=$(size)
echo "after_shutdown (memtables flushed, WAL gone): $(mib "$stopped") ($stopped bytes)"
"$COMPACT" "$DATA" | tee "$DATA.compact.txt"
after_compaction=$(size)
echo "after_compaction: $(mib "$after_compaction") ($after_compaction bytes)"
rm -rf "$DATA"
