"""Visibility: the list-filter query language over system and custom search attributes of every
type, list order and page tokens, counts grouped by status, ListOpen/ListClosed, the per-namespace
search-attribute registry (OperatorService, limits, values checked on start and on upsert), its
durability across a restart, and the `temporal` CLI's list/count/search-attribute commands.

Workflows here mostly run without a worker (started, some terminated): list and count only need
their visibility rows. Temporal's visibility is eventually consistent, so reads poll."""

import asyncio
import time
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from temporalio.api.enums.v1 import EventType, IndexedValueType, WorkflowTaskFailedCause
from temporalio.api.filter.v1 import StartTimeFilter, StatusFilter, WorkflowExecutionFilter, WorkflowTypeFilter
from temporalio.api.enums.v1 import WorkflowExecutionStatus
from temporalio.api.operatorservice.v1 import (AddSearchAttributesRequest, ListSearchAttributesRequest,
                                               RemoveSearchAttributesRequest)
from temporalio.api.workflowservice.v1 import (CountWorkflowExecutionsRequest, ListClosedWorkflowExecutionsRequest,
                                               ListOpenWorkflowExecutionsRequest, ListWorkflowExecutionsRequest,
                                               RegisterNamespaceRequest, DescribeNamespaceRequest,
                                               ScanWorkflowExecutionsRequest)
from temporalio.client import Client
from temporalio.common import SearchAttributeKey, SearchAttributePair, TypedSearchAttributes
from temporalio.service import RPCError, RPCStatusCode
from temporalio.worker import Worker

import workflows as wf
from conftest import new_id
from test_cli import cli, cli_json

KW = SearchAttributeKey.for_keyword("VisKeyword")
TEXT = SearchAttributeKey.for_text("VisText")
INT = SearchAttributeKey.for_int("VisInt")
DOUBLE = SearchAttributeKey.for_float("VisDouble")
BOOL = SearchAttributeKey.for_bool("VisBool")
WHEN = SearchAttributeKey.for_datetime("VisDatetime")
TAGS = SearchAttributeKey.for_keyword_list("VisKeywordList")

VIS_ATTRIBUTES = {
    "VisKeyword": IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD,
    "VisText": IndexedValueType.INDEXED_VALUE_TYPE_TEXT,
    "VisInt": IndexedValueType.INDEXED_VALUE_TYPE_INT,
    "VisDouble": IndexedValueType.INDEXED_VALUE_TYPE_DOUBLE,
    "VisBool": IndexedValueType.INDEXED_VALUE_TYPE_BOOL,
    "VisDatetime": IndexedValueType.INDEXED_VALUE_TYPE_DATETIME,
    "VisKeywordList": IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD_LIST,
}


