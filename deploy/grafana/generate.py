#!/usr/bin/env python3
"""Generates Chronicle's Grafana dashboards (the JSON beside this file, and the copies the Helm
chart ships in deploy/helm/chronicle/files/dashboards/). Edit this file, not the JSON:

    python3 deploy/grafana/generate.py           # write
    python3 deploy/grafana/generate.py --check   # fail if the JSON is not what this file makes

Every query reads a family Chronicle exports (docs/metrics.md). Conventions: a `datasource` variable (no datasource uid is written down),
`namespace` is the Kubernetes namespace of the scrape target and `temporal_namespace` the
Temporal namespace (the chart's ServiceMonitor relabels it so, as Temporal's dashboards expect).
"""

import json
import pathlib
import sys

HERE = pathlib.Path(__file__).resolve().parent
CHART_COPY = HERE.parent / "helm" / "chronicle" / "files" / "dashboards"
DS = {"type": "prometheus", "uid": "${datasource}"}
NS = 'namespace=~"$namespace"'
TNS = 'temporal_namespace=~"$temporal_namespace"'
RATE = "$__rate_interval"


class Board:
    def __init__(self):
        self.panels = []
        self.y = 0
        self.x = 0
        self.row_h = 0
        self.next_id = 1

    def _place(self, w, h):
        if self.x + w > 24:
            self.x = 0
            self.y += self.row_h
            self.row_h = 0
        pos = {"h": h, "w": w, "x": self.x, "y": self.y}
        self.x += w
        self.row_h = max(self.row_h, h)
        return pos

    def _id(self):
        self.next_id += 1
        return self.next_id - 1

    def row(self, title, collapsed=False):
        if self.x:
            self.y += self.row_h
            self.x = 0
            self.row_h = 0
        row = {
            "id": self._id(),
            "type": "row",
            "title": title,
            "collapsed": collapsed,
            "gridPos": {"h": 1, "w": 24, "x": 0, "y": self.y},
            "panels": [],
        }
        self.y += 1
        self.panels.append(row)
        self.current_row = row if collapsed else None

    def panel(self, title, targets, unit="short", kind="timeseries", w=8, h=8, description="",
              stack=False):
        targets = [t if isinstance(t, tuple) else (t, "") for t in targets]
        panel = {
            "id": self._id(),
            "type": kind,
            "title": title,
            "description": description,
            "datasource": DS,
            "gridPos": self._place(w, h),
            "targets": [
                {"refId": chr(ord("A") + i), "datasource": DS, "expr": expr,
                 "legendFormat": legend or "__auto", "range": True}
                for i, (expr, legend) in enumerate(targets)
            ],
            "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        }
        if kind == "timeseries":
            panel["fieldConfig"]["defaults"]["custom"] = {
                "drawStyle": "line", "lineWidth": 1, "fillOpacity": 10, "showPoints": "never",
                "stacking": {"mode": "normal" if stack else "none", "group": "A"},
            }
            panel["options"] = {"legend": {"displayMode": "table", "placement": "bottom",
                                           "calcs": ["mean", "max"]},
                                "tooltip": {"mode": "multi", "sort": "desc"}}
        else:
            panel["options"] = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "",
                                                  "values": False},
                                "colorMode": "value", "graphMode": "area"}
        if getattr(self, "current_row", None) is not None:
            self.current_row["panels"].append(panel)
        else:
            self.panels.append(panel)

    def text(self, title, content, w=24, h=4):
        panel = {"id": self._id(), "type": "text", "title": title,
                 "gridPos": self._place(w, h),
                 "options": {"mode": "markdown", "content": content}}
        if getattr(self, "current_row", None) is not None:
            self.current_row["panels"].append(panel)
        else:
            self.panels.append(panel)


def variable_query(name, label, query, include_all=True):
    return {
        "name": name, "label": label, "type": "query", "datasource": DS,
        "query": {"query": query, "refId": f"{name}-var"}, "definition": query,
        "refresh": 2, "includeAll": include_all, "multi": True, "allValue": ".*",
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "options": [], "sort": 1, "hide": 0, "regex": "",
    }


