"""Applications from PyPI for the recipe tests (docs/recipes.md, tests/e2e/recipes): each installed
into a virtualenv of its own from its hash-pinned lock (requirements/recipes/APP.txt, written by
scripts/lock_recipes.sh) with the project's uv, kept between runs, and started on loopback.

The virtualenvs live under $XDG_CACHE_HOME/msal-gateway/recipes (~/.cache when unset), one folder
per application, version and lock: a changed lock installs beside the old one instead of on top
of it. An install is complete only once its stamp file is written, so one cut short is redone.
A missing uv, or an install that fails (PyPI out of reach), skips the test with the reason, and
fails it under CI (support/binaries.py).
"""

from __future__ import annotations

import fcntl
import hashlib
import http.client
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Final

import pytest

from support.binaries import unavailable
from support.gateway import GatewayProcess, LogTail, settings_for
from support.paths import REPO
from support.ports import free_port

LOCKS: Final = REPO / "requirements" / "recipes"
INSTALL_SECONDS: Final = 900
STAMP: Final = ".installed"
# Tell the applications not to reach for the internet (none is reachable from the tests).
QUIET_ENV: Final[Mapping[str, str]] = {
    "GRADIO_ANALYTICS_ENABLED": "False",
    "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false",
    "HF_HUB_OFFLINE": "1",
    "JUPYTER_PLATFORM_DIRS": "1",
    "PYTHONUNBUFFERED": "1",
}


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "msal-gateway" / "recipes"


def locked_version(app: str) -> str:
    """The version of `app` its lock pins."""
    text = (LOCKS / f"{app}.txt").read_text("utf-8")
    found = re.search(rf"^{re.escape(app)}==(\S+)", text, re.MULTILINE)
    assert found is not None, f"requirements/recipes/{app}.txt does not pin {app}"
    return found.group(1)


@dataclass(frozen=True)
class AppEnv:
    """An application's virtualenv, installed."""

    app: str
    version: str
    path: Path

    def program(self, name: str) -> str:
        return str(self.path / "bin" / name)

    @property
    def python(self) -> str:
        return self.program("python")


def app_env(app: str, version: str) -> AppEnv:
    """The virtualenv of `app` at `version`, installed from its lock on first use."""
    pinned = locked_version(app)
    assert pinned == version, (
        f"the test wants {app} {version} but requirements/recipes/{app}.txt pins {pinned}: "
        f"change requirements/recipes/{app}.in and run ./scripts/lock_recipes.sh"
    )
    lock = LOCKS / f"{app}.txt"
    digest = hashlib.sha256(lock.read_bytes() + sys.version.encode()).hexdigest()[:12]
    target = cache_root() / f"{app}-{version}-{digest}"
    env = AppEnv(app, version, target)
    if (target / STAMP).exists():
        return env
    target.parent.mkdir(parents=True, exist_ok=True)
    # Two test processes installing the same application wait for each other.
    with open(f"{target}.lock", "w") as guard:
        fcntl.flock(guard, fcntl.LOCK_EX)
        if not (target / STAMP).exists():
            _install(lock, target)
    return env


def _install(lock: Path, target: Path) -> None:
    uv = Path(sys.executable).parent / "uv"
    if not uv.exists():
        unavailable(f"{uv} not found: uv is in the test extra (scripts/bootstrap.sh test)")
    shutil.rmtree(target, ignore_errors=True)
    started = time.monotonic()
    steps: Sequence[list[str]] = (
        [str(uv), "venv", "--quiet", "--python", sys.executable, str(target)],
        [
            str(uv),
            "pip",
            "sync",
            "--quiet",
            "--require-hashes",
            "--python",
            str(target / "bin" / "python"),
            str(lock),
        ],
    )
    for argv in steps:
        try:
            done = subprocess.run(
                argv, capture_output=True, text=True, timeout=INSTALL_SECONDS, check=False
            )
        except subprocess.TimeoutExpired:
            unavailable(f"installing {lock.name} took over {INSTALL_SECONDS} s")
        if done.returncode != 0:
            unavailable(
                f"installing {lock.relative_to(REPO)} failed (is PyPI reachable?): "
                f"{done.stderr.strip()[-1500:]}"
            )
    (target / STAMP).write_text(f"{time.monotonic() - started:.1f} s\n", "utf-8")


