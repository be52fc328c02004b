"""Process-local records of activity calls, so tests can assert what ran and in which order."""

import time
from collections import defaultdict

CALLS = defaultdict(list)


def record(key, value):
    CALLS[key].append((time.monotonic(), value))


def values(key):
    return [v for _, v in CALLS[key]]


def times(key):
    return [t for t, _ in CALLS[key]]