def dashboard(uid, title, description, board, tags, temporal_ns=True):
    variables = [
        {"name": "datasource", "label": "Data source", "type": "datasource",
         "query": "prometheus", "current": {}, "hide": 0, "refresh": 1, "regex": "",
         "options": []},
        variable_query("namespace", "Kubernetes namespace", "label_values(restarts, namespace)"),
    ]
    if temporal_ns:
        variables.append(variable_query("temporal_namespace", "Temporal namespace",
                                        "label_values(service_requests, temporal_namespace)"))
    return {
        "uid": uid, "title": title, "description": description, "tags": tags,
        "editable": True, "graphTooltip": 1, "schemaVersion": 39, "version": 1,
        "refresh": "30s", "time": {"from": "now-1h", "to": "now"}, "timezone": "",
        "templating": {"list": variables}, "annotations": {"list": []}, "links": [],
        "panels": board.panels,
    }


def p(q, expr, by="le"):
    """histogram_quantile over a rate, summed by `by`."""
    return f"histogram_quantile({q}, sum by ({by}) (rate({expr}[{RATE}])))"


def server_overview():
    b = Board()
    fe = f'service_name="frontend", {NS}, {TNS}'
    b.row("Availability")
    b.panel("Service availability",
            [f"100 - 100 * (sum(rate(service_errors{{{fe}}}[{RATE}])) or vector(0))"
             f" / sum(rate(service_requests{{{fe}}}[{RATE}]))"],
            unit="percent", kind="stat", w=6, h=5,
            description="Share of Temporal API requests that did not end in an unexpected error "
                        "(Temporal's classification: client mistakes are not errors).")
    b.panel("Persistence availability",
            [f"100 - 100 * (sum(rate(persistence_errors{{{NS}}}[{RATE}])) or vector(0))"
             f" / sum(rate(persistence_requests{{{NS}}}[{RATE}]))"],
            unit="percent", kind="stat", w=6, h=5,
            description="Share of writes committed through a shard's Raft log.")
    b.panel("Requests / s", [f"sum(rate(service_requests{{{fe}}}[{RATE}]))"],
            unit="reqps", kind="stat", w=6, h=5)
    b.panel("Shards led", [f"sum(numshards_gauge{{{NS}}})"], kind="stat", w=6, h=5,
            description="Sum over history nodes of the shards each leads: the shards that have "
                        "a leader.")
    b.row("Requests")
    b.panel("Requests by operation",
            [(f"sum by (operation) (rate(service_requests{{{fe}}}[{RATE}]))", "{{operation}}")],
            unit="reqps", w=12)
    b.panel("Latency p95 by operation",
            [(p(0.95, f"service_latency_bucket{{{fe}, operation!~\"Poll.*\"}}", "operation, le"),
              "{{operation}}")],
            unit="s", w=12, description="Long polls are left out: they wait by design.")
    b.panel("Errors by type",
            [(f"sum by (operation, error_type) (rate(service_error_with_type{{{fe}}}[{RATE}]))",
              "{{operation}} {{error_type}}")],
            unit="reqps", w=8, description="Every failed request, expected or not.")
    b.panel("Unexpected errors by operation",
            [(f"sum by (operation) (rate(service_errors{{{fe}}}[{RATE}]))", "{{operation}}")],
            unit="reqps", w=8)
    b.panel("Resource exhausted",
            [(f"sum by (operation, resource_exhausted_cause) "
              f"(rate(service_errors_resource_exhausted{{{fe}}}[{RATE}]))",
              "{{operation}} {{resource_exhausted_cause}}")],
            unit="reqps", w=8)
    b.row("Calls between roles")
    b.panel("Calls by caller and operation",
            [(f"sum by (service_name, operation) (rate(client_requests{{{NS}, {TNS}}}[{RATE}]))",
              "{{service_name}} {{operation}}")],
            unit="reqps", w=8,
            description="Frontend to history and matching, history to matching, matching to "
                        "history (and a task-queue partition to its root), as Temporal's "
                        "internal clients count them.")
    b.panel("Call latency p95 by operation",
            [(p(0.95, f"client_latency_bucket{{{NS}, {TNS}, operation!~\".*Poll.*\"}}",
                "service_name, operation, le"), "{{service_name}} {{operation}}")],
            unit="s", w=8, description="Long polls are left out: they wait by design.")
    b.panel("Call errors by type",
            [(f"sum by (service_name, operation, error_type) "
              f"(rate(client_errors{{{NS}, {TNS}}}[{RATE}]))",
              "{{service_name}} {{operation}} {{error_type}}")],
            unit="reqps", w=8,
            description="Every failed call; a long poll its worker closed counts as Canceled.")
    b.row("Workflows")
    closes = ["success", "failed", "timeout", "terminate", "cancel", "continued_as_new"]
    b.panel("Workflow closes",
            [(f"sum(rate(workflow_{c}{{{NS}, {TNS}}}[{RATE}]))", c) for c in closes],
            unit="ops", w=12, stack=True)
    b.panel("Workflow closes by type",
            [(f"sum by (workflowType) (rate(workflow_{c}{{{NS}, {TNS}}}[{RATE}]))",
              f"{{{{workflowType}}}} {c}") for c in ("success", "failed")],
            unit="ops", w=12)
    b.panel("Workflow tasks",
            [(f"sum by (service_name, operation) (rate(service_requests{{{NS}, {TNS}, operation=~"
              f"\"AddWorkflowTask|RecordWorkflowTaskStarted|RespondWorkflowTaskCompleted|"
              f"RespondWorkflowTaskFailed\"}}[{RATE}]))", "{{service_name}} {{operation}}")],
            unit="ops", w=8)
    b.panel("Activity tasks",
            [(f"sum by (service_name, operation) (rate(service_requests{{{NS}, {TNS}, operation=~"
              f"\"AddActivityTask|RecordActivityTaskStarted|RespondActivityTask.*\"}}[{RATE}]))",
              "{{service_name}} {{operation}}")],
            unit="ops", w=8,
            description="Eager activities (returned with a workflow task completion) skip "
                        "AddActivityTask and RecordActivityTaskStarted.")
    b.panel("State transitions",
            [(f"sum by (temporal_namespace) (rate(state_transition_count_count{{{NS}, {TNS}}}"
              f"[{RATE}]))", "{{temporal_namespace}}")],
            unit="ops", w=8)
    b.row("Task queues")
    b.panel("Schedule-to-start p95",
            [(p(0.95, f"task_schedule_to_start_latency_bucket{{{NS}, {TNS}}}", "task_type, le"),
              "{{task_type}}")],
            unit="s", w=8, description="From a task's scheduling to a worker starting it.")
    b.panel("Polls with a task",
            [(f"sum by (task_type, partition) (rate(poll_success{{{NS}, {TNS}}}[{RATE}]))",
              "{{task_type}} {{partition}}"),
             (f"sum by (task_type) (rate(poll_success_sync{{{NS}, {TNS}}}[{RATE}]))",
              "{{task_type}} sync match")],
            unit="ops", w=8)
    b.panel("Empty polls",
            [(f"sum by (task_type) (rate(poll_timeouts{{{NS}, {TNS}}}[{RATE}]))",
              "{{task_type}}")],
            unit="ops", w=8, description="Polls that ended without a task (idle workers).")
    b.panel("Waiting polls",
            [(f"sum by (taskqueue, task_type) (pending_polls{{{NS}, {TNS}}})",
              "{{taskqueue}} {{task_type}}")],
            unit="short", w=12,
            description="Worker polls waiting in matching for a task, per task queue (summed "
                        "over its partitions). Zero while tasks back up: no worker polls.")
    b.panel("Poll wait p95 by result",
            [(p(0.95, f"poll_latency_bucket{{{NS}, {TNS}}}", "task_type, poll_result, le"),
              "{{task_type}} {{poll_result}}")],
            unit="s", w=12,
            description="How long a poll waited: until it got a task (dispatch) or its long-poll "
                        "deadline (timeout). Short dispatch waits mean work waits for workers.")
    b.panel("Sync match latency p95",
            [(p(0.95, f"syncmatch_latency_bucket{{{NS}, {TNS}}}", "task_type, le"),
              "{{task_type}}")],
            unit="s", w=12,
            description="Tasks handed straight to a waiting poll: from the hand-over to history "
                        "recording the task as started.")
    b.panel("Async match latency p95",
            [(p(0.95, f"asyncmatch_latency_bucket{{{NS}, {TNS}}}", "task_type, le"),
              "{{task_type}}")],
            unit="s", w=12,
            description="Tasks a poll took from the backlog: how long they waited there, until "
                        "history recorded them as started. High means too few workers.")
    b.panel("Backlog",
            [(f"sum by (taskqueue, task_type) (approximate_backlog_count{{{NS}, {TNS}}})",
              "{{taskqueue}} {{task_type}}")],
            unit="short", w=8,
            description="Tasks waiting in matching for a poller, per task queue (summed over "
                        "its partitions).")
    b.panel("Backlog age",
            [(f"max by (taskqueue, task_type) (approximate_backlog_age_seconds{{{NS}, {TNS}}})",
              "{{taskqueue}} {{task_type}}")],
            unit="s", w=8,
            description="Age of the oldest waiting task, per task queue (its oldest partition). "
                        "Growing: workers do not keep up, or none poll.")
    b.panel("Tasks with no poller",
            [(f"sum by (taskqueue, task_type) (rate(no_poller_tasks{{{NS}, {TNS}}}[{RATE}]))",
              "{{taskqueue}} {{task_type}}")],
            unit="ops", w=8,
            description="Tasks added to a task queue nobody polled in the last two minutes "
                        "(no worker runs for it).")
    b.row("Persistence and history tasks")
    b.panel("Writes by operation",
            [(f"sum by (operation) (rate(persistence_requests{{{NS}}}[{RATE}]))",
              "{{operation}}")], unit="ops", w=8)
    b.panel("Write latency p95",
            [(p(0.95, f"persistence_latency_bucket{{{NS}}}", "operation, le"), "{{operation}}")],
            unit="s", w=8,
            description="Proposal to applied: group-commit queueing, Raft append and fsync, "
                        "apply.")
    b.panel("Write errors",
            [(f"sum by (operation) (rate(persistence_errors{{{NS}}}[{RATE}]))", "{{operation}}")],
            unit="ops", w=8)
    b.panel("Timer and transfer tasks",
            [(f"sum by (operation) (rate(task_requests{{{NS}, {TNS}}}[{RATE}]))",
              "{{operation}}")], unit="ops", w=8)
    b.panel("Task processing p95",
            [(p(0.95, f"task_latency_processing_bucket{{{NS}, {TNS}}}", "operation, le"),
              "{{operation}}")], unit="s", w=8)
    b.panel("Task errors",
            [(f"sum by (operation) (rate(task_errors{{{NS}, {TNS}}}[{RATE}]))", "{{operation}}")],
            unit="ops", w=8)
    b.panel("Task latency p95 (all attempts)",
            [(p(0.95, f"task_latency_bucket{{{NS}, {TNS}}}", "operation, le"), "{{operation}}")],
            unit="s", w=12,
            description="From a task's first attempt to its completion, retries included.")
    b.panel("Task queue latency p95",
            [(p(0.95, f"task_latency_queue_bucket{{{NS}, {TNS}}}", "operation, le"),
              "{{operation}}")],
            unit="s", w=12,
            description="From a task's visibility (a timer's fire time; an outbox task's "
                        "commit) to its completion: a queue falling behind shows here first.")
    b.panel("Task attempts p95",
            [(p(0.95, f"task_attempt_bucket{{{NS}, {TNS}}}", "operation, le"),
              "{{operation}}")],
            unit="short", w=24,
            description="Attempts a timer or transfer task took to complete (1 when nothing "
                        "failed).")
    b.row("Processes")
    b.panel("Shards led by node",
            [(f"sum by (instance) (numshards_gauge{{{NS}}})", "{{instance}}")], w=12)
    b.panel("Pods up by role",
            [(f"count by (chronicle_component) (up{{{NS}, chronicle_component!=\"\"}} == 1)",
              "{{chronicle_component}}")], w=12,
            description="Scrape targets answering, by the role label the chart's ServiceMonitor "
                        "sets (chronicle_component).")
    return dashboard("chronicle-server", "Chronicle / Temporal server overview",
                     "Temporal's server metrics as Chronicle exports them.", b,
                     ["chronicle", "temporal"])


