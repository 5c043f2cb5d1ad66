"""Running wrk and reading what it printed: requests per second, latency percentiles, the request
count, and every kind of error it reports.

wrk counts a 3xx as a success. The harness therefore also counts, at the upstream, how many
requests really arrived there (see `nginx.upstream_requests`); that comparison is made by the
caller, which knows whether a scenario should reach the upstream at all.
"""

from __future__ import annotations

import re
import shlex
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from processes import find_binary

THREADS: Final = 2
_UNITS: Final = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION: Final = re.compile(r"^\s*([\d.]+)(us|ms|s|m|h)\s*$")


def wrk_binary() -> str:
    return find_binary("wrk", "wrk")


def wrk_version() -> str:
    # wrk prints its version with the usage text and exits 1.
    result = subprocess.run(  # noqa: S603 - fixed binary
        [wrk_binary(), "-v"], capture_output=True, text=True, check=False
    )
    # "wrk debian/4.1.0-3+b2 [epoll] Copyright (C) 2012 Will Glozer"
    first = (result.stdout or result.stderr).splitlines()
    return first[0].split(" Copyright")[0].removeprefix("wrk ") if first else "unknown"


def seconds(text: str) -> float:
    """A wrk duration such as `812.00us`, `1.20ms` or `2.01s`, in seconds."""
    match = _DURATION.match(text)
    if match is None:
        raise ValueError(f"not a wrk duration: {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


@dataclass(frozen=True)
class WrkResult:
    requests: int
    elapsed: float
    requests_per_second: float
    p50: float
    p99: float
    socket_errors: int
    socket_detail: str
    bad_status: int
    output: str

    @property
    def errors(self) -> int:
        return self.socket_errors + self.bad_status


def parse(output: str) -> WrkResult:
    """The figures of one `wrk --latency` run; raises ValueError when the output has none."""
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", output, re.MULTILINE)
    total = re.search(r"^\s*(\d+) requests in ([\d.]+\w+),", output, re.MULTILINE)
    p50 = re.search(r"^\s*50%\s+(\S+)", output, re.MULTILINE)
    p99 = re.search(r"^\s*99%\s+(\S+)", output, re.MULTILINE)
    if rps is None or total is None or p50 is None or p99 is None:
        raise ValueError(f"unreadable wrk output:\n{output}")
    sockets = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    socket_errors, detail = 0, ""
    if sockets is not None:
        counts = [int(n) for n in sockets.groups()]
        socket_errors = sum(counts)
        names = ("connect", "read", "write", "timeout")
        detail = ", ".join(f"{n} {c}" for n, c in zip(names, counts, strict=True) if c)
    status = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    return WrkResult(
        requests=int(total.group(1)),
        elapsed=seconds(total.group(2)),
        requests_per_second=float(rps.group(1)),
        p50=seconds(p50.group(1)),
        p99=seconds(p99.group(1)),
        socket_errors=socket_errors,
        socket_detail=detail,
        bad_status=int(status.group(1)) if status else 0,
        output=output,
    )


def command(url: str, *, connections: int, duration: int, headers: Mapping[str, str]) -> list[str]:
    argv = [wrk_binary(), f"-t{THREADS}", f"-c{connections}", f"-d{duration}s", "--latency"]
    for name, value in headers.items():
        argv += ["-H", f"{name}: {value}"]
    return [*argv, url]


def printable(argv: list[str], secrets: Mapping[str, str]) -> str:
    """The command as a shell line, with secret values (session cookies) replaced by names."""
    line = shlex.join(["wrk", *argv[1:]])
    for value, name in secrets.items():
        line = line.replace(value, name)
    return line


def run(url: str, *, connections: int, duration: int, headers: Mapping[str, str]) -> WrkResult:
    argv = command(url, connections=connections, duration=duration, headers=headers)
    result = subprocess.run(  # noqa: S603 - fixed binary, generated arguments
        argv, capture_output=True, text=True, timeout=duration + 60, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"wrk failed ({result.returncode}):\n{result.stdout}{result.stderr}")
    return parse(result.stdout)
