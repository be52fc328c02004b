#!/usr/bin/env bash
# Offline checks of the operations assets: the Helm chart (lint, render over the ci/ values
# matrix, Kubernetes schema validation, assertions on the rendered objects, values.schema.json
# refusing bad values), the Prometheus alert rules (promtool check and unit tests), the Grafana
# dashboards (structure), and a real scrape: a `chronicle server start-dev` under a short Python
# SDK load, scraped by Debian's Prometheus, against which every dashboard query and every alert
# expression is run. No Docker, no Kubernetes: see deploy/helm/chronicle/README.md for what this
# proves and what it cannot.
#
# Uses $CHRONICLE_BIN, else $CARGO_TARGET_DIR/debug/chronicle (built if missing).
set -euo pipefail
export PYTHONDONTWRITEBYTECODE=1
cd "$(dirname "$0")/.."
ROOT="$PWD"
[ "${CHRONICLE_SKIP_SETUP:-}" = 1 ] || ./scripts/setup.sh
VENV="${CHRONICLE_VENV:-$HOME/.cache/chronicle-venv}"
PY="$VENV/bin/python"
HELM="${CHRONICLE_DEPLOY_TOOLS:-$HOME/.cache/chronicle-deploy}/bin/helm"
CHART=deploy/helm/chronicle
KUBE_VERSION=1.30.0
START=$SECONDS
WORK="$(mktemp -d -t chronicle-deploy-check.XXXXXX)"
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT
step() { echo "check-deploy: $*"; }
fail() { echo "check-deploy: FAILED: $*" >&2; exit 1; }

step "generated files are up to date"
python3 deploy/grafana/generate.py --check
cmp -s deploy/prometheus/chronicle-alerts.yaml "$CHART/files/prometheus/chronicle-alerts.yaml" \
    || fail "$CHART/files/prometheus/chronicle-alerts.yaml differs from deploy/prometheus/ (cp it)"
step "the chart's defaults agree with the Dockerfile (user, data dir, ports)"
grep -q '^USER 10001:10001' deploy/docker/Dockerfile || fail "Dockerfile user is not 10001"
grep -q 'runAsUser: 10001' "$CHART/values.yaml" || fail "values.yaml runAsUser is not 10001"
grep -q 'CHRONICLE_DATA_DIR=/data' deploy/docker/Dockerfile || fail "Dockerfile data dir"
grep -q '^EXPOSE 7233 7234 9090' deploy/docker/Dockerfile || fail "Dockerfile ports"