def cluster():
    b = Board()
    b.row("Shards and leaders")
    b.panel("Shards with a leader", [f"sum(numshards_gauge{{{NS}}})"], kind="stat", w=6, h=5)
    b.panel("History nodes up", [f"sum(up{{{NS}, chronicle_component=\"history\"}})"],
            kind="stat", w=6, h=5,
            description="Every history node holds a replica of every shard: each one down "
                        "leaves every shard one replica short.")
    b.panel("Leaders by node",
            [(f"sum by (instance) (numshards_gauge{{{NS}}})", "{{instance}}")], w=12, h=10,
            stack=True, description="Balanced leadership spreads proposals and task "
                                     "processing over the nodes.")
    b.panel("Shard acquisitions by node",
            [(f"sum by (instance) (increase(acquire_shards_count{{{NS}}}[{RATE}]))",
              "{{instance}}")], w=8,
            description="Shards a node took up after its Raft replica was elected leader "
                        "(Temporal's acquire_shards_count): bursts are failovers.")
    b.panel("Shard acquisition p95",
            [(p(0.95, f"acquire_shards_latency_bucket{{{NS}}}", "instance, le"),
              "{{instance}}")], unit="s", w=8,
            description="From a shard's election to its leader serving it (earlier terms' "
                        "entries applied).")
    b.panel("Ring membership changes",
            [(f"sum by (instance) (increase(membership_changed_count{{{NS}}}[{RATE}]))",
              "{{instance}}")], w=8,
            description="Changes of each node's view of the history members (a node added, "
                        "drained, dead, replaced).")
    b.row("Raft proposals (group commit)")
    b.panel("Commands proposed by kind",
            [(f"sum by (command) (rate(chronicle_history_shard_commands{{{NS}}}[{RATE}]))",
              "{{command}}")], unit="ops", w=8, stack=True)
    b.panel("Propose to applied",
            [(p(q, f"chronicle_history_shard_command_latency_bucket{{{NS}}}"), f"p{int(q*100)}")
             for q in (0.5, 0.95, 0.99)], unit="s", w=8)
    b.panel("Commands per log entry",
            [(p(q, f"chronicle_history_shard_command_batch_size_bucket{{{NS}}}"),
              f"p{int(q*100)}") for q in (0.5, 0.99)],
            w=8, description="Group commit: commands that shared one Raft entry (and fsync).")
    b.row("Per-node load")
    b.panel("Temporal API requests by node",
            [(f"sum by (instance) (rate(service_requests{{{NS}, service_name=\"frontend\"}}"
              f"[{RATE}]))", "{{instance}}")], unit="reqps", w=8)
    b.panel("Writes by node",
            [(f"sum by (instance) (rate(persistence_requests{{{NS}}}[{RATE}]))",
              "{{instance}}")], unit="ops", w=8)
    b.panel("Write p99 by node",
            [(p(0.99, f"persistence_latency_bucket{{{NS}}}", "instance, le"), "{{instance}}")],
            unit="s", w=8)
    b.row("Timers, outbox and matching")
    b.panel("Timers fired by kind",
            [(f"sum by (kind) (rate(chronicle_timer_task_fired{{{NS}}}[{RATE}]))", "{{kind}}")],
            unit="ops", w=8)
    b.panel("Timer lateness",
            [(p(q, f"chronicle_timer_task_schedule_latency_bucket{{{NS}}}"), f"p{int(q*100)}")
             for q in (0.5, 0.99)], unit="s", w=8,
            description="How late a fired timer ran behind its deadline.")
    b.panel("Outbox",
            [(f"sum(rate(chronicle_transfer_task_dispatched{{{NS}}}[{RATE}]))",
              "tasks to matching"),
             (f"sum by (outcome) (rate(chronicle_transfer_task_executed{{{NS}}}[{RATE}]))",
              "transfer {{outcome}}")], unit="ops", w=8)
    b.panel("Matching backlog and sticky fallbacks",
            [(f"sum(rate(chronicle_task_queue_backlog_added{{{NS}}}[{RATE}]))",
              "queued (no poller waiting)"),
             (f"sum(rate(chronicle_sticky_worker_unavailable{{{NS}}}[{RATE}]))",
              "sticky -> normal queue")], unit="ops", w=12)
    b.panel("Timer queue latency p99 by node",
            [(p(0.99, f"task_latency_queue_bucket{{{NS}, operation=~\"TimerActive.*\"}}",
                "instance, le"), "{{instance}}")], unit="s", w=12,
            description="From each timer's fire time to its firing, on the shard leaders.")
    b.panel("Match latency p95 by matching node",
            [(p(0.95, f"syncmatch_latency_bucket{{{NS}}}", "instance, le"), "sync {{instance}}"),
             (p(0.95, f"asyncmatch_latency_bucket{{{NS}}}", "instance, le"),
              "async {{instance}}")], unit="s", w=12,
            description="Per matching node: a node whose partitions back up shows a higher "
                        "async match latency.")
    b.panel("Sync match ratio",
            [(f"sum(rate(poll_success_sync{{{NS}}}[{RATE}])) / "
              f"sum(rate(poll_success{{{NS}}}[{RATE}]))", "sync / all")],
            unit="percentunit", w=12,
            description="Tasks handed straight to a waiting poll; low means a backlog.")
    b.panel("Stored timer and outbox tasks",
            [(f"sum by (instance) (chronicle_timer_queue_depth{{{NS}}})", "timers {{instance}}"),
             (f"sum by (instance) (chronicle_outbox_depth{{{NS}}})", "outbox {{instance}}")],
            w=12, description="Tasks stored on each node over every shard replica it hosts "
            "(RocksDB's key estimate). A queue that only grows means its processor is behind.")
    b.panel("Oldest queued work",
            [(f"max by (instance) (chronicle_timer_queue_lag_seconds{{{NS}}})",
              "timer lag {{instance}}"),
             (f"max by (instance) (chronicle_outbox_oldest_task_age_seconds{{{NS}}})",
              "oldest outbox task {{instance}}")], unit="s", w=12,
            description="Over the shards each node leads: how late the earliest due timer is "
            "(should stay near 0), and the age of the oldest outbox task (a task waiting for "
            "a worker, or a transfer task not run yet; counted from its commit).")
    b.row("Raft groups")
    b.panel("Groups led, leaderless, under-replicated",
            [(f"sum by (instance) (chronicle_raft_groups_led{{{NS}}})", "led {{instance}}"),
             (f"sum by (instance) (chronicle_raft_groups_without_leader{{{NS}}})",
              "no leader {{instance}}"),
             (f"sum by (instance) (chronicle_raft_groups_under_replicated{{{NS}}})",
              "under-replicated {{instance}}")], w=8,
            description="Per node, over the shard groups and the metadata group it hosts. "
            "Leaderless groups accept no writes.")
    b.panel("Apply and replication lag (entries)",
            [(f"max by (instance) (chronicle_raft_apply_lag_entries{{{NS}}})",
              "apply {{instance}}"),
             (f"max by (instance) (chronicle_raft_replication_lag_entries{{{NS}}})",
              "followers behind {{instance}}")], w=8,
            description="Largest over the groups a node hosts (apply) or leads (replication).")
    b.panel("Leader changes",
            [(f"sum by (instance) (increase(chronicle_raft_leader_changes{{{NS}}}[{RATE}]))",
              "{{instance}}")], w=8,
            description="Leader changes seen by each node over every group it hosts.")
    b.panel("Raft log fsync",
            [(p(q, f"chronicle_raft_log_append_duration_seconds_bucket{{{NS}}}", "instance, le"),
              f"p{int(q*100)} {{{{instance}}}}") for q in (0.5, 0.99)], unit="s", w=12,
            description="One synced write of the node's log writer, carrying every group's "
            "appends.")
    b.panel("Log operations per synced write",
            [(p(q, f"chronicle_raft_log_writes_per_sync_bucket{{{NS}}}", "instance, le"),
              f"p{int(q*100)} {{{{instance}}}}") for q in (0.5, 0.99)], w=12,
            description="How many appends share one fsync.")
    b.row("RocksDB")
    b.panel("Writes delayed",
            [(f"max by (instance) (chronicle_rocksdb_delayed_write_rate{{{NS}}})",
              "delayed to {{instance}}")], unit="Bps", w=8,
            description="The rate RocksDB throttles writes to; 0 while it does not.")
    b.panel("Writes stopped",
            [(f"max by (instance) (chronicle_rocksdb_write_stopped{{{NS}}})", "{{instance}}")],
            w=8, description="1 while RocksDB accepts no writes.")
    b.panel("Pending compaction",
            [(f"sum by (instance) (chronicle_rocksdb_pending_compaction_bytes{{{NS}}})",
              "{{instance}}")], unit="bytes", w=8,
            description="RocksDB delays writes from 64 GiB and stops them at 256 GiB.")
    b.panel("SST bytes by column family",
            [(f"sum by (cf) (chronicle_rocksdb_sst_bytes{{{NS}}})", "{{cf}}")], unit="bytes",
            w=8, stack=True)
    b.panel("Memtable bytes by column family",
            [(f"sum by (cf) (chronicle_rocksdb_memtable_bytes{{{NS}}})", "{{cf}}")],
            unit="bytes", w=8, stack=True)
    b.panel("Block cache in use",
            [(f"sum by (instance) (cache_usage{{{NS}, cache_type=\"rocksdb_block\"}})",
              "{{instance}}"),
             (f"sum by (instance) (cache_pinned_usage{{{NS}, cache_type=\"rocksdb_block\"}})",
              "pinned {{instance}}"),
             (f"max(cache_size{{{NS}, cache_type=\"rocksdb_block\"}})", "capacity")],
            unit="bytes", w=8,
            description="The RocksDB block cache (Temporal's cache gauges, cache_type "
                        "rocksdb_block): bytes held, bytes pinned (index and filter tops, blocks "
                        "in use), capacity.")
    return dashboard("chronicle-cluster", "Chronicle / Cluster",
                     "Shards, leaders, Raft proposals and per-node load of a Chronicle cluster.",
                     b, ["chronicle"], temporal_ns=False)


