#!/usr/bin/env bash
# Builds the cargo-fuzz targets (fuzz/) on nightly and runs each for a bounded time.
#
#   scripts/fuzz.sh                 every target, FUZZ_SECONDS (default 20) each: what CI runs
#   scripts/fuzz.sh shard_apply 3600  one target for an hour (long runs: docs/security.md)
#
# The fuzz build has its own target directory outside the clone (FUZZ_TARGET_DIR, default
# ~/.cache/chronicle-fuzz-target), kept between runs like the main one. It does not compile
# RocksDB's C++ again: it links the static library the main build already made
# (librocksdb-sys honours ROCKSDB_LIB_DIR/ROCKSDB_STATIC), so run `cargo build` first (CI has).
# Targets are built without a sanitizer (`-s none`; the code under test forbids `unsafe`), with
# debug assertions and overflow checks on. A crash leaves its input in fuzz/artifacts/<target>/;
# copy it to fuzz/regressions/<target>/ and fix the bug (`cargo test -p chronicle-fuzz-harness`
# replays every file there).
set -euo pipefail
cd "$(dirname "$0")/.."

MAIN_TARGET="${CARGO_TARGET_DIR:-$HOME/.cache/chronicle-target}"
FUZZ_TARGET="${FUZZ_TARGET_DIR:-$HOME/.cache/chronicle-fuzz-target}"
SECONDS_EACH="${FUZZ_SECONDS:-20}"
TARGETS=(workflow_service visibility_query tokens history_events shard_apply)
if [ $# -ge 1 ]; then
  TARGETS=("$1")
  SECONDS_EACH="${2:-$SECONDS_EACH}"
fi

if ! rustup run nightly rustc --version >/dev/null 2>&1; then
  echo "fuzz.sh: the nightly toolchain is missing (rustup toolchain install nightly)" >&2
  exit 1
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked --version 0.13.2
fi

# The RocksDB static library of the main build (the newest, should there be several).
ROCKSDB_A="$(ls -t "$MAIN_TARGET"/debug/build/librocksdb-sys-*/out/librocksdb.a 2>/dev/null | head -1 || true)"
if [ -z "$ROCKSDB_A" ]; then
  echo "fuzz.sh: no librocksdb.a under $MAIN_TARGET/debug/build; building chronicle-storage first" >&2
  CARGO_TARGET_DIR="$MAIN_TARGET" cargo build -p chronicle-storage
  ROCKSDB_A="$(ls -t "$MAIN_TARGET"/debug/build/librocksdb-sys-*/out/librocksdb.a | head -1)"
fi
export ROCKSDB_LIB_DIR="$(dirname "$ROCKSDB_A")" ROCKSDB_STATIC=1

BUILD_FLAGS=(--release --debug-assertions --sanitizer none --codegen-units 16
  --target-dir "$FUZZ_TARGET")
start=$(date +%s)
# `cargo fuzz build` builds one target or all of them.
if [ ${#TARGETS[@]} -eq 1 ]; then
  cargo +nightly fuzz build "${BUILD_FLAGS[@]}" "${TARGETS[0]}"
else
  cargo +nightly fuzz build "${BUILD_FLAGS[@]}"
fi
echo "fuzz.sh: build took $(( $(date +%s) - start )) s"

for target in "${TARGETS[@]}"; do
  corpus="$FUZZ_TARGET/corpus/$target"   # grows between runs, outside the clone
  mkdir -p "$corpus" "fuzz/artifacts/$target"
  echo "fuzz.sh: $target for ${SECONDS_EACH} s"
  cargo +nightly fuzz run "${BUILD_FLAGS[@]}" "$target" "$corpus" "fuzz/corpus/$target" -- \
    -max_total_time="$SECONDS_EACH" -max_len=8192 -timeout=20 -rss_limit_mb=4096 \
    -print_final_stats=1 -artifact_prefix="fuzz/artifacts/$target/" 2>&1 |
    grep -E "^(INFO: Seed|#[0-9]+\s+DONE|stat::number_of_executed_units|stat::new_units_added|==|SUMMARY|thread|panicked|Crash|artifact)|Failing input" || true
  if [ -n "$(ls -A "fuzz/artifacts/$target" 2>/dev/null)" ]; then
    echo "fuzz.sh: $target crashed; inputs in fuzz/artifacts/$target/" >&2
    exit 1
  fi
done
echo "fuzz.sh: every target ran clean ($(( $(date +%s) - start )) s in all)"
