"""What one access-log line costs the gateway in CPU (issue 17, part 1), measured in this process:
the exact call aiohttp makes once a response is sent (`AccessLogger.log(request, response,
duration)`) on fresh request objects, with logging configured as `msal-gateway serve` configures
it, writing to /dev/null, and the writer thread's work counted too.

    .venv/bin/python bench/access_log.py [--format json|text] [--requests 20000] [--repeats 5]
    .venv/bin/python bench/access_log.py --instructions     # instruction counts under callgrind

CPU time (time.process_time, every thread of the process) is measured around the calls plus the
final write of what they queued, for N requests, and divided by N; the requests are built before
the clock starts, and a pause every 200 requests lets the writer thread keep up, as gaps in real
traffic do (without them a writer that falls behind drops lines, and dropped lines cost less). With
the access log off aiohttp makes no call at all, so the figure is what the log adds to a request.
Medians of --repeats runs are printed.

--instructions runs the same script twice under `valgrind --tool=callgrind` (which counts
instructions, the same however loaded the machine is): once building the requests and logging
them, once only building them. The difference divided by N is the instructions one line costs;
dividing by the instructions this machine retires per microsecond in this workload (measured
natively) gives a µs-equivalent.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Final

from aiohttp import web
from aiohttp.http import HttpVersion11, RawRequestMessage
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from gateway.telemetry import logs
from gateway.telemetry.metrics import TIMING_KEY, Timing

try:
    from gateway.telemetry.access_log import AccessLogger
except ImportError:  # a checkout from before issue 17, for the "before" figures
    from gateway.telemetry.logs import AccessLogger  # type: ignore[attr-defined,no-redef]

HERE: Final = Path(__file__).resolve()
BATCH: Final = 200  # requests between pauses
PAUSE_SECONDS: Final = 0.005
USER: Final = "0b7e2c1d-4a5f-4e3b-8c9d-1e2f3a4b5c6d.72f988bf-86f1-41af-91ab-2d7cd011db47"
USER_AGENT: Final = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36"
)


class _Protocol:
    """What a request asks its connection about."""

    ssl_context = None
    peername = ("127.0.0.1", 40_000)
    sockname = ("127.0.0.1", 8000)


def fresh_requests(count: int) -> list[tuple[web.BaseRequest, web.StreamResponse]]:
    """`count` distinct requests and their sent responses, as a proxied GET leaves them."""
    pairs = []
    protocol: Any = _Protocol()
    for index in range(count):
        path = f"/reports/{index}?page=2"
        headers = CIMultiDictProxy(
            CIMultiDict(
                {"Host": "app.test", "User-Agent": USER_AGENT, "Accept": "application/json"}
            )
        )
        message = RawRequestMessage(
            "GET", path, HttpVersion11, headers, (), False, None, False, False, URL(path)
        )
        request = web.BaseRequest(message, None, protocol, None, None, None)  # type: ignore[arg-type]
        timing = Timing()
        timing.upstream_sent()
        timing.upstream_answered()
        request[TIMING_KEY] = timing
        response = web.StreamResponse(status=200)
        response.headers["X-Request-Id"] = f"{index:032x}"
        pairs.append((request, response))
    return pairs


def configured_logger(format_name: str) -> AccessLogger:
    """The access logger as `msal-gateway serve` builds it, its lines going to /dev/null."""
    sys.stderr = open(os.devnull, "w", encoding="utf-8")  # noqa: SIM115 (for the whole run)
    logs.configure(format_name)
    logger = AccessLogger(logging.getLogger("gateway.access"), "")
    logs.client_var.set("203.0.113.7")
    logs.user_var.set(USER)
    return logger


def cpu_per_line(format_name: str, count: int) -> float:
    """Seconds of CPU (all threads) per access line, over `count` fresh requests."""
    pairs = fresh_requests(count)
    logger = configured_logger(format_name)
    gc.collect()
    started = time.process_time()
    for index, (request, response) in enumerate(pairs):
        logger.log(request, response, 0.00123)
        if index % BATCH == BATCH - 1:
            # As traffic leaves gaps: the writer keeps up, and no line is dropped (a sleep
            # costs no CPU time).
            time.sleep(PAUSE_SECONDS)
    logs.shutdown()  # the writer thread's last batch is part of the cost
    return (time.process_time() - started) / count


def one_pass(format_name: str, count: int, log: bool) -> None:
    """Build `count` requests and, with `log`, log each (the body of an --instructions run);
    prints the process's CPU time since it started."""
    pairs = fresh_requests(count)
    logger = configured_logger(format_name)
    if log:
        for request, response in pairs:
            logger.log(request, response, 0.00123)
    logs.shutdown()
    print(time.process_time())


def run_self(*arguments: str, valgrind: list[str] | None = None) -> str:
    """This script in a fresh process (each measurement starts from the same state)."""
    argv = [*(valgrind or []), sys.executable, str(HERE), *arguments]
    result = subprocess.run(argv, check=True, capture_output=True, text=True)  # noqa: S603
    return result.stdout


def callgrind_instructions(format_name: str, count: int, log: bool) -> int:
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        raise SystemExit("valgrind is not installed (Debian package valgrind)")
    with tempfile.TemporaryDirectory(prefix="access-log-bench-") as directory:
        out = Path(directory) / "callgrind.out"
        arguments = ["--one-pass", "--format", format_name, "--requests", str(count)]
        run_self(
            *arguments,
            *(["--log"] if log else []),
            valgrind=[valgrind, "--tool=callgrind", f"--callgrind-out-file={out}"],
        )
        match = re.search(r"^summary: (\d+)", out.read_text(), re.MULTILINE)
        assert match is not None, "no summary in the callgrind output"
        return int(match.group(1))


def instructions(format_name: str, count: int) -> None:
    on = callgrind_instructions(format_name, count, log=True)
    off = callgrind_instructions(format_name, count, log=False)
    per_line = (on - off) / count
    # Instructions per µs of this Python workload on this machine: the run without the log,
    # natively, by its CPU time (median of three).
    native = statistics.median(
        float(run_self("--one-pass", "--format", format_name, "--requests", str(count)))
        for _ in range(3)
    )
    per_us = off / (native * 1e6)
    print(f"access log ({format_name}), {count:,} requests under callgrind:")
    print(f"  instructions with the log {on:,}, without {off:,}")
    print(
        f"  per request: {per_line:,.0f} instructions = {per_line / per_us:.1f} µs-equivalent "
        f"(this machine retires {per_us:,.0f} instructions per µs of this workload)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--format", choices=("json", "text"), default="json")
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--instructions", action="store_true", help="count instructions under callgrind"
    )
    parser.add_argument("--one-pass", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--timed-pass", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--log", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one_pass:
        one_pass(args.format, args.requests, args.log)
    elif args.timed_pass:
        print(cpu_per_line(args.format, args.requests))
    elif args.instructions:
        instructions(args.format, min(args.requests, 2_000))  # callgrind: ~50 times slower
    else:
        arguments = ["--timed-pass", "--format", args.format, "--requests", str(args.requests)]
        figures = [float(run_self(*arguments)) for _ in range(args.repeats)]
        print(
            f"access log ({args.format}): {statistics.median(figures) * 1e6:.1f} µs of CPU per "
            f"request (median of {args.repeats} runs of {args.requests:,} requests; runs: "
            + ", ".join(f"{f * 1e6:.1f}" for f in figures)
            + ")"
        )


if __name__ == "__main__":
    main()
