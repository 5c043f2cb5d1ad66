"""What a release is made of, checked the way a packager would: the locks agree with pyproject.toml
and with this environment, the version shows wherever an operator looks, the wheel and the sdist
build from the tracked files and hold what the image needs and nothing else, and the Dockerfile
passes hadolint.

The wheel build is slow-ish (about ten seconds) and needs no network: the build backend comes from
the lock (`--no-isolation`).
"""

from __future__ import annotations

import asyncio
import email
import shutil
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import pytest
from support.gateway import GatewayProcess, env_for, settings_for
from support.paths import REPO
from support.threaded import ThreadedServer

from gateway.telemetry import build_info

CHECK_LOCK: Final = REPO / "scripts" / "check_lock.py"
BIN: Final = Path(sys.executable).parent
PYPROJECT: Final = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
VERSION: Final = PYPROJECT["project"]["version"]


def run(*command: str | Path, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(part) for part in command],
        capture_output=True,
        text=True,
        check=False,
        cwd=cwd,
        timeout=300,
    )


# ---- the locks ----


def test_pyproject_and_the_locks_agree() -> None:
    result = run(sys.executable, CHECK_LOCK)
    assert result.returncode == 0, result.stdout + result.stderr


def test_this_environment_holds_exactly_the_test_lock() -> None:
    """What ./scripts/test.sh installed is the lock, to the version: the same as `pip freeze`."""
    result = run(sys.executable, CHECK_LOCK, "--installed", REPO / "requirements" / "dev.txt")
    assert result.returncode == 0, result.stdout + result.stderr


def _replace(old: str, new: str) -> Callable[[str], str]:
    def edit(text: str) -> str:
        assert old in text, old
        return text.replace(old, new, 1)

    return edit


# (what is edited, the edit, what check_lock.py must then say)
DISAGREEMENTS: Final[list[tuple[str, Callable[[str], str], str]]] = [
    (
        "pyproject.toml",
        _replace('"httptools>=0.9,<1",', '"httptools>=0.9,<1",\n    "rich>=13",'),
        "rich>=13 is in pyproject.toml but not in the lock",
    ),
    (
        "pyproject.toml",
        _replace('"aiohttp>=3.14.5,<4"', '"aiohttp>=3.99,<4"'),
        "is outside pyproject's aiohttp<4,>=3.99",
    ),
    (
        "pyproject.toml",
        _replace('"msal==1.39.0"', '"msal==1.38.0"'),
        "msal==1.39.0 is outside pyproject's msal==1.38.0",
    ),
    (
        "pyproject.toml",
        _replace('    "httptools>=0.9,<1",\n', ""),
        "httptools is locked for pyproject.toml, which no longer has it",
    ),
    (
        "pyproject.toml",
        _replace('"pytest==9.2.0"', '"pytest==9.1.0"'),
        "requirements/dev.txt: pytest==9.2.0 is outside pyproject's pytest==9.1.0",
    ),
    (
        "pyproject.toml",
        _replace('requires = ["setuptools>=69"]', 'requires = ["setuptools>=99"]'),
        "is outside pyproject's setuptools>=99",
    ),
    (
        "requirements/runtime.txt",
        _replace("    # via aiohttp\n", "    # via no-such-package\n"),
        "is needed by nothing in the lock",
    ),
]


