"""What Linux's /proc tells about a process: resident and peak memory, open file descriptors and
their limit, CPU time. Memory figures are in KiB, as /proc gives them."""

from __future__ import annotations

import os


def _status_kib(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} for process {pid}")


def rss_kib(pid: int | None = None) -> int:
    """Resident memory now, of `pid` or of this process."""
    return _status_kib(os.getpid() if pid is None else pid, "VmRSS")


def peak_rss_kib(pid: int) -> int:
    """The most resident memory the process has had (the high-water mark)."""
    return _status_kib(pid, "VmHWM")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def soft_fd_limit(pid: int) -> int:
    with open(f"/proc/{pid}/limits", encoding="ascii") as limits:
        line = next(line for line in limits if line.startswith("Max open files"))
    return int(line.split()[3])


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of the process so far (its threads included)."""
    with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
        # The fields after the command name, which may hold spaces and parentheses.
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