step "yamllint (chart values, CI values, rules)"
"$VENV/bin/yamllint" -s -d '{extends: default, rules: {line-length: {max: 110}, document-start: disable, truthy: {check-keys: false}, comments: {min-spaces-from-content: 1}}}' \
    "$CHART/Chart.yaml" "$CHART/values.yaml" "$CHART"/ci/*.yaml deploy/prometheus/*.yaml

for values in "$CHART"/ci/*-values.yaml; do
    scenario="$(basename "$values" -values.yaml)"
    extra=()
    # The Prometheus Operator objects render only where the CRDs exist; the monitoring scenario
    # says they do, the others check that nothing renders without them.
    [ "$scenario" = monitoring ] && extra=(--api-versions monitoring.coreos.com/v1)
    step "helm lint --strict + template + kubernetes-validate + assertions: $scenario"
    "$HELM" lint --strict --quiet "$CHART" -f "$values" --kube-version "$KUBE_VERSION" >"$WORK/lint.txt" 2>&1 \
        || { cat "$WORK/lint.txt"; fail "helm lint $scenario"; }
    out="$WORK/$scenario.yaml"
    "$HELM" template chronicle "$CHART" -n chronicle --kube-version "$KUBE_VERSION" \
        -f "$values" "${extra[@]}" >"$out"
    "$VENV/bin/kubernetes-validate" --strict --quiet -k "$KUBE_VERSION" "$out" >"$WORK/kv.txt" 2>&1 \
        || { cat "$WORK/kv.txt"; fail "kubernetes-validate $scenario"; }
    # CRD kinds have no bundled schema (a warning); nothing else may warn.
    if grep -v -E "Couldn't find schema for kind (ServiceMonitor|PrometheusRule) " "$WORK/kv.txt" | grep -q .; then
        cat "$WORK/kv.txt"; fail "kubernetes-validate $scenario warned"
    fi
    "$PY" scripts/deploy-check/assert_rendered.py "$scenario" "$out" crates/server/src/cli.rs "$WORK/chart-rules.yaml"
done
step "the chart's PrometheusRule holds valid rules"
promtool check rules "$WORK/chart-rules.yaml" >/dev/null

step "kubernetes-validate refuses a misspelt field (control)"
sed 's/^  podManagementPolicy: Parallel/  podManagmentPolicy: Parallel/' "$WORK/default.yaml" >"$WORK/bad.yaml"
if "$VENV/bin/kubernetes-validate" --strict --quiet -k "$KUBE_VERSION" "$WORK/bad.yaml" >/dev/null 2>&1; then
    fail "kubernetes-validate accepted podManagmentPolicy"
fi

step "values.schema.json and the chart's validations refuse bad values"
refuse() {  # refuse WHAT PATTERN HELM-ARGS...: helm template must fail, saying PATTERN
    local what="$1" pattern="$2"; shift 2
    if "$HELM" template chronicle "$CHART" "$@" >"$WORK/refused.txt" 2>&1; then
        fail "helm template accepted $what"
    fi
    grep -q -- "$pattern" "$WORK/refused.txt" || { cat "$WORK/refused.txt"; fail "$what: no '$pattern' in the error"; }
}
refuse "an unknown top-level key" "additional properties 'histroy' not allowed" --set histroy.replicaCount=3
refuse "an unknown nested key" "additional properties 'replicaCont' not allowed" --set history.replicaCont=3
refuse "no matching node" "minimum" --set matching.replicaCount=0
refuse "zero shards" "minimum" --set server.numShards=0
refuse "an unknown log format" "logFormat" --set server.logFormat=xml
refuse "two JWKS sources" "set jwksUrl or jwksSecret.name, not both" --set frontend.auth.jwksUrl=https://a/j --set frontend.auth.jwksSecret.name=s
refuse "a JWKS that is not a URL" "frontend.auth.jwksUrl" --set frontend.auth.jwksUrl=ftp://a/j
refuse "TLS without a Secret" "tls.frontend.enabled needs tls.frontend.secretName" --set tls.frontend.enabled=true

step "helm package: the chart ships its dashboards and rules, not its CI values"
"$HELM" package "$CHART" -d "$WORK" >/dev/null
tar tzf "$WORK"/chronicle-*.tgz >"$WORK/package.txt"
for f in files/dashboards/chronicle-server.json files/prometheus/chronicle-alerts.yaml values.schema.json README.md; do
    grep -qx "chronicle/$f" "$WORK/package.txt" || fail "the packaged chart lacks $f"
done
if grep -q '^chronicle/ci/' "$WORK/package.txt"; then fail "the packaged chart holds ci/"; fi

step "NOTES.txt renders the drain-then-scale-down procedure"
"$HELM" install chronicle "$CHART" -n chronicle --dry-run=client >"$WORK/notes.txt" 2>&1 \
    || { cat "$WORK/notes.txt"; fail "helm install --dry-run=client"; }
grep -q "chronicle cluster drain" "$WORK/notes.txt" || fail "NOTES.txt lacks the drain procedure"

step "promtool: check and unit-test the alert rules"
promtool check rules deploy/prometheus/chronicle-alerts.yaml >/dev/null
promtool test rules deploy/prometheus/tests/chronicle-alerts.test.yaml

step "dashboards: structure"
"$PY" scripts/deploy-check/promql_check.py dashboards deploy/grafana/chronicle-*.json

# ---- a real scrape -------------------------------------------------------------------------------
BIN="${CHRONICLE_BIN:-}"
if [ -z "$BIN" ]; then
    export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/chronicle-target}"
    BIN="$CARGO_TARGET_DIR/debug/chronicle"
    [ -x "$BIN" ] || cargo build -p chronicle-server
fi
[ -x "$BIN" ] || fail "no chronicle binary at $BIN"
read -r GRPC_PORT METRICS_PORT PROM_PORT C_FRONTEND C_INTERNAL C_METRICS < <("$PY" -c '
import socket
socks = [socket.socket() for _ in range(6)]
for s in socks: s.bind(("", 0))
print(*[s.getsockname()[1] for s in socks])')
step "real scrape: start-dev on :$GRPC_PORT (metrics :$METRICS_PORT)"
"$BIN" server start-dev --ip 127.0.0.1 --port "$GRPC_PORT" --metrics-port "$METRICS_PORT" \
    --ephemeral --headless >"$WORK/server.log" 2>&1 &
PIDS+=($!)
DEV_PID=$!
# The chart's own cluster: the default values (8 shards, free ports) rendered, then every pod and
# the init Job run as local processes with exactly the args and variables the chart gives them
# (scripts/deploy-check/chart_cluster.py says what stands in for Kubernetes).
step "chart cluster: the default chart's pods as processes (3 history, 2 matching, frontend) + init job"
mkdir -p "$WORK/cluster"
"$HELM" template chronicle "$CHART" -n chronicle -f "$CHART/ci/default-values.yaml" \
    --set server.numShards=8 --set ports.frontend="$C_FRONTEND" --set ports.internal="$C_INTERNAL" \
    --set ports.metrics="$C_METRICS" >"$WORK/cluster/rendered.yaml"
"$PY" scripts/deploy-check/chart_cluster.py "$WORK/cluster/rendered.yaml" "$BIN" "$WORK/cluster" \
    "$WORK/cluster/state.json" >"$WORK/cluster/supervisor.log" 2>&1 &
PIDS+=($!)
CLUSTER_PID=$!
for _ in $(seq 1 120); do
    curl -sf "http://127.0.0.1:$METRICS_PORT/health/ready" >/dev/null 2>&1 && break
    kill -0 "$DEV_PID" 2>/dev/null || { cat "$WORK/server.log"; fail "start-dev exited"; }
    sleep 0.5
done
curl -sf "http://127.0.0.1:$METRICS_PORT/health/ready" >/dev/null || { cat "$WORK/server.log"; fail "start-dev never became ready"; }
curl -sf "http://127.0.0.1:$METRICS_PORT/health/live" >/dev/null || fail "/health/live"
for _ in $(seq 1 300); do
    [ -f "$WORK/cluster/state.json" ] && break
    kill -0 "$CLUSTER_PID" 2>/dev/null || { cat "$WORK/cluster/supervisor.log"; fail "the chart cluster did not start"; }
    sleep 0.5
done
[ -f "$WORK/cluster/state.json" ] || { cat "$WORK/cluster/supervisor.log"; fail "the chart cluster never became ready"; }
cat "$WORK/cluster/supervisor.log"
# Scraped as the chart's ServiceMonitor would: job "chronicle", the Kubernetes namespace and pod
# as target labels (so the metrics' own `namespace` arrives as exported_namespace), the pod's
# role in chronicle_component, and exported_namespace -> temporal_namespace. start-dev runs
# every role; it is labelled as a history pod of namespace "ci".
"$PY" - "$WORK/cluster/state.json" "$METRICS_PORT" "$ROOT" >"$WORK/prometheus.yml" <<'PY'
import json, sys
state, dev_port, root = json.load(open(sys.argv[1])), sys.argv[2], sys.argv[3]
targets = [{"targets": [f"127.0.0.1:{dev_port}"],
            "labels": {"job": "chronicle", "namespace": "ci", "pod": "start-dev",
                       "chronicle_component": "history"}}]
for pod, p in state["pods"].items():
    targets.append({"targets": [p["metrics"]],
                    "labels": {"job": "chronicle", "namespace": state["namespace"], "pod": pod,
                               "chronicle_component": p["component"]}})
print(json.dumps({
    "global": {"scrape_interval": "2s", "evaluation_interval": "2s"},
    "rule_files": [f"{root}/deploy/prometheus/chronicle-alerts.yaml"],
    "scrape_configs": [{
        "job_name": "chronicle", "static_configs": targets,
        "metric_relabel_configs": [{"source_labels": ["exported_namespace"],
                                    "target_label": "temporal_namespace"}]}]}, indent=1))
PY
promtool check config "$WORK/prometheus.yml" >/dev/null
step "real scrape: Prometheus on :$PROM_PORT scraping start-dev and the chart cluster, under load"
prometheus --config.file="$WORK/prometheus.yml" --storage.tsdb.path="$WORK/tsdb" \
    --web.listen-address="127.0.0.1:$PROM_PORT" --log.level=warn >"$WORK/prometheus.log" 2>&1 &
PIDS+=($!)
SCRAPE_START=$SECONDS
PROM="http://127.0.0.1:$PROM_PORT"
for _ in $(seq 1 60); do
    curl -sf "$PROM/-/ready" >/dev/null 2>&1 && break
    sleep 0.5
done
curl -sf "$PROM/-/ready" >/dev/null || { cat "$WORK/prometheus.log"; fail "Prometheus never became ready"; }
FRONTEND="$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["frontend"])' "$WORK/cluster/state.json")"
PATH="$VENV/bin:$PATH" "$PY" scripts/deploy-check/load.py "127.0.0.1:$GRPC_PORT" 3 &
LOAD_DEV=$!
PATH="$VENV/bin:$PATH" "$PY" scripts/deploy-check/load.py "$FRONTEND" 2 || fail "load on the chart cluster"
wait "$LOAD_DEV" || fail "load on start-dev"
# About 20 s of scraping, with the load in the middle of it.
while [ $((SECONDS - SCRAPE_START)) -lt 20 ]; do sleep 1; done
step "real scrape: every dashboard query and alert expression against Prometheus"
"$PY" scripts/deploy-check/promql_check.py scrape "$PROM" \
    deploy/prometheus/chronicle-alerts.yaml \
    -- deploy/grafana/chronicle-*.json
C='namespace="chronicle"'
# (The backlogged workflow's task is an async match on start-dev, whose queues have one partition;
# in the cluster it may wait in a child partition and reach the poller through the root, a sync
# match as in Temporal, so the async family is checked on start-dev.)
step "chart cluster: what the rules and the cluster dashboard assume"
"$PY" scripts/deploy-check/promql_check.py expect "$PROM" 10 \
    "count(up{$C} == 1) == 6" \
    "count(up{$C, chronicle_component=\"history\"} == 1) == 3" \
    "count(up{$C, chronicle_component=\"matching\"} == 1) == 2" \
    "sum(poll_success{$C, chronicle_component=\"matching\"}) > 0" \
    "sum(syncmatch_latency_count{$C, chronicle_component=\"matching\"}) > 0" \
    "sum(asyncmatch_latency_count{namespace=\"ci\", taskqueue=~\"deploy_check_late.*\"}) > 0" \
    "sum(task_latency_queue_count{$C, chronicle_component=\"history\", operation=~\"TimerActive.*\"}) > 0" \
    "sum(task_latency_count{$C, chronicle_component=\"history\", operation=\"TransferActiveTaskWorkflowTask\"}) > 0" \
    "sum(task_attempt_count{$C, chronicle_component=\"history\", operation=\"TransferActiveTaskWorkflowTask\"}) > 0" \
    "sum(poll_success{$C, chronicle_component=\"matching\", namespace_state=\"active\", worker_version=\"__unversioned__\"}) > 0" \
    "count(approximate_backlog_count{$C, chronicle_component=\"matching\", task_priority=\"3\"}) > 0" \
    "count(approximate_backlog_age_seconds{$C, chronicle_component=\"matching\", operation=\"TaskQueuePartitionManager\"}) > 0" \
    "count(physical_approximate_backlog_count{$C, chronicle_component=\"matching\", operation=\"TaskQueueMgr\", task_priority=\"3\"}) > 0" \
    "count(physical_approximate_backlog_age_seconds{$C, chronicle_component=\"matching\", operation=\"TaskQueueMgr\"}) > 0" \
    "count(pending_polls{$C, chronicle_component=\"matching\", operation=\"TaskQueueMgr\", worker_version=\"__unversioned__\"}) > 0" \
    "sum(poll_latency_count{$C, chronicle_component=\"matching\", poll_result=\"dispatch\", task_priority=\"\"}) > 0" \
    "sum(numshards_gauge{$C}) == 8" \
    "count(numshards_gauge{$C}) == 3" \
    "sum(sharditem_created_count{$C, operation=\"ShardController\"}) >= 8" \
    "sum(client_requests{$C, chronicle_component=\"frontend\", service_name=\"frontend\", service_role=\"history\", operation=\"HistoryClientStartWorkflowExecution\", temporal_namespace=\"default\"}) > 0" \
    "sum(client_requests{$C, chronicle_component=\"frontend\", service_name=\"frontend\", service_role=\"matching\", operation=\"MatchingClientPollWorkflowTaskQueue\"}) > 0" \
    "sum(client_requests{$C, chronicle_component=\"history\", service_name=\"history\", service_role=\"matching\", operation=\"MatchingClientAddWorkflowTask\", temporal_namespace=\"default\"}) > 0" \
    "sum(client_requests{$C, chronicle_component=\"matching\", service_name=\"matching\", service_role=\"history\", operation=\"HistoryClientRecordWorkflowTaskStarted\", temporal_namespace=\"default\"}) > 0" \
    "count(client_latency_bucket{$C, service_name=\"history\", le=\"+Inf\"}) > 0" \
    "sum(acquire_shards_count{$C, service_name=\"history\", operation=\"ShardController\"}) >= 8" \
    "count(acquire_shards_latency_bucket{$C, operation=\"ShardController\", le=\"+Inf\"}) > 0" \
    "count(membership_changed_count{$C, service_name=\"history\", operation=\"ShardController\"} >= 1) == 3" \
    "count(cache_usage{$C, chronicle_component=\"history\", service_name=\"history\", cache_type=\"rocksdb_block\"} > 0) == 3" \
    "count(cache_size{$C, cache_type=\"rocksdb_block\"} == 67108864) == 3" \
    "count(cache_pinned_usage{$C, cache_type=\"rocksdb_block\"}) == 3" \
    "sum(service_requests{$C, service_name=\"frontend\", chronicle_component=\"frontend\"}) > 0" \
    "!service_requests{$C, service_name=\"frontend\", chronicle_component!=\"frontend\"}" \
    "sum(workflow_success{$C, temporal_namespace=\"default\"}) > 0" \
    "sum(workflow_terminate{$C, temporal_namespace=\"default\"}) == 2" \
    "sum(workflow_timeout{$C, temporal_namespace=\"default\"}) == 2" \
    "!rule:ChronicleShardsUnderReplicated" "!rule:ChronicleHistoryQuorumLost" \
    "sum(chronicle_raft_groups_without_leader{$C}) == 0" \
    "sum(chronicle_raft_groups_under_replicated{$C}) == 0" \
    "sum(chronicle_raft_groups_led{$C}) > 8"
HISTORY2_PID="$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["pods"]["chronicle-history-2"]["pid"])' "$WORK/cluster/state.json")"
step "chart cluster: kill -9 chronicle-history-2 (pid $HISTORY2_PID)"
kill -9 "$HISTORY2_PID"
"$PY" scripts/deploy-check/promql_check.py expect "$PROM" 30 \
    "count(up{$C, chronicle_component=\"history\"} == 0) == 1" \
    "(rule:ChronicleShardsUnderReplicated) and on (namespace) label_replace(vector(1), \"namespace\", \"chronicle\", \"\", \"\")" \
    "!(rule:ChronicleHistoryQuorumLost)" \
    "sum(numshards_gauge{$C}) == 8" \
    "count(numshards_gauge{$C}) == 2" \
    "(rule:ChronicleRaftGroupsUnderReplicated) and on (namespace) label_replace(vector(1), \"namespace\", \"chronicle\", \"\", \"\")" \
    "sum(increase(chronicle_raft_leader_changes{$C}[1m])) > 0" \
    "sum(chronicle_raft_groups_without_leader{$C}) == 0"
H0_METRICS="$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["pods"]["chronicle-history-0"]["metrics"])' "$WORK/cluster/state.json")"
curl -sf "http://$H0_METRICS/health/ready" >/dev/null || fail "chronicle-history-0 is not ready with one history pod down"
step "chart cluster: workflows still run with one history pod down"
PATH="$VENV/bin:$PATH" "$PY" scripts/deploy-check/load.py "$FRONTEND" 1 || fail "load after the kill"
step "chart cluster: chronicle-history-2 restarted on its data (same name, same volume): it rejoins"
kill -USR1 "$CLUSTER_PID"
H2_METRICS="$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["pods"]["chronicle-history-2"]["metrics"])' "$WORK/cluster/state.json")"
for _ in $(seq 1 60); do
    curl -sf "http://$H2_METRICS/health/ready" >/dev/null 2>&1 && break
    sleep 0.5
done
curl -sf "http://$H2_METRICS/health/ready" >/dev/null || { tail -20 "$WORK/cluster/chronicle-history-2.log"; fail "the restarted history pod never became ready"; }
"$PY" scripts/deploy-check/promql_check.py expect "$PROM" 20 \
    "count(up{$C, chronicle_component=\"history\"} == 1) == 3" \
    "count(numshards_gauge{$C}) == 3" \
    "sum(numshards_gauge{$C}) == 8" \
    "!rule:ChronicleShardsUnderReplicated" \
    "sum(chronicle_raft_groups_under_replicated{$C}) == 0"
step "all deploy checks passed in $((SECONDS - START)) s"