@pytest.mark.parametrize(
    ("target", "edit", "said"), DISAGREEMENTS, ids=[said for _, _, said in DISAGREEMENTS]
)
def test_a_disagreement_is_named(
    tmp_path: Path, target: str, edit: Callable[[str], str], said: str
) -> None:
    shutil.copy2(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    shutil.copytree(REPO / "requirements", tmp_path / "requirements")
    (tmp_path / target).write_text(edit((tmp_path / target).read_text("utf-8")), "utf-8")
    result = run(
        sys.executable,
        CHECK_LOCK,
        "--pyproject",
        tmp_path / "pyproject.toml",
        "--locks",
        tmp_path / "requirements",
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert said in result.stdout, result.stdout


# ---- the version, wherever an operator looks ----


def test_version_comes_from_the_package_metadata() -> None:
    assert build_info.version() == VERSION
    result = run(BIN / "msal-gateway", "--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == build_info.describe()
    assert result.stdout.startswith(f"msal-gateway {VERSION} (Python {sys.version.split()[0]}")


def test_check_config_and_the_start_up_line_name_the_version(
    idp: Any, upstream: ThreadedServer
) -> None:
    settings = settings_for(idp, upstream.url)
    gateway = GatewayProcess(settings)
    try:
        asyncio.run(gateway.ready())
    finally:
        log = gateway.stop()
    assert f"{build_info.describe()} listening on 127.0.0.1:{gateway.port}" in log, log
    checked = subprocess.run(
        [str(BIN / "msal-gateway"), "check-config"],
        capture_output=True,
        text=True,
        check=False,
        env=env_for(settings),
        timeout=60,
    )
    assert checked.returncode == 0, checked.stderr
    assert build_info.describe() in checked.stdout.splitlines(), checked.stdout


# ---- the wheel and the sdist ----


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sdist and the wheel built from it, from the tracked files only, offline."""
    work = tmp_path_factory.mktemp("release")
    source = work / "source"
    tracked = run("git", "ls-files", "-z").stdout.split("\0")
    for name in filter(None, tracked):
        if (REPO / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, source / name)
    built = run(sys.executable, "-m", "build", "--no-isolation", "--outdir", work / "dist", source)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    return work / "dist"


def test_metadata_renders(dist: Path) -> None:
    result = run(BIN / "twine", "check", "--strict", *sorted(dist.iterdir()))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("PASSED") == 2, result.stdout


def test_the_wheel_holds_the_package_and_nothing_else(dist: Path) -> None:
    [wheel] = dist.glob(f"msal_gateway-{VERSION}-py3-none-any.whl")
    names = zipfile.ZipFile(wheel).namelist()
    info = f"msal_gateway-{VERSION}.dist-info/"
    shipped = {name for name in names if not name.startswith(info)}
    package = set(filter(None, run("git", "ls-files", "gateway", "devidp").stdout.splitlines()))
    assert shipped == package, (sorted(shipped - package), sorted(package - shipped))
    assert not [name for name in names if name.startswith(("tests/", "bench/", "scripts/"))]
    metadata = email.message_from_bytes(zipfile.ZipFile(wheel).read(info + "METADATA"))
    assert metadata["Version"] == VERSION
    assert metadata["Requires-Python"] == PYPROJECT["project"]["requires-python"]
    runtime = [r for r in metadata.get_all("Requires-Dist") or [] if "extra ==" not in r]
    assert len(runtime) == len(PYPROJECT["project"]["dependencies"]), runtime
    entry_points = zipfile.ZipFile(wheel).read(info + "entry_points.txt").decode()
    assert "msal-gateway = gateway.__main__:main" in entry_points


def test_the_sdist_builds_the_wheel_and_leaves_out_local_state(dist: Path) -> None:
    [sdist] = dist.glob(f"msal_gateway-{VERSION}.tar.gz")
    with tarfile.open(sdist) as archive:
        names = [name.split("/", 1)[1] for name in archive.getnames() if "/" in name]
    for needed in ("pyproject.toml", "README.md", "gateway/__main__.py"):
        assert needed in names, needed
    assert not [name for name in names if name.startswith((".venv", ".git/", "build/"))]


# ---- the Dockerfile ----


def test_hadolint_passes_the_dockerfile() -> None:
    result = run(BIN / "hadolint", "--failure-threshold", "style", REPO / "Dockerfile")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "", result.stdout
    # A warning may only be silenced with its reason on the line above.
    lines = (REPO / "Dockerfile").read_text("utf-8").splitlines()
    for number, line in enumerate(lines):
        if "hadolint ignore" in line:
            reason = lines[number - 1].strip()
            assert reason.startswith("#") and "hadolint" not in reason, f"line {number + 1}"
