"""Retryable writes: a write retried under the same session and txnNumber is not
applied twice, as on a real server, which answers a retry with the first result."""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

RetryKey = tuple[bytes, int]

# The real server keeps one result per session; sessions are many and short-lived
# in tests, so a bounded table of recent statements is plenty.
REMEMBERED_WRITES = 10_000


def retry_key(body: Mapping[str, Any]) -> RetryKey | None:
    """The (session id, txnNumber) a retryable write is identified by, or None."""
    lsid = body.get("lsid")
    number = body.get("txnNumber")
    if not isinstance(lsid, Mapping) or number is None:
        return None
    session = lsid.get("id")
    if not isinstance(session, bytes):
        return None
    return bytes(session), int(number)


class RetriedWrites:
    """The results of recent retryable writes, by session and txnNumber."""

    def __init__(self, capacity: int = REMEMBERED_WRITES) -> None:
        self._results: OrderedDict[RetryKey, dict[str, Any]] = OrderedDict()
        self._capacity = capacity

    def result(self, key: RetryKey) -> dict[str, Any] | None:
        """The first attempt's reply (a copy), when this write already ran."""
        found = self._results.get(key)
        return None if found is None else copy.deepcopy(found)

    def remember(self, key: RetryKey, reply: Mapping[str, Any]) -> None:
        self._results[key] = copy.deepcopy(dict(reply))
        self._results.move_to_end(key)
        while len(self._results) > self._capacity:
            self._results.popitem(last=False)