async def eventually(check, timeout=15.0, what="condition"):
    """Polls ``check()`` (async, returns a truthy value when done) until it holds."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            last = await check()
            if last:
                return last
        except RPCError as e:
            last = e
        assert time.monotonic() < deadline, f"{what} never held (last: {last!r})"
        await asyncio.sleep(0.2)


async def register_vis_attributes(client: Client, namespace: str = "default") -> None:
    """Registers the Vis* attributes (adding registered names again changes nothing) and waits
    until queries accept them."""
    await client.operator_service.add_search_attributes(
        AddSearchAttributesRequest(namespace=namespace, search_attributes=VIS_ATTRIBUTES))

    async def usable():
        await client.workflow_service.count_workflow_executions(CountWorkflowExecutionsRequest(
            namespace=namespace, query=" AND ".join(f"{n} IS NULL" for n in VIS_ATTRIBUTES)))
        return True
    await eventually(usable, what="search attributes usable")


async def rate_limited(call):
    """``await call()``, again after a pause while Temporal's visibility rate limit (a few calls per
    second per namespace on its dev server) refuses it."""
    for _ in range(100):
        try:
            return await call()
        except RPCError as e:
            if e.status != RPCStatusCode.RESOURCE_EXHAUSTED:
                raise
            await asyncio.sleep(0.3)
    return await call()


async def ids(client: Client, query: str, page_size: int = 1000) -> list:
    async def call():
        return [w.id async for w in client.list_workflows(query, page_size=page_size)]
    return await rate_limited(call)


async def count(client: Client, query: str):
    return await rate_limited(lambda: client.count_workflows(query))


async def wait_listed(client: Client, query: str, n: int) -> list:
    async def check():
        found = await ids(client, query)
        return found if len(found) == n else None
    return await eventually(check, what=f"{n} runs listed for {query!r}")


def attrs(*pairs) -> TypedSearchAttributes:
    return TypedSearchAttributes([SearchAttributePair(k, v) for k, v in pairs])


@pytest.fixture
async def corpus(client, task_queue):
    """Six runs on their own task queue with typed search attributes; r5 and r6 terminated."""
    await register_vis_attributes(client)
    t0 = datetime(2024, 1, 1, tzinfo=timezone.utc)
    rows = {
        "r1": attrs((KW, "alpha"), (TEXT, "the quick brown fox"), (INT, 1), (DOUBLE, 1.5), (BOOL, True),
                    (WHEN, t0), (TAGS, ["red", "green"])),
        "r2": attrs((KW, "alpine"), (TEXT, "lazy dog"), (INT, 2), (DOUBLE, 2.5), (BOOL, False),
                    (WHEN, t0 + timedelta(days=1)), (TAGS, ["blue"])),
        "r3": attrs((KW, "beta"), (INT, 3), (DOUBLE, -1.0), (WHEN, t0 + timedelta(days=2))),
        "r4": attrs((KW, "it's"), (INT, 40)),
        "r5": attrs((KW, "gamma"), (INT, 5), (TAGS, ["red"])),
        "r6": attrs(),
    }
    prefix = new_id("vis")
    handles = {}
    for name, sa in rows.items():
        handles[name] = await client.start_workflow("VisNoWorker", id=f"{prefix}-{name}", task_queue=task_queue,
                                                    search_attributes=sa)
    for name in ("r5", "r6"):
        await handles[name].terminate("done")
    await wait_listed(client, f"TaskQueue = '{task_queue}' AND ExecutionStatus = 'Terminated'", 2)
    await wait_listed(client, f"TaskQueue = '{task_queue}' AND VisKeyword IS NOT NULL", 5)
    return prefix, task_queue, handles


QUERIES = [
    # (filter, expected runs)
    ("VisKeyword = 'alpha'", {"r1"}),
    ("VisKeyword != 'alpha'", {"r2", "r3", "r4", "r5"}),
    ("VisKeyword > 'alpine'", {"r3", "r4", "r5"}),
    ("VisKeyword >= 'alpine'", {"r2", "r3", "r4", "r5"}),
    ("VisKeyword < 'alpine'", {"r1"}),
    ("VisKeyword <= 'alpine'", {"r1", "r2"}),
    ("VisKeyword IN ('alpha', 'beta', 'nope')", {"r1", "r3"}),
    ("VisKeyword NOT IN ('alpha', 'beta')", {"r2", "r4", "r5"}),
    ("VisKeyword STARTS_WITH 'alp'", {"r1", "r2"}),
    ("VisKeyword BETWEEN 'alpine' AND 'beta'", {"r2", "r3"}),
    ("VisKeyword = 'it''s'", {"r4"}),
    ("VisKeyword = \"beta\"", {"r3"}),
    ("`VisKeyword` = 'beta'", {"r3"}),
    ("VisKeyword IS NULL", {"r6"}),
    ("VisKeyword IS NOT NULL", {"r1", "r2", "r3", "r4", "r5"}),
    ("VisText = 'quick fox'", {"r1"}),
    ("VisText = 'dog'", {"r2"}),
    ("VisInt = 2", {"r2"}),
    ("VisInt > 2", {"r3", "r4", "r5"}),
    ("VisInt BETWEEN 2 AND 5", {"r2", "r3", "r5"}),
    ("VisInt NOT BETWEEN 2 AND 5", {"r1", "r4"}),
    ("VisInt IN (1, 40)", {"r1", "r4"}),
    ("VisInt < -1", set()),
    ("VisDouble >= 1.5", {"r1", "r2"}),
    ("VisDouble < 0", {"r3"}),
    ("VisBool = true", {"r1"}),
    ("VisBool = false", {"r2"}),
    ("VisBool IS NULL AND VisKeyword IS NOT NULL", {"r3", "r4", "r5"}),
    ("VisDatetime > '2024-01-01T12:00:00Z'", {"r2", "r3"}),
    ("VisDatetime BETWEEN '2024-01-01T00:00:00Z' AND '2024-01-02T12:00:00Z'", {"r1", "r2"}),
    # (Not `=` on a Datetime: Temporal's SQLite visibility compares datetimes as text, and equality
    # with an RFC 3339 literal never holds there.)
    ("VisDatetime < '2024-01-02T12:00:00Z'", {"r1", "r2"}),
    ("VisKeywordList = 'red'", {"r1", "r5"}),
    ("VisKeywordList IN ('blue', 'green')", {"r1", "r2"}),
    ("VisKeywordList NOT IN ('red')", {"r2", "r3", "r4", "r6"}),
    ("VisKeywordList != 'red'", {"r2", "r3", "r4", "r6"}),
    ("ExecutionStatus = 'Terminated'", {"r5", "r6"}),
    ("ExecutionStatus != 'Running'", {"r5", "r6"}),
    ("ExecutionStatus IN ('Running', 'Completed')", {"r1", "r2", "r3", "r4"}),
    ("ExecutionStatus = 1", {"r1", "r2", "r3", "r4"}),
    ("CloseTime IS NULL", {"r1", "r2", "r3", "r4"}),
    ("CloseTime IS NOT NULL", {"r5", "r6"}),
    ("ExecutionDuration >= 0", {"r5", "r6"}),
    ("ExecutionDuration < '1h'", {"r5", "r6"}),
    ("ExecutionDuration > '1h'", set()),
    ("WorkflowType = 'VisNoWorker' AND StartTime > '2020-01-01T00:00:00Z'",
     {"r1", "r2", "r3", "r4", "r5", "r6"}),
    ("StartTime < '2020-01-01T00:00:00Z'", set()),
    # Written when a run closes.
    ("HistoryLength >= 2", {"r5", "r6"}),
    ("HistoryLength IS NULL", {"r1", "r2", "r3", "r4"}),
    ("ParentWorkflowId IS NULL", {"r1", "r2", "r3", "r4", "r5", "r6"}),
    ("NOT (VisInt > 2)", {"r1", "r2"}),
    ("VisInt = 1 OR VisInt = 40", {"r1", "r4"}),
    ("(VisInt = 1 OR VisKeyword = 'beta') AND VisBool = true", {"r1"}),
    ("VisInt = 1 OR (VisKeyword STARTS_WITH 'a' AND NOT VisBool = true)", {"r1", "r2"}),
    ("NOT VisKeyword = 'alpha'", {"r2", "r3", "r4", "r5"}),
]


async def test_query_operators_and_attribute_types(client, corpus):
    prefix, task_queue, _ = corpus
    failures = []
    for query, expected in QUERIES:
        full = f"TaskQueue = '{task_queue}' AND ({query})"
        got = {i[len(prefix) + 1:] for i in await ids(client, full)}
        if got != expected:
            failures.append(f"{query}: got {sorted(got)}, want {sorted(expected)}")
        counted = await count(client, full)
        if counted.count != len(expected):
            failures.append(f"count {query}: {counted.count} != {len(expected)}")
    assert not failures, "\n".join(failures)
    # The workflow and run IDs of a listed run, and the run ID filter.
    first = (await rate_limited(lambda: client.workflow_service.list_workflow_executions(
        ListWorkflowExecutionsRequest(namespace="default", query=f"WorkflowId = '{prefix}-r1'")))).executions[0]
    assert await ids(client, f"RunId = '{first.execution.run_id}'") == [f"{prefix}-r1"]
    async def typed():
        return [w async for w in client.list_workflows(f"WorkflowId = '{prefix}-r1'")]
    first = (await rate_limited(typed))[0]
    assert first.typed_search_attributes.get(KW) == "alpha"
    assert first.typed_search_attributes.get(TAGS) == ["red", "green"]


async def test_list_order_and_count_groups(client, corpus):
    prefix, task_queue, handles = corpus
    listed = [i[len(prefix) + 1:] for i in await ids(client, f"TaskQueue = '{task_queue}'")]
    # Open runs first (newest start first), then closed ones (newest close first).
    assert listed == ["r4", "r3", "r2", "r1", "r6", "r5"], listed
    counted = await count(client, f"TaskQueue = '{task_queue}' GROUP BY ExecutionStatus")
    assert counted.count == 6
    assert sorted((g.group_values, g.count) for g in counted.groups) == [(["Running"], 4), (["Terminated"], 2)]
    scan = await rate_limited(lambda: client.workflow_service.scan_workflow_executions(ScanWorkflowExecutionsRequest(
        namespace="default", query=f"TaskQueue = '{task_queue}'", page_size=4)))
    assert len(scan.executions) == 4 and scan.next_page_token


async def test_list_open_and_closed_typed_filters(client, corpus):
    prefix, task_queue, handles = corpus
    service = client.workflow_service
    since = StartTimeFilter(earliest_time=datetime.now(timezone.utc) - timedelta(hours=1),
                            latest_time=datetime.now(timezone.utc) + timedelta(hours=1))
    opened = await rate_limited(lambda: service.list_open_workflow_executions(ListOpenWorkflowExecutionsRequest(
        namespace="default", maximum_page_size=100, start_time_filter=since,
        execution_filter=WorkflowExecutionFilter(workflow_id=f"{prefix}-r2"))))
    assert [e.execution.workflow_id for e in opened.executions] == [f"{prefix}-r2"]
    closed = await rate_limited(lambda: service.list_closed_workflow_executions(ListClosedWorkflowExecutionsRequest(
        namespace="default", maximum_page_size=100, start_time_filter=since,
        execution_filter=WorkflowExecutionFilter(workflow_id=f"{prefix}-r5"))))
    assert [e.execution.workflow_id for e in closed.executions] == [f"{prefix}-r5"]
    closed = await rate_limited(lambda: service.list_closed_workflow_executions(ListClosedWorkflowExecutionsRequest(
        namespace="default", maximum_page_size=100, start_time_filter=since,
        status_filter=StatusFilter(status=WorkflowExecutionStatus.WORKFLOW_EXECUTION_STATUS_TERMINATED))))
    assert {f"{prefix}-r5", f"{prefix}-r6"} <= {e.execution.workflow_id for e in closed.executions}
    typed = await rate_limited(lambda: service.list_open_workflow_executions(ListOpenWorkflowExecutionsRequest(
        namespace="default", maximum_page_size=1000, start_time_filter=since,
        type_filter=WorkflowTypeFilter(name="VisNoWorker"))))
    assert {f"{prefix}-r{i}" for i in range(1, 5)} <= {e.execution.workflow_id for e in typed.executions}
    assert not {f"{prefix}-r5", f"{prefix}-r6"} & {e.execution.workflow_id for e in typed.executions}


INVALID = [
    ("Foo = 'x'", "invalid query: invalid search attribute: Foo"),
    ("WorkflowId = ", "invalid query: malformed SQL query: syntax error at position 40"),
    ("RunId = 'a' AND", "invalid query: malformed SQL query: syntax error at position 43"),
    ("(WorkflowId = 'a'", "invalid query: malformed SQL query: syntax error at position 45"),
    ("WorkflowId == 'a'", "invalid query: malformed SQL query: syntax error at position 41"),
    ("StartTime > 'abc'", "invalid query: invalid expression: unable to parse datetime 'abc'"),
    ("HistoryLength = 'abc'", "invalid query: invalid expression: invalid value type for search attribute "
                              "HistoryLength of type Int: \"abc\" (type: string)"),
    ("WorkflowId = 5", "invalid query: invalid expression: invalid value type for search attribute WorkflowId "
                       "of type Keyword: 5 (type: int64)"),
    ("ExecutionStatus = 'Bogus'", "invalid query: invalid expression: invalid ExecutionStatus value 'Bogus'"),
    ("ExecutionDuration > 'xyz'", "invalid query: invalid expression: invalid duration value for search "
                                  "attribute ExecutionDuration: xyz"),
    ("WorkflowId LIKE 'a%'", "invalid query: operation is not supported: operator 'LIKE' not supported for "
                             "Keyword type search attribute 'WorkflowId'"),
    ("VisText > 'a'", "invalid query: operation is not supported: operator '>' not supported for Text type "
                      "search attribute 'VisText'"),
    ("VisKeywordList BETWEEN 'a' AND 'b'", "invalid query: invalid expression: cannot do range condition on "
                                           "search attribute 'VisKeywordList' of type KeywordList"),
    ("VisKeyword = a", "invalid query: operation is not supported: column name on the right side of comparison "
                       "expression (did you forget to quote \"a\"?)"),
    ("VisBool = 'true'", "invalid query: invalid expression: invalid value type for search attribute VisBool of "
                         "type Bool: \"true\" (type: string)"),
    ("WorkflowId = 'a' ORDER BY StartTime", "invalid query: operation is not supported: 'ORDER BY' clause"),
    ("WorkflowId = 'a' LIMIT 5", "invalid query: operation is not supported: 'LIMIT' clause"),
    ("workflowid = 'a'", "invalid query: invalid search attribute: workflowid"),
]


async def test_invalid_queries_are_invalid_argument(client):
    await register_vis_attributes(client)
    failures = []
    for query, message in INVALID:
        try:
            await rate_limited(lambda: client.workflow_service.list_workflow_executions(
                ListWorkflowExecutionsRequest(namespace="default", query=query)))
            failures.append(f"{query}: accepted")
        except RPCError as e:
            if e.status != RPCStatusCode.INVALID_ARGUMENT or e.message != message:
                failures.append(f"{query}: {e.status.name} {e.message!r}, want {message!r}")
    with pytest.raises(RPCError) as e:
        await count(client, "WorkflowType = 'x' GROUP BY WorkflowType")
    assert e.value.status == RPCStatusCode.INVALID_ARGUMENT
    assert e.value.message == ("invalid query: operation is not supported: 'GROUP BY' clause is not supported "
                               "for search attribute WorkflowType")
    assert not failures, "\n".join(failures)


async def test_pages_continue_where_they_ended(client, task_queue):
    handles = []
    for i in range(25):
        handles.append(await client.start_workflow("VisNoWorker", id=new_id(f"page{i:02}"), task_queue=task_queue))
    query = f"TaskQueue = '{task_queue}'"
    await wait_listed(client, query, 25)
    service = client.workflow_service
    seen, token, pages = [], b"", 0
    while True:
        page = await rate_limited(lambda: service.list_workflow_executions(ListWorkflowExecutionsRequest(
            namespace="default", query=query, page_size=10, next_page_token=token)))
        seen += [e.execution.workflow_id for e in page.executions]
        pages += 1
        if pages == 1:
            # Rows added between pages (newer: they sort before the token) change nothing after it.
            for i in range(3):
                await client.start_workflow("VisNoWorker", id=new_id(f"late{i}"), task_queue=task_queue)
        token = page.next_page_token
        if not token:
            break
    assert len(seen) == len(set(seen)) == 25, seen
    assert seen == [h.id for h in reversed(handles)]
    assert pages == 3
    await wait_listed(client, query, 28)


async def test_upserts_are_checked_and_listed(client, task_queue):
    await register_vis_attributes(client)
    async with Worker(client, task_queue=task_queue, workflows=[wf.VisUpsertWorkflow]):
        value = new_id("upserted")
        good = await client.start_workflow(wf.VisUpsertWorkflow.run, args=[value, False], id=new_id("good"),
                                           task_queue=task_queue)
        await wait_listed(client, f"VisKeyword = '{value}'", 1)
        bad = await client.start_workflow(wf.VisUpsertWorkflow.run, args=["x", True], id=new_id("bad"),
                                          task_queue=task_queue)

        async def failed_task():
            async for event in bad.fetch_history_events():
                if event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED:
                    return event.workflow_task_failed_event_attributes
            return None
        failure = await eventually(failed_task, what="a failed workflow task")
        assert failure.cause == WorkflowTaskFailedCause.WORKFLOW_TASK_FAILED_CAUSE_BAD_SEARCH_ATTRIBUTES
        assert "VisNeverRegistered" in failure.failure.message, failure.failure.message
        await good.signal(wf.VisUpsertWorkflow.finish)
        assert await good.result() == value
        await bad.terminate("bad search attributes")


async def test_start_refuses_bad_search_attribute_values(client, task_queue):
    await register_vis_attributes(client)
    cases = [
        (attrs((SearchAttributeKey.for_keyword("VisNeverRegistered"), "x")),
         "Namespace default has no mapping defined for search attribute VisNeverRegistered"),
        (attrs((SearchAttributeKey.for_keyword("VisInt"), "x")),
         "invalid value for search attribute VisInt of type Int: x"),
        (attrs((SearchAttributeKey.for_int("VisBool"), 3)),
         "invalid value for search attribute VisBool of type Bool: 3"),
        (attrs((SearchAttributeKey.for_keyword("VisKeyword"), "x" * 3000)),
         "search attribute VisKeyword value size 3002 exceeds size limit 2048"),
    ]
    for sa, message in cases:
        with pytest.raises(RPCError) as e:
            await client.start_workflow("VisNoWorker", id=new_id("refused"), task_queue=task_queue,
                                        search_attributes=sa)
        assert (e.value.status, e.value.message) == (RPCStatusCode.INVALID_ARGUMENT, message)
    with pytest.raises(RPCError) as e:
        await client.start_workflow("VisNoWorker", id=new_id("refused"), task_queue=task_queue,
                                    start_signal="go", search_attributes=cases[0][0])
    assert (e.value.status, e.value.message) == (RPCStatusCode.INVALID_ARGUMENT, cases[0][1])


async def new_namespace(client: Client) -> str:
    name = new_id("visns")
    await client.workflow_service.register_namespace(RegisterNamespaceRequest(
        namespace=name, workflow_execution_retention_period=timedelta(days=1)))

    async def ready():
        await client.workflow_service.describe_namespace(DescribeNamespaceRequest(namespace=name))
        await client.operator_service.list_search_attributes(ListSearchAttributesRequest(namespace=name))
        return True
    await eventually(ready, what="namespace usable")
    return name


async def test_search_attribute_registry_limits_and_errors(client):
    ns = await new_namespace(client)
    operator = client.operator_service

    async def add(attributes):
        await operator.add_search_attributes(AddSearchAttributesRequest(namespace=ns, search_attributes=attributes))

    keyword = IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD
    await add({f"Kw{i}": keyword for i in range(10)})
    with pytest.raises(RPCError) as e:
        await add({"Kw10": keyword})
    assert e.value.status == RPCStatusCode.INVALID_ARGUMENT
    assert e.value.message == ("Unable to create search attributes: cannot have more than 10 search attribute of "
                               "type Keyword.")
    await add({f"Int{i}": IndexedValueType.INDEXED_VALUE_TYPE_INT for i in range(3)})
    with pytest.raises(RPCError) as e:
        await add({"Int3": IndexedValueType.INDEXED_VALUE_TYPE_INT})
    assert e.value.message == ("Unable to create search attributes: cannot have more than 3 search attribute of "
                               "type Int.")
    for attributes, message in [({"WorkflowId": keyword}, "Search attribute WorkflowId is reserved by system."),
                                ({"Zed": 99}, "Unknown search attribute type: 99."),
                                ({}, "SearchAttributes are not set on request.")]:
        with pytest.raises(RPCError) as e:
            await add(attributes)
        assert (e.value.status, e.value.message) == (RPCStatusCode.INVALID_ARGUMENT, message)
    with pytest.raises(RPCError) as e:
        await operator.remove_search_attributes(RemoveSearchAttributesRequest(namespace=ns,
                                                                              search_attributes=["WorkflowId"]))
    assert e.value.message == "Unable to remove non-custom search attributes: WorkflowId."
    with pytest.raises(RPCError) as e:
        await operator.add_search_attributes(AddSearchAttributesRequest(namespace=new_id("missing"),
                                                                        search_attributes={"A": keyword}))
    assert e.value.status == RPCStatusCode.NOT_FOUND
    # Removing frees a slot; the registry lists what is left, per namespace.
    await operator.remove_search_attributes(RemoveSearchAttributesRequest(namespace=ns, search_attributes=["Kw0"]))

    async def removed():
        listed = await operator.list_search_attributes(ListSearchAttributesRequest(namespace=ns))
        return "Kw0" not in listed.custom_attributes and listed
    listed = await eventually(removed, what="Kw0 removed")
    assert listed.custom_attributes["Kw1"] == keyword
    assert listed.system_attributes["WorkflowId"] == keyword
    assert listed.system_attributes["StartTime"] == IndexedValueType.INDEXED_VALUE_TYPE_DATETIME
    await add({"Kw10": keyword})
    default = await operator.list_search_attributes(ListSearchAttributesRequest(namespace="default"))
    assert "Kw10" not in default.custom_attributes


async def test_search_attributes_survive_a_restart(tmp_path, server_factory):
    srv = server_factory(str(tmp_path / "data"))
    client = await Client.connect(srv.address)
    await register_vis_attributes(client)
    handle = await client.start_workflow("VisNoWorker", id=new_id("durable"), task_queue=new_id("tq"),
                                         search_attributes=attrs((KW, "kept"), (INT, 7)))
    await wait_listed(client, f"VisKeyword = 'kept' AND VisInt = 7", 1)
    srv.stop()
    srv.start()
    client = await Client.connect(srv.address)
    listed = await client.operator_service.list_search_attributes(ListSearchAttributesRequest(namespace="default"))
    assert {k: listed.custom_attributes.get(k) for k in VIS_ATTRIBUTES} == VIS_ATTRIBUTES
    # The flag's attributes are still there too, and queries by custom attributes still work.
    assert listed.custom_attributes["OrderRegion"] == IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD
    assert await wait_listed(client, "VisKeyword = 'kept' AND VisInt = 7", 1) == [handle.id]


async def test_cli_list_count_and_search_attribute_commands(client, server_address, task_queue):
    name = "VisCliKeyword"
    await cli(server_address, "operator", "search-attribute", "create", "--name", name, "--type", "Keyword")
    listed = await cli_json(server_address, "operator", "search-attribute", "list")
    assert name in str(listed)
    for i in range(3):
        handle = await client.start_workflow("VisNoWorker", id=new_id(f"cli{i}"), task_queue=task_queue)
    await handle.terminate("done")
    query = f"TaskQueue = '{task_queue}'"
    await wait_listed(client, f"{query} AND ExecutionStatus = 'Terminated'", 1)
    rows = await cli_json(server_address, "workflow", "list", "--query", f"{query} AND ExecutionStatus = 'Running'")
    assert len(rows) == 2, rows
    counted = await cli_json(server_address, "workflow", "count", "--query", f"{query} GROUP BY ExecutionStatus")
    assert int(counted["count"]) == 3
    groups = sorted((g["groupValues"][0], int(g["count"])) for g in counted["groups"])
    assert groups == [("Running", 2), ("Terminated", 1)], counted
    bad = await cli(server_address, "workflow", "list", "--query", "Nope = 'x'", check=False)
    assert bad.returncode != 0 and "invalid search attribute: Nope" in bad.stderr
    await cli(server_address, "operator", "search-attribute", "remove", "--name", name, "--yes")

    async def gone():
        listed = await cli_json(server_address, "operator", "search-attribute", "list")
        return name not in str(listed)
    await eventually(gone, what="search attribute removed")


async def test_time_ranges_list_and_count_exactly(client, server_address):
    """StartTime and CloseTime bounds, alone (a count then reads only the index: both times are
    in its keys), with a status, and combined, in a namespace of their own so every run counts."""
    ns = await new_namespace(client)
    c = await Client.connect(server_address, namespace=ns)
    prefix = new_id("range")
    handles = []
    for i in range(6):
        handles.append(await c.start_workflow("VisNoWorker", id=f"{prefix}-{i}", task_queue=prefix))
        await asyncio.sleep(0.3)
    for i in (1, 3, 4):  # closed in this order, apart in time
        await handles[i].terminate("done")
        await asyncio.sleep(0.3)
    await wait_listed(c, "ExecutionStatus = 'Terminated'", 3)
    starts, closes = {}, {}
    for i, h in enumerate(handles):
        d = await h.describe()
        starts[i] = d.start_time
        if d.close_time is not None:
            closes[i] = d.close_time
    def at(t: datetime) -> str:
        return t.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    # Bounds halfway between neighbouring events: no equality at the boundary to depend on.
    mid_start = at(starts[2] + (starts[3] - starts[2]) / 2)
    mid_close = at(closes[3] + (closes[4] - closes[3]) / 2)
    early = at(starts[0] - timedelta(seconds=1))
    late = at(closes[4] + timedelta(seconds=1))
    cases = [
        (f"StartTime > '{mid_start}'", {3, 4, 5}),
        (f"StartTime >= '{mid_start}'", {3, 4, 5}),
        (f"StartTime < '{mid_start}'", {0, 1, 2}),
        (f"StartTime <= '{early}'", set()),
        (f"StartTime > '{early}'", {0, 1, 2, 3, 4, 5}),
        (f"StartTime BETWEEN '{early}' AND '{mid_start}'", {0, 1, 2}),
        (f"CloseTime > '{mid_close}'", {4}),
        (f"CloseTime < '{mid_close}'", {1, 3}),
        (f"CloseTime BETWEEN '{early}' AND '{late}'", {1, 3, 4}),
        (f"CloseTime > '{late}'", set()),
        (f"ExecutionStatus = 'Running' AND StartTime > '{mid_start}'", {5}),
        (f"ExecutionStatus = 'Terminated' AND StartTime < '{mid_start}'", {1}),
        (f"StartTime > '{mid_start}' AND CloseTime < '{mid_close}'", {3}),
        (f"StartTime < '{mid_start}' AND ExecutionStatus != 'Running'", {1}),
        (f"WorkflowType = 'VisNoWorker' AND CloseTime >= '{early}'", {1, 3, 4}),
    ]
    failures = []
    for query, expected in cases:
        want = {f"{prefix}-{i}" for i in expected}
        got = await ids(c, query)
        if set(got) != want or len(got) != len(want):
            failures.append(f"{query}: got {sorted(got)}, want {sorted(want)}")
        counted = await count(c, query)
        if counted.count != len(want):
            failures.append(f"count {query}: {counted.count} != {len(want)}")
    # Paged one run at a time, a range still lists every run once, in list order.
    paged = await ids(c, f"StartTime > '{early}'", page_size=1)
    assert paged == await ids(c, f"StartTime > '{early}'"), paged
    assert not failures, "\n".join(failures)
