"""The one thread that writes log lines to stderr, in batches, with a bound on what waits.

Lines are formatted by whoever logs them and handed over as text. The writer thread wakes every
FLUSH_SECONDS (at once for an ordinary log line, or when much access log is waiting) and writes
everything waiting in one `write` and one `flush`: one system call for a batch of access lines
instead of one per line.

Writing never blocks the event loop: when stderr is read slowly or not at all (a stuck log
collector, a full pipe), a synchronous write would freeze every request of the process, as it did
in a soak test after 64 KiB of unread access log. While the thread is stuck in a write, lines wait
in memory up to MAX_WAITING_CHARS characters; past that they are dropped and counted, and a
warning says how many as soon as the thread can write again. So a stuck stderr holds at most the
batch being written plus MAX_WAITING_CHARS of lines (a few MiB), whatever the traffic.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from typing import Final, TextIO

FLUSH_SECONDS: Final = 0.05
# Characters of waiting lines (about 15,000 access lines) before lines are dropped.
MAX_WAITING_CHARS: Final = 4 * 1024 * 1024
# Waiting characters that wake the thread before its next flush (a burst of traffic).
WAKE_CHARS: Final = 64 * 1024
STOP_SECONDS: Final = 2.0  # at exit, for the last lines; a stuck stderr does not hold the exit


class LineWriter:
    """Writes whole lines (each ending in a newline) to `stream` from a thread of its own.
    `dropped_notice(count)` makes the line that reports dropped lines, in the log's format."""

    def __init__(
        self,
        stream: TextIO,
        dropped_notice: Callable[[int], str],
        *,
        flush_seconds: float = FLUSH_SECONDS,
        max_waiting_chars: int = MAX_WAITING_CHARS,
    ) -> None:
        self._stream = stream
        self._dropped_notice = dropped_notice
        self._flush_seconds = flush_seconds
        self._max_waiting = max_waiting_chars
        self._lock = threading.Lock()
        self._lines: list[str] = []
        self._waiting = 0  # characters in _lines
        self.dropped = 0  # lines refused since the last write
        self._wake = threading.Event()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="log-writer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def put(self, line: str) -> None:
        """Queue one line for the next batch (access lines: written within FLUSH_SECONDS)."""
        with self._lock:
            waiting = self._waiting + len(line)
            if waiting > self._max_waiting:
                self.dropped += 1
                return
            self._lines.append(line)
            self._waiting = waiting
        if waiting > WAKE_CHARS and not self._wake.is_set():
            self._wake.set()

    def put_now(self, line: str) -> None:
        """Queue one line and have it written at once (ordinary log lines, which are rare and
        which people and probes wait for)."""
        self.put(line)
        self._wake.set()

    def stop(self, seconds: float = STOP_SECONDS) -> None:
        """Write what waits, then end the thread; gives up after `seconds` (stderr stuck)."""
        self._stopping = True
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(seconds)

    def _run(self) -> None:
        while True:
            self._wake.wait(self._flush_seconds)
            self._wake.clear()
            stopping = self._stopping  # read first: lines put before stop() are in this batch
            self.write_waiting()
            if stopping:
                return

    def write_waiting(self) -> None:
        """One write of every waiting line (the thread's step; also for tests)."""
        with self._lock:
            if not self._lines and not self.dropped:
                return
            batch, dropped = self._lines, self.dropped
            self._lines, self._waiting, self.dropped = [], 0, 0
        if dropped:
            batch.append(self._dropped_notice(dropped))
        # A closed or broken stderr leaves nowhere to report to: the lines are lost.
        with contextlib.suppress(OSError, ValueError):
            self._stream.write("".join(batch))
            self._stream.flush()
