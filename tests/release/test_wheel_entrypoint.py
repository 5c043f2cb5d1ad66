"""The container image, tested without a container engine: the Dockerfile's build stage is run
step by step here (its COPY and RUN instructions, the image's paths mapped to a scratch folder):
the hash-pinned runtime lock is the only step that may reach the package index, and the
environment it leaves holds exactly that lock and the project's wheel. The Dockerfile's own
ENTRYPOINT, CMD, ENV and HEALTHCHECK are then run against that environment. Also the
Dockerfile's promises that can be read from it: two stages, a slim base, uid 10001 as in deploy/,
nothing installed or compiled in the final stage, the OCI labels.

Slow (a dependency install and a wheel build, about half a minute) and meant to run in CI: under
CI=true an unreachable package index fails it instead of skipping it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import pytest
from support.paths import DEPLOY, REPO
from support.ports import free_port

pytestmark = pytest.mark.timeout(600)

DOCKERFILE: Final = REPO / "Dockerfile"
INSTALL_TIMEOUT_SECONDS: Final = 420
READY_SECONDS: Final = 30.0
UID: Final = "10001"
NETWORK_HINTS: Final = ("connection", "network", "temporary failure", "timed out", "resolve")


# ---- reading the Dockerfile ----


@dataclass(frozen=True)
class Instruction:
    name: str
    value: str


def instructions() -> list[Instruction]:
    """The Dockerfile's instructions, continuation lines joined, comments dropped."""
    result: list[Instruction] = []
    pending = ""
    for line in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        name, _, value = (pending + line).strip().partition(" ")
        result.append(Instruction(name.upper(), value.strip()))
        pending = ""
    return result


def final_stage() -> list[Instruction]:
    found = instructions()
    last_from = max(i for i, item in enumerate(found) if item.name == "FROM")
    return found[last_from:]


def one(stage: list[Instruction], name: str) -> str:
    [value] = [item.value for item in stage if item.name == name]
    return value


def exec_form(value: str) -> list[str]:
    """An exec-form (JSON array) instruction value; the shell form is not used in this image."""
    parsed = json.loads(value)
    assert isinstance(parsed, list) and all(isinstance(part, str) for part in parsed), value
    return parsed


def image_env(stage: list[Instruction]) -> dict[str, str]:
    """The final stage's ENV, as KEY=VALUE pairs (values here need no shell quoting)."""
    env: dict[str, str] = {}
    for item in stage:
        if item.name == "ENV":
            for pair in item.value.split():
                key, _, value = pair.partition("=")
                env[key] = value
    return env


def healthcheck_command(stage: list[Instruction]) -> list[str]:
    value = one(stage, "HEALTHCHECK")
    _, marker, command = value.partition("CMD ")
    assert marker, f"HEALTHCHECK without CMD: {value}"
    return exec_form(command)


def arg_default(stage: list[Instruction], name: str) -> str | None:
    for item in stage:
        if item.name == "ARG" and item.value.partition("=")[0] == name:
            return item.value.partition("=")[2].strip('"')
    return None


# ---- the wheel in a fresh virtual environment ----


@dataclass(frozen=True)
class Installed:
    venv: Path
    wheel: Path

    @property
    def bin(self) -> Path:
        return self.venv / "bin"


def _run(command: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, check=False, **kwargs)


def _install_failed(step: str, result: subprocess.CompletedProcess[str]) -> None:
    output = (result.stdout + result.stderr)[-3000:]
    message = f"{step} failed ({result.returncode}):\n{output}"
    looks_offline = any(hint in output.lower() for hint in NETWORK_HINTS)
    if looks_offline and os.environ.get("CI") != "true":
        pytest.skip(f"the package index seems unreachable; {message}")
    pytest.fail(message)