class AppProcess:
    """An application's server process; its output goes to a log file the failures quote."""

    def __init__(
        self,
        argv: Sequence[str],
        log: Path,
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.log = log
        self._out: IO[bytes] = open(log, "wb")  # noqa: SIM115 - closed by stop()
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
        full_env.update(QUIET_ENV)
        full_env.update(env or {})
        self.process = subprocess.Popen(
            list(argv),
            stdout=self._out,
            stderr=subprocess.STDOUT,
            env=full_env,
            cwd=cwd,
            start_new_session=True,  # its children (kernels) are stopped with it
        )

    def output(self, tail: int = 3000) -> str:
        return self.log.read_text("utf-8", errors="replace")[-tail:]

    def wait_http(self, port: int, path: str = "/", seconds: float = 90.0) -> None:
        """Until 127.0.0.1:`port` answers `path` at all (any status), or fail quoting the log."""
        deadline = time.monotonic() + seconds
        while answers(port, path) is None:
            if self.process.poll() is not None:
                self.stop()
                pytest.fail(f"{self.log.stem} exited {self.process.returncode}: {self.output()}")
            if time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"{self.log.stem} not answering on port {port}: {self.output()}")
            time.sleep(0.25)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, 15)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, 9)
                self.process.wait()
        self._out.close()


def answers(port: int, path: str = "/") -> int | None:
    """The status an HTTP server on 127.0.0.1:`port` answers a GET of `path` with, if any."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        response.read()
        return response.status
    except OSError:
        return None
    finally:
        connection.close()


# ---- the gateway in front ----


@dataclass(frozen=True)
class Front:
    """A gateway process in front of an application: where to reach it, and its public URL."""

    url: str
    public_url: str
    process: GatewayProcess
    logs: LogTail


@contextmanager
def gateway_in_front(
    idp: Any, app_url: str, *, public_url: str | None = None, **overrides: Any
) -> Iterator[Front]:
    """`python -m gateway serve` in front of `app_url`, signing in at the development IdP. The
    public URL is the gateway's own loopback address unless given (a browser then needs no
    mapping); `overrides` are settings. On the way out it must stop cleanly."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    settings = settings_for(idp, app_url, public_url=public_url or url, **overrides)
    process = GatewayProcess(settings, port=port)
    logs = LogTail(process.process)
    deadline = time.monotonic() + 20
    while answers(port, "/.auth/readyz") != 200:
        if process.process.poll() is not None or time.monotonic() > deadline:
            _end(process, logs)
            pytest.fail(f"the gateway did not start: {logs.raw().decode(errors='replace')}")
        time.sleep(0.05)
    try:
        yield Front(url, public_url or url, process, logs)
    finally:
        _end(process, logs)
        assert process.process.returncode == 0, logs.raw().decode(errors="replace")[-2000:]


def _end(process: GatewayProcess, logs: LogTail) -> None:
    process.halt(15)
    logs.join()
    assert process.process.stderr is not None
    process.process.stderr.close()


# ---- the recipes' files, as docs/recipes.md shows them ----

TITLED_BLOCK: Final = re.compile(
    r'^```[a-z]* title="(?P<title>[^"]+)"\n(?P<body>.*?)^```$', re.MULTILINE | re.DOTALL
)


def recipe_file(title: str) -> str:
    """The code block of docs/recipes.md titled `title`: the tests run the page's own files, so
    what the page shows is what was tested."""
    page = (REPO / "docs" / "recipes.md").read_text("utf-8")
    found = [m.group("body") for m in TITLED_BLOCK.finditer(page) if m.group("title") == title]
    assert len(found) == 1, f"docs/recipes.md has {len(found)} blocks titled {title!r}"
    return found[0]