def bench():
    b = Board()
    fe = f'service_name="frontend", {NS}, {TNS}'
    b.row("Throughput")
    b.panel("Workflows started / s",
            [f"sum(rate(service_requests{{{fe}, operation=~\"StartWorkflowExecution|"
             f"SignalWithStartWorkflowExecution\"}}[{RATE}]))"], unit="ops", kind="stat", w=6, h=5)
    b.panel("Workflows completed / s",
            [f"sum(rate(workflow_success{{{NS}, {TNS}}}[{RATE}]))"], unit="ops", kind="stat",
            w=6, h=5)
    b.panel("Workflow tasks / s",
            [f"sum(rate(service_requests{{{fe}, operation=\"RespondWorkflowTaskCompleted\"}}"
             f"[{RATE}]))"], unit="ops", kind="stat", w=6, h=5)
    b.panel("Writes / s", [f"sum(rate(persistence_requests{{{NS}}}[{RATE}]))"], unit="ops",
            kind="stat", w=6, h=5)
    b.panel("Starts and closes",
            [(f"sum(rate(service_requests{{{fe}, operation=\"StartWorkflowExecution\"}}"
              f"[{RATE}]))", "started"),
             (f"sum(rate(workflow_success{{{NS}, {TNS}}}[{RATE}]))", "completed"),
             (f"sum(rate(workflow_failed{{{NS}, {TNS}}}[{RATE}]))", "failed")],
            unit="ops", w=24)
    b.row("Latency")
    for op in ("StartWorkflowExecution", "RespondWorkflowTaskCompleted",
               "RespondActivityTaskCompleted"):
        b.panel(f"{op} latency",
                [(p(q, f"service_latency_bucket{{{fe}, operation=\"{op}\"}}"), f"p{int(q*100)}")
                 for q in (0.5, 0.95, 0.99)], unit="s", w=8)
    b.panel("Write latency (Raft commit + apply)",
            [(p(q, f"persistence_latency_bucket{{{NS}}}"), f"p{int(q*100)}")
             for q in (0.5, 0.95, 0.99)], unit="s", w=8)
    b.panel("Schedule-to-start",
            [(p(q, f"task_schedule_to_start_latency_bucket{{{NS}, {TNS}}}", "task_type, le"),
              f"{{{{task_type}}}} p{int(q*100)}") for q in (0.5, 0.99)], unit="s", w=8)
    b.panel("Commands per Raft entry",
            [(p(q, f"chronicle_history_shard_command_batch_size_bucket{{{NS}}}"),
              f"p{int(q*100)}") for q in (0.5, 0.99)], w=8)
    b.row("Errors")
    b.panel("Failed requests by type",
            [(f"sum by (operation, error_type) (rate(service_error_with_type{{{fe}}}[{RATE}]))",
              "{{operation}} {{error_type}}")], unit="reqps", w=24)
    return dashboard("chronicle-bench", "Chronicle / Benchmark run",
                     "What a chronicle-bench run measures, from the server's side: throughput, "
                     "latency percentiles, group commit and errors.", b, ["chronicle", "bench"])


DASHBOARDS = {
    "chronicle-server.json": server_overview,
    "chronicle-cluster.json": cluster,
    "chronicle-bench.json": bench,
}


def main():
    check = "--check" in sys.argv[1:]
    stale = []
    for name, make in DASHBOARDS.items():
        text = json.dumps(make(), indent=2, ensure_ascii=False) + "\n"
        for path in (HERE / name, CHART_COPY / name):
            if check:
                if not path.exists() or path.read_text() != text:
                    stale.append(str(path))
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text)
    if stale:
        sys.exit("dashboards out of date (run deploy/grafana/generate.py): " + ", ".join(stale))


if __name__ == "__main__":
    main()
