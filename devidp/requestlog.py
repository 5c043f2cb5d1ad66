"""The request log: every protocol request the emulator received, for tests to assert on.

Control requests (`/_devidp/...`) are not logged, so driving the emulator does not disturb
counts. Entries are immutable snapshots; the response status is filled in once it is known. The
log keeps the newest `MAX_ENTRIES`, so a long-running `msal-gateway devidp` does not grow forever.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Final

from multidict import CIMultiDict, CIMultiDictProxy

MAX_ENTRIES: Final = 10_000


@dataclass(frozen=True, slots=True)
class LoggedRequest:
    """One request. `headers` is case-insensitive; `status` is None while it is being handled."""

    time: float
    method: str
    path: str
    endpoint: str | None
    query: Mapping[str, str]
    form: Mapping[str, str]
    headers: CIMultiDictProxy[str]
    status: int | None = None

    @property
    def grant_type(self) -> str | None:
        return self.form.get("grant_type")

    def to_json(self) -> dict[str, object]:
        return {
            "time": self.time,
            "method": self.method,
            "path": self.path,
            "endpoint": self.endpoint,
            "query": dict(self.query),
            "form": dict(self.form),
            "headers": dict(self.headers.items()),
            "status": self.status,
        }


def frozen_headers(headers: Mapping[str, str]) -> CIMultiDictProxy[str]:
    return CIMultiDictProxy(CIMultiDict(headers))


class RequestLog:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[int, LoggedRequest] = {}  # insertion order is arrival order
        self._numbers = itertools.count()

    def append(self, entry: LoggedRequest) -> int:
        """Add an entry; the returned number is for `finish`."""
        with self._lock:
            number = next(self._numbers)
            self._entries[number] = entry
            if len(self._entries) > MAX_ENTRIES:
                del self._entries[next(iter(self._entries))]
            return number

    def finish(self, number: int, status: int) -> None:
        with self._lock:
            entry = self._entries.get(number)  # gone if the log was cleared meanwhile
            if entry is not None:
                self._entries[number] = replace(entry, status=status)

    def entries(
        self, endpoint: str | None = None, grant_type: str | None = None
    ) -> list[LoggedRequest]:
        with self._lock:
            snapshot = list(self._entries.values())
        return [
            e
            for e in snapshot
            if (endpoint is None or e.endpoint == endpoint)
            and (grant_type is None or e.grant_type == grant_type)
        ]

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
