"""Equality, IN and range filters on Int, Double, Datetime and Bool custom search attributes (and
keyword ranges and prefixes), alone, together and with a status, listed page by page and
counted: Chronicle answers them from its value index, so every answer is compared with the
filter evaluated on the runs' values here. In a namespace of its own, so every run counts."""

from datetime import datetime, timedelta, timezone

from temporalio.client import Client

from conftest import new_id
from test_visibility import (BOOL, DOUBLE, INT, KW, WHEN, attrs, count, ids, new_namespace,
                             register_vis_attributes, wait_listed)

T0 = datetime(2024, 3, 1, tzinfo=timezone.utc)

# (int, double, bool, datetime offset in hours, keyword); None: the run does not set it.
VALUES = [
    (-3, -1.5, True, 0, "order-001"),
    (0, 0.0, False, 6, "order-002"),
    (1, 0.5, True, 12, "order-010"),
    (2, 1.5, False, 18, "invoice-1"),
    (2, 2.5, True, 24, "invoice-2"),
    (5, 2.5, None, 30, "order-100"),
    (10, 3.25, False, None, None),
    (40, None, True, 48, "refund"),
    (None, 10.0, None, 54, "order-011"),
    (7, -0.25, False, 60, "invoice-10"),
    (-1, 100.0, True, None, "order"),
    (None, None, None, None, None),
]
TERMINATED = {1, 4, 7, 9}


def at(hours: float) -> str:
    return (T0 + timedelta(hours=hours)).strftime("%Y-%m-%dT%H:%M:%SZ")


def when(i):
    h = VALUES[i][3]
    return None if h is None else T0 + timedelta(hours=h)


def cases():
    """(query, predicate on the run's index): null values never match a comparison."""
    i_ = lambda i: VALUES[i][0]
    d_ = lambda i: VALUES[i][1]
    b_ = lambda i: VALUES[i][2]
    k_ = lambda i: VALUES[i][4]
    has = lambda v: v is not None
    return [
        ("VisInt = 2", lambda i: i_(i) == 2),
        ("VisInt > 2", lambda i: has(i_(i)) and i_(i) > 2),
        ("VisInt >= 2", lambda i: has(i_(i)) and i_(i) >= 2),
        ("VisInt < 0", lambda i: has(i_(i)) and i_(i) < 0),
        ("VisInt <= 1", lambda i: has(i_(i)) and i_(i) <= 1),
        ("VisInt BETWEEN 1 AND 7", lambda i: has(i_(i)) and 1 <= i_(i) <= 7),
        ("VisInt IN (0, 5, 40, 99)", lambda i: i_(i) in (0, 5, 40, 99)),
        ("VisInt > 1 AND VisInt < 10", lambda i: has(i_(i)) and 1 < i_(i) < 10),
        ("VisInt > 100", lambda i: False),
        ("VisDouble = 2.5", lambda i: d_(i) == 2.5),
        ("VisDouble > 0.5", lambda i: has(d_(i)) and d_(i) > 0.5),
        ("VisDouble <= 0", lambda i: has(d_(i)) and d_(i) <= 0),
        ("VisDouble BETWEEN -1 AND 3", lambda i: has(d_(i)) and -1 <= d_(i) <= 3),
        ("VisDouble IN (0.5, 10.0)", lambda i: d_(i) in (0.5, 10.0)),
        ("VisDouble < -1", lambda i: has(d_(i)) and d_(i) < -1),
        ("VisBool = true", lambda i: b_(i) is True),
        ("VisBool = false", lambda i: b_(i) is False),
        (f"VisDatetime > '{at(20)}'", lambda i: has(when(i)) and when(i) > T0 + timedelta(hours=20)),
        (f"VisDatetime >= '{at(24)}'", lambda i: has(when(i)) and when(i) >= T0 + timedelta(hours=24)),
        (f"VisDatetime < '{at(12)}'", lambda i: has(when(i)) and when(i) < T0 + timedelta(hours=12)),
        (f"VisDatetime BETWEEN '{at(5)}' AND '{at(31)}'",
         lambda i: has(when(i)) and T0 + timedelta(hours=5) <= when(i) <= T0 + timedelta(hours=31)),
        ("VisKeyword STARTS_WITH 'order-0'", lambda i: has(k_(i)) and k_(i).startswith("order-0")),
        ("VisKeyword STARTS_WITH 'invoice'", lambda i: has(k_(i)) and k_(i).startswith("invoice")),
        ("VisKeyword >= 'order-010'", lambda i: has(k_(i)) and k_(i) >= "order-010"),
        ("VisKeyword BETWEEN 'invoice-10' AND 'order-002'",
         lambda i: has(k_(i)) and "invoice-10" <= k_(i) <= "order-002"),
        ("ExecutionStatus = 'Terminated' AND VisInt > 0", lambda i: i in TERMINATED and has(i_(i)) and i_(i) > 0),
        ("ExecutionStatus = 'Running' AND VisDouble >= 1.5",
         lambda i: i not in TERMINATED and has(d_(i)) and d_(i) >= 1.5),
        ("VisInt >= 0 AND VisBool = true", lambda i: has(i_(i)) and i_(i) >= 0 and b_(i) is True),
        ("VisInt < 5 AND VisDouble > 0", lambda i: has(i_(i)) and i_(i) < 5 and has(d_(i)) and d_(i) > 0),
        (f"VisDatetime > '{at(10)}' AND VisBool = false",
         lambda i: has(when(i)) and when(i) > T0 + timedelta(hours=10) and b_(i) is False),
        ("VisInt > 1 OR VisBool = true", lambda i: (has(i_(i)) and i_(i) > 1) or b_(i) is True),
    ]


async def test_custom_attribute_ranges_and_equality_list_and_count_exactly(client, server_address):
    ns = await new_namespace(client)
    await register_vis_attributes(client, ns)
    c = await Client.connect(server_address, namespace=ns)
    prefix = new_id("vidx")
    handles = []
    for i, (n, d, b, h, k) in enumerate(VALUES):
        pairs = [(key, v) for key, v in ((INT, n), (DOUBLE, d), (BOOL, b), (KW, k)) if v is not None]
        if h is not None:
            pairs.append((WHEN, T0 + timedelta(hours=h)))
        handles.append(await c.start_workflow("VisNoWorker", id=f"{prefix}-{i}", task_queue=prefix,
                                              search_attributes=attrs(*pairs)))
    for i in sorted(TERMINATED):
        await handles[i].terminate("done")
    await wait_listed(c, "ExecutionStatus = 'Terminated'", len(TERMINATED))
    await wait_listed(c, "VisKeyword IS NOT NULL OR VisInt IS NOT NULL OR VisDouble IS NOT NULL", len(VALUES) - 1)
    everything = await ids(c, "")
    failures = []
    for query, holds in cases():
        want = {f"{prefix}-{i}" for i in range(len(VALUES)) if holds(i)}
        got = await ids(c, query)
        if set(got) != want or len(got) != len(want):
            failures.append(f"{query}: got {sorted(got)}, want {sorted(want)}")
        # In list order, and page after page through the page token.
        if got != [w for w in everything if w in want]:
            failures.append(f"{query}: not in list order: {got}")
        paged = await ids(c, query, page_size=2)
        if paged != got:
            failures.append(f"{query} in pages of 2: {paged} != {got}")
        counted = await count(c, query)
        if counted.count != len(want):
            failures.append(f"count {query}: {counted.count} != {len(want)}")
    grouped = await count(c, "VisInt >= 0 GROUP BY ExecutionStatus")
    groups = {g.group_values[0]: g.count for g in grouped.groups}
    want_terminated = sum(1 for i in TERMINATED if VALUES[i][0] is not None and VALUES[i][0] >= 0)
    want_running = sum(1 for i, v in enumerate(VALUES) if i not in TERMINATED and v[0] is not None and v[0] >= 0)
    if groups != {"Terminated": want_terminated, "Running": want_running}:
        failures.append(f"groups of VisInt >= 0: {groups}")
    assert not failures, "\n".join(failures)