def clean_env(**extra: str) -> dict[str, str]:
    """The test's environment without anything that could point Python at the source tree or
    the project's own virtual environment, nor any GATEWAY_*/AZURE_* setting."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("GATEWAY_", "AZURE_", "PYTHON", "VIRTUAL_ENV", "PIP_"))
    }
    env.update(extra)
    return env


# Where the build stage's absolute paths live in this test's scratch folder.
BUILD_PATHS: Final = {
    "/src": "src",
    "/opt/msal-gateway": "venv",
    "/opt/build": "build-venv",
    "/wheels": "wheels",
}
# Steps after the lock is installed must not reach the network: their package index is a closed
# port, so a step that tried to download anything would fail.
OFFLINE: Final = {"PIP_INDEX_URL": "http://127.0.0.1:9/simple", "PIP_CONFIG_FILE": os.devnull}


def build_stage() -> list[Instruction]:
    found = instructions()
    starts = [i for i, item in enumerate(found) if item.name == "FROM"]
    assert len(starts) >= 2 and found[starts[0]].value.endswith(" AS build"), starts
    return found[starts[0] + 1 : starts[1]]


def _local(path: str, work: Path) -> Path:
    for image_path, folder in BUILD_PATHS.items():
        if path == image_path or path.startswith(image_path + "/"):
            return work / folder / path[len(image_path) :].lstrip("/")
    raise AssertionError(f"the build stage uses {path}, which BUILD_PATHS does not map")


def _localised(command: str, work: Path) -> str:
    for path in re.findall(r"(?<![\w.])/[A-Za-z][\w./*-]*", command):
        command = command.replace(path, str(_local(path, work)), 1)
    return command


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    """The Dockerfile's build stage, run step by step on this machine: its COPY instructions copy
    from the checkout, its RUN commands run in bash with the image's paths mapped into a scratch
    folder. Only the first RUN (the hash-pinned lock) may use the package index."""
    work = tmp_path_factory.mktemp("image")
    for folder in BUILD_PATHS.values():
        (work / folder).mkdir()
    workdir = work
    env = clean_env(PATH=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '/usr/bin')}")
    runs = 0
    for step in build_stage():
        if step.name == "WORKDIR":
            workdir = _local(step.value, work)
        elif step.name == "ENV":
            env.update(dict(pair.split("=", 1) for pair in step.value.split()))
        elif step.name == "COPY":
            *sources, target = step.value.split()
            destination = workdir / target
            for source in sources:
                origin = REPO / source
                if origin.is_dir():
                    shutil.copytree(
                        origin, destination, ignore=shutil.ignore_patterns("__pycache__")
                    )
                else:
                    destination.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(origin, destination / origin.name)
        elif step.name == "RUN":
            runs += 1
            locked = "--require-hashes" in step.value
            assert locked == (runs == 1), "only the first RUN installs, from the lock"
            result = _run(
                ["bash", "-euo", "pipefail", "-c", _localised(step.value, work)],
                cwd=workdir,
                env=env if locked else {**env, **OFFLINE},
                timeout=INSTALL_TIMEOUT_SECONDS,
            )
            if result.returncode != 0:
                _install_failed(f"build-stage RUN {runs}", result)
        else:
            raise AssertionError(f"the build stage has {step.name}, which this test cannot run")
    [wheel] = (work / "wheels").glob("msal_gateway-*.whl")
    return Installed(work / "venv", wheel)


def test_the_image_holds_exactly_the_runtime_lock(installed: Installed) -> None:
    [site] = (installed.venv / "lib").glob("python*/site-packages")
    result = _run(
        [
            sys.executable,
            str(REPO / "scripts" / "check_lock.py"),
            "--installed",
            str(REPO / "requirements" / "runtime.txt"),
            "--site",
            str(site),
        ],
        env=clean_env(),
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert not (installed.bin / "pip").exists(), "the image's environment keeps no pip"


def minimal_env(**extra: str) -> dict[str, str]:
    values = {
        "GATEWAY_UPSTREAM": "http://127.0.0.1:8080",
        "GATEWAY_PUBLIC_URL": "https://app.contoso.example",
        "GATEWAY_TENANT_ID": "8d2f1e3c-5b4a-4c6d-9e7f-0a1b2c3d4e5f",
        "GATEWAY_CLIENT_ID": "0b5c1f0e-6a1d-4a8e-9c1e-2f3a4b5c6d7e",
        "GATEWAY_CLIENT_SECRET": "not-a-real-secret",
    }
    return clean_env(**{**values, **extra})


def entrypoint(installed: Installed) -> list[str]:
    """The image's ENTRYPOINT + CMD, with the command resolved in the test's environment."""
    stage = final_stage()
    command = exec_form(one(stage, "ENTRYPOINT")) + exec_form(one(stage, "CMD"))
    return [str(installed.bin / command[0]), *command[1:]]


# ---- the tests ----


def test_the_wheel_is_what_runs(installed: Installed, tmp_path: Path) -> None:
    result = _run(
        [str(installed.bin / "python"), "-c", "import gateway; print(gateway.__file__)"],
        env=clean_env(),
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert Path(result.stdout.strip()).is_relative_to(installed.venv), result.stdout


def test_the_image_leaves_the_development_identity_provider_out(installed: Installed) -> None:
    # Run from the environment's folder: from the checkout, `python -c` would find ./devidp.
    imported = _run(
        [str(installed.bin / "python"), "-c", "import devidp"],
        env=clean_env(),
        cwd=installed.venv,
        timeout=60,
    )
    assert "No module named 'devidp'" in imported.stderr, imported.stderr
    for command in ("demo", "devidp"):
        result = _run(
            [str(installed.bin / "msal-gateway"), command],
            env=clean_env(),
            cwd=installed.venv,
            timeout=60,
        )
        assert result.returncode == 2, result.stdout + result.stderr
        assert "./scripts/demo.sh" in result.stderr and "Traceback" not in result.stderr


def test_help(installed: Installed) -> None:
    result = _run([str(installed.bin / "msal-gateway"), "--help"], env=clean_env(), timeout=60)
    assert result.returncode == 0, result.stderr
    assert "serve" in result.stdout and "check-config" in result.stdout


def test_check_config_accepts_a_minimal_configuration(installed: Installed) -> None:
    result = _run(
        [str(installed.bin / "msal-gateway"), "check-config"], env=minimal_env(), timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("configuration OK"), result.stdout


def test_check_config_names_the_bad_variable_in_one_line(installed: Installed) -> None:
    result = _run(
        [str(installed.bin / "msal-gateway"), "check-config"],
        env=minimal_env(GATEWAY_LISTEN="nowhere"),
        timeout=60,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert "GATEWAY_LISTEN" in lines[0] and "Traceback" not in lines[0]


def _files(*roots: Path) -> set[Path]:
    return {path for root in roots for path in root.rglob("*")}


def _healthy(command: list[str], env: dict[str, str]) -> bool:
    try:
        return _run(command, env=env, timeout=10).returncode == 0
    except subprocess.TimeoutExpired:
        return False


@pytest.fixture
def serving_env(installed: Installed, idp: Any, tmp_path: Path) -> dict[str, str]:
    """The image's ENV over a minimal configuration that signs in at the development identity
    provider (on loopback: serve loads its metadata at start-up), on a free port."""
    port = free_port()
    env = minimal_env(
        GATEWAY_PUBLIC_URL=f"http://127.0.0.1:{port}",
        GATEWAY_CLIENT_ID=idp.client_id,
        GATEWAY_CLIENT_SECRET=idp.client_secret,
        GATEWAY_AUTHORITY=idp.authority,
        GATEWAY_CA_BUNDLE=str(idp.ca_path),
        GATEWAY_PROXY__DRAIN_SECONDS="1",
    )
    del env["GATEWAY_TENANT_ID"]
    for key, value in image_env(final_stage()).items():
        if key == "PATH":
            # /opt/msal-gateway/bin in the image is this virtual environment's bin here.
            value = value.replace("/opt/msal-gateway/bin", str(installed.bin))
            value = value.replace("$PATH", os.environ.get("PATH", "/usr/bin:/bin"))
        env[key] = value
    env["GATEWAY_LISTEN"] = f"127.0.0.1:{port}"  # the image's 0.0.0.0:8000, made loopback-only
    for name in ("home", "tmp"):
        (tmp_path / name).mkdir()
    env["HOME"], env["TMPDIR"] = str(tmp_path / "home"), str(tmp_path / "tmp")
    return env


def test_serve_passes_the_image_healthcheck_and_stops_on_sigterm(
    installed: Installed, serving_env: dict[str, str], tmp_path: Path
) -> None:
    stage = final_stage()
    health = healthcheck_command(stage)
    assert "/.auth/healthz" in " ".join(health)
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    watched = (installed.venv, workdir, tmp_path / "home", tmp_path / "tmp")
    before = _files(*watched)
    process = subprocess.Popen(
        entrypoint(installed),
        env=serving_env,
        cwd=workdir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + READY_SECONDS
        while not _healthy(health, serving_env):
            assert process.poll() is None, f"serve exited with {process.returncode}"
            assert time.monotonic() < deadline, "the HEALTHCHECK never passed"
            time.sleep(0.2)
        process.send_signal(signal.SIGTERM)
        _, errors = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, errors.decode(errors="replace")[-3000:]
    # Not vacuous: with the gateway gone, the same command reports it unhealthy.
    assert not _healthy(health, serving_env)
    # A read-only root filesystem is enough: serving wrote no file anywhere it could have.
    assert _files(*watched) == before


def test_the_dockerfile_keeps_its_promises(installed: Installed) -> None:
    everything = instructions()
    stage = final_stage()
    bases = [item.value for item in everything if item.name == "FROM"]
    assert len(bases) >= 2, "a multi-stage build"
    assert all("-slim" in base for base in bases), bases
    assert one(stage, "USER") in (UID, f"{UID}:{UID}")
    deployment = (DEPLOY / "kustomize" / "base" / "deployment.yaml").read_text("utf-8")
    assert f"runAsUser: {UID}" in deployment  # the manifests run the image as its own user
    runs = " ".join(item.value for item in stage if item.name == "RUN")
    for tool in ("pip install", "apt-get", "gcc", "build-essential"):
        assert tool not in runs, f"the final stage runs {tool}"
    labels = " ".join(item.value for item in stage if item.name == "LABEL")
    for label in ("source", "version", "licenses", "title"):
        assert f"org.opencontainers.image.{label}=" in labels, label
    version = re.match(r"msal_gateway-([^-]+)-", installed.wheel.name)
    assert version is not None
    assert arg_default(stage, "VERSION") == version.group(1)
    assert exec_form(one(stage, "ENTRYPOINT")) == ["msal-gateway"]
    assert exec_form(one(stage, "CMD")) == ["serve"]
    assert image_env(stage).get("PYTHONDONTWRITEBYTECODE") == "1"
