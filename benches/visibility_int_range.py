"""A selective Int-range filter on a custom search attribute, end to end through the server:
fills the `default` namespace with N runs (no worker; each with an Int `OrderAmount`, a
permutation of 0..N) unless they are there, then times CountWorkflowExecutions and the first
page (100) of ListWorkflowExecutions, median and max of REPS calls, for the range as a top-level
term (Chronicle reads the Int slice of its value index) and for the same range under an `OR`
with a term no run matches (no index fits an OR: every run is read and evaluated, which is what
any custom-attribute filter did before the value index).

    python benches/visibility_int_range.py ADDRESS [N] [REPS]   (defaults 100000, 10)

Start the server with `--search-attribute OrderAmount=Int`."""

import asyncio
import statistics
import sys
import time

from temporalio.api.workflowservice.v1 import ListWorkflowExecutionsRequest
from temporalio.client import Client
from temporalio.common import SearchAttributeKey, SearchAttributePair, TypedSearchAttributes

AMOUNT = SearchAttributeKey.for_int("OrderAmount")


async def fill(client: Client, n: int) -> None:
    have = (await client.count_workflows("WorkflowType = 'VisIntRange'")).count
    if have >= n:
        return
    started = time.monotonic()
    next_i = have
    lock = asyncio.Lock()

    async def starter():
        nonlocal next_i
        while True:
            async with lock:
                if next_i >= n:
                    return
                i = next_i
                next_i += 1
            await client.start_workflow(
                "VisIntRange", id=f"vir-{i:08d}", task_queue="vis-int-range",
                search_attributes=TypedSearchAttributes([SearchAttributePair(AMOUNT, (i * 7919) % n)]))
            if i % 10000 == 0:
                print(f"  {i} started ({i / (time.monotonic() - started):.0f}/s)", flush=True)

    await asyncio.gather(*(starter() for _ in range(64)))
    print(f"filled {n - have} runs in {time.monotonic() - started:.0f} s", flush=True)


async def main():
    address = sys.argv[1]
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 100000
    reps = int(sys.argv[3]) if len(sys.argv) > 3 else 10
    client = await Client.connect(address)
    await fill(client, n)
    lo = n // 3
    hi = lo + max(n // 1000, 1) - 1
    indexed = f"OrderAmount BETWEEN {lo} AND {hi}"
    scanned = f"OrderAmount BETWEEN {lo} AND {hi} OR OrderAmount < -1"
    print(f"{'read':<48} {'median ms':>10} {'max ms':>9}  result")
    for label, query in (("indexed", indexed), ("every run (before)", scanned)):
        for kind in ("count", "page"):
            times, result = [], None
            for _ in range(reps):
                t = time.perf_counter()
                if kind == "count":
                    result = (await client.count_workflows(query)).count
                else:
                    page = await client.workflow_service.list_workflow_executions(
                        ListWorkflowExecutionsRequest(namespace="default", query=query, page_size=100))
                    result = f"{len(page.executions)} rows"
                times.append((time.perf_counter() - t) * 1000)
            print(f"{kind + ', ' + label:<48} {statistics.median(times):>10.1f} {max(times):>9.1f}  {result}",
                  flush=True)


asyncio.run(main())
