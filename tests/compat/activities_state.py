"""Process-local journal of activity executions: ``record(key, value)`` with a monotonic timestamp.

Tests that run their worker in-process read it back to assert on what ran, in which order and when."""

import threading
import time
from collections import defaultdict
from typing import Any, Dict, List, Tuple

_lock = threading.Lock()
_calls: Dict[str, List[Tuple[float, Any]]] = defaultdict(list)


def record(key: str, value: Any) -> None:
    with _lock:
        _calls[key].append((time.monotonic(), value))


def values(key: str) -> List[Any]:
    with _lock:
        return [v for _, v in _calls[key]]


def times(key: str) -> List[float]:
    with _lock:
        return [t for t, _ in _calls[key]]
