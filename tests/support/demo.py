"""`msal-gateway demo` as a user starts it: a subprocess on a free block of ports, its banner read
until it says it is running, stopped with SIGTERM (which must exit 0)."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from support.ports import free_ports


@dataclass(frozen=True)
class RunningDemo:
    url: str  # the gateway
    ca_path: str  # the identity provider's CA (its TLS back channel)
    banner: str


@contextlib.contextmanager
def running_demo(state_home: Path) -> Iterator[RunningDemo]:
    port = free_ports(4)  # the gateway's and the three after it
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "AZURE_"))}
    env["XDG_STATE_HOME"] = str(state_home)  # the demo's CA and keys, kept across its runs
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway", "demo", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
        text=True,
    )
    assert process.stdout is not None
    banner = ""
    deadline = time.monotonic() + 20
    while "Press Ctrl+C" not in banner and time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        banner += line
    try:
        match = re.search(r"CA at (\S+)\)", banner)
        assert match, banner
        assert f"http://127.0.0.1:{port}/" in banner
        yield RunningDemo(f"http://127.0.0.1:{port}", match.group(1), banner)
    finally:
        process.terminate()
        status = process.wait(10)
        process.stdout.close()
        assert status == 0
