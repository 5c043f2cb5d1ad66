"""Child processes of the benchmark harness: finding their binaries, starting each in a process
group of its own, waiting until it listens, reading the CPU time of its whole process tree, and
ending every one of them however the harness exits.

Each server runs in a new session (`start_new_session`), so one `killpg` reaches the master and
every worker it forked, and a Ctrl-C in the terminal reaches only the harness, which then tears
the servers down in order instead of leaving them half-stopped.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Final

from support import binaries
from support.ports import accepts

CLOCK_TICKS: Final = os.sysconf("SC_CLK_TCK")
BOOTSTRAP_HINT: Final = "run bench/bootstrap.sh"


class MissingTool(RuntimeError):
    """A binary or module the harness needs is not installed; the message is one line."""


def find_binary(name: str, package: str, sbin: str | None = None) -> str:
    """The path of `name` (see support.binaries.find_binary), or MissingTool with the hint."""
    path = binaries.find_binary(name, sbin)
    if path is None:
        raise MissingTool(f"{name} not found (Debian package {package}): {BOOTSTRAP_HINT}")
    return path


def wait_until(
    ready: Callable[[], bool], process: ManagedProcess, what: str, seconds: float = 20.0
) -> None:
    """Until `ready()` holds; fails early if the process dies, and names `what` on a timeout."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.exited:
            raise RuntimeError(f"{process.name} exited early:\n{process.log_tail()}")
        if ready():
            return
        time.sleep(0.05)
    raise RuntimeError(f"{process.name} {what}:\n{process.log_tail()}")


def wait_for_port(port: int, process: ManagedProcess, seconds: float = 20.0) -> None:
    """Until something accepts on 127.0.0.1:`port`; fails early if the process dies."""
    wait_until(lambda: accepts(port), process, f"did not listen on port {port}", seconds)


def _children_index() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        stat = _read_stat(int(entry))
        if stat is not None:
            children.setdefault(int(stat[1]), []).append(int(entry))
    return children


def _read_stat(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (which may hold spaces), so that
    index 0 is the state, 1 the parent pid, 11..14 utime, stime, cutime, cstime."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
            text = stat.read()
    except OSError:
        return None
    return text[text.rfind(")") + 2 :].split()


def children_of(pid: int) -> list[int]:
    """The live child processes of `pid` (a supervisor's workers), in pid order."""
    return sorted(_children_index().get(pid, []))


def _tree_stats(pid: int) -> list[tuple[int, list[str]]]:
    """`pid` and its live descendants, each with its stat fields (see _read_stat)."""
    children = _children_index()
    found, pending = [], [pid]
    while pending:
        current = pending.pop()
        stat = _read_stat(current)
        if stat is not None:
            found.append((current, stat))
            pending.extend(children.get(current, []))
    return found


def tree_pids(pid: int) -> list[int]:
    """`pid` and its live descendants (a server's workers)."""
    return [member for member, _ in _tree_stats(pid)]


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU of `pid` and all its live descendants, threads included, plus what
    their already reaped children used (cutime/cstime), so workers that a server replaced
    during a run still count."""
    ticks = sum(int(v) for _, stat in _tree_stats(pid) for v in stat[11:15])
    return ticks / CLOCK_TICKS


class ManagedProcess:
    """One server process (and whatever it forks) with its output in a log file."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.log_path = log_path
        with open(log_path, "ab") as log:
            # The argv is built by the harness from fixed binaries and generated paths.
            self.process = subprocess.Popen(  # noqa: S603
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=dict(env) if env is not None else None,
                cwd=cwd,
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def exited(self) -> bool:
        return self.process.poll() is not None

    def cpu_seconds(self) -> float:
        return tree_cpu_seconds(self.pid)

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM to the whole group, then SIGKILL to whatever is left of it."""
        for signum, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(self.pid, signum)
            except ProcessLookupError:
                break
            try:
                self.process.wait(wait)
            except subprocess.TimeoutExpired:
                continue
            # The leader is gone; workers that outlived it still belong to the group.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGKILL)
            break
        if self.process.poll() is None:
            self.process.wait(5)


class ProcessGroup:
    """Every server the harness started, stopped in reverse order of starting."""

    def __init__(self) -> None:
        self._processes: list[ManagedProcess] = []

    def add(self, process: ManagedProcess) -> ManagedProcess:
        self._processes.append(process)
        return process

    def stop_all(self) -> None:
        while self._processes:
            process = self._processes.pop()
            try:
                process.stop()
            except Exception as exc:  # keep stopping the others whatever one of them does
                print(f"warning: stopping {process.name} failed: {exc}")
