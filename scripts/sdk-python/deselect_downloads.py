"""Pytest plugin for running temporalio/sdk-python's own test suite against a running server.

Tests that start their own server (`WorkflowEnvironment.start_local` or `start_time_skipping`)
would download one from the internet, which this setup neither can nor wants to do: they test
the SDK's test harness rather than the server. They are deselected and counted, so the report
says how many were left out and why.
"""

import inspect

import pytest

_DOWNLOADING_CALLS = ("start_local(", "start_time_skipping(")


def _starts_own_server(item: pytest.Item) -> bool:
    function = getattr(item, "function", None)
    if function is None:
        return False
    try:
        source = inspect.getsource(function)
    except (OSError, TypeError):
        return False
    return any(call in source for call in _DOWNLOADING_CALLS)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    kept, dropped = [], []
    for item in items:
        (dropped if _starts_own_server(item) else kept).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept
