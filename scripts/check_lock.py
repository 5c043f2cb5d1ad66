"""Keeps the lock files in requirements/ honest against pyproject.toml and the virtualenv.

    python scripts/check_lock.py                  every problem between pyproject and the locks
    python scripts/check_lock.py --installed F    every difference between lock F and this Python
                                 [--site DIR]     (or the environment of that site-packages)
    python scripts/check_lock.py --prune F        uninstall what this Python has beyond lock F

pyproject.toml keeps compatible ranges for people who install the wheel into their own
environment; the locks pin what CI, the demo and the image install. They disagree when a package
is in one and not the other, or a locked version is outside its range: then the locks are stale
and `./scripts/lock.sh` writes them anew. Exit status 1 with one line a problem, 0 when none.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
# What uv writes in a lock's "via" comments for a requirement that pyproject states itself.
DIRECT_SOURCES = ("msal-gateway (pyproject.toml)", "-r build-system.requires")
# Installed in every virtualenv without being a dependency of anything.
NEVER_PRUNED = frozenset({"pip", "msal-gateway"})
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)\s*(?:;\s*([^\\]+?))?\s*\\?$")


@dataclass
class Pin:
    """One package line of a lock, with the names its "via" comment gives."""

    name: str
    version: Version
    marker: Marker | None
    via: list[str] = field(default_factory=list)

    @property
    def direct(self) -> bool:
        return any(source in DIRECT_SOURCES for source in self.via)

    def applies(self) -> bool:
        return self.marker is None or self.marker.evaluate()


def read_lock(path: Path) -> list[Pin]:
    pins: list[Pin] = []
    in_via = False
    for line in path.read_text(encoding="utf-8").splitlines():
        matched = PIN.match(line)
        if matched:
            name, version, marker = matched.groups()
            pins.append(
                Pin(canonicalize_name(name), Version(version), Marker(marker) if marker else None)
            )
            in_via = False
            continue
        comment = line.strip()
        if not pins or not comment.startswith("#"):
            continue
        text = comment.lstrip("#").strip()
        if text.startswith("via"):
            rest = text.removeprefix("via").strip()
            in_via = not rest
            if rest:
                pins[-1].via.append(rest)
        elif in_via and text:
            pins[-1].via.append(text)
    return pins


def expected(pyproject: dict[str, object]) -> dict[str, list[Requirement]]:
    """The requirements each lock must satisfy, by lock file name."""
    project = pyproject["project"]
    build = pyproject["build-system"]
    assert isinstance(project, dict) and isinstance(build, dict)
    runtime = [Requirement(text) for text in project.get("dependencies", [])]
    builder = [Requirement(text) for text in build.get("requires", [])]
    extras = [
        Requirement(text)
        for texts in project.get("optional-dependencies", {}).values()
        for text in texts
    ]
    return {"runtime.txt": runtime, "build.txt": builder, "dev.txt": runtime + builder + extras}


def problems(pyproject_path: Path, locks: Path) -> list[str]:
    with pyproject_path.open("rb") as source:
        wanted = expected(tomllib.load(source))
    found: list[str] = []
    for lock_name, requirements in wanted.items():
        lock = locks / lock_name
        if not lock.is_file():
            found.append(f"{lock}: missing; run ./scripts/lock.sh")
            continue
        pins = read_lock(lock)
        by_name: dict[str, list[Pin]] = {}
        for pin in pins:
            by_name.setdefault(pin.name, []).append(pin)
        direct_names = {canonicalize_name(requirement.name) for requirement in requirements}
        for requirement in requirements:
            name = canonicalize_name(requirement.name)
            if name not in by_name:
                found.append(f"{lock}: {requirement} is in pyproject.toml but not in the lock")
                continue
            for pin in by_name[name]:
                if not requirement.specifier.contains(pin.version, prereleases=True):
                    found.append(
                        f"{lock}: {name}=={pin.version} is outside pyproject's {requirement}"
                    )
        for pin in pins:
            if pin.direct and pin.name not in direct_names:
                found.append(
                    f"{lock}: {pin.name} is locked for pyproject.toml, which no longer has it"
                )
            elif not pin.via:
                found.append(f"{lock}: {pin.name} says nothing of what needs it")
            elif not pin.direct and not any(
                canonicalize_name(source.split(" ")[0]) in by_name
                for source in pin.via
                if not source.startswith("-c ")
            ):
                found.append(f"{lock}: {pin.name} is needed by nothing in the lock")
    return found


def installed(site: Path | None = None) -> dict[str, str]:
    """What this Python has installed, or another environment's site-packages folder."""
    found = metadata.distributions(path=[str(site)]) if site else metadata.distributions()
    return {canonicalize_name(dist.metadata["Name"]): dist.version for dist in found}


def differences(lock: Path, site: Path | None = None) -> list[str]:
    have = installed(site)
    found = []
    for pin in read_lock(lock):
        if not pin.applies():
            continue
        version = have.get(pin.name)
        if version is None:
            found.append(f"{pin.name}=={pin.version} is locked but not installed")
        elif Version(version) != pin.version:
            found.append(f"{pin.name} is {version} here, {pin.version} in {lock.name}")
    locked = {pin.name for pin in read_lock(lock)}
    found.extend(
        f"{name}=={version} is installed but not in {lock.name}"
        for name, version in sorted(have.items())
        if name not in locked and name not in NEVER_PRUNED
    )
    return found


def prune(lock: Path) -> None:
    locked = {pin.name for pin in read_lock(lock)}
    extra = sorted(name for name in installed() if name not in locked | NEVER_PRUNED)
    if extra:
        print(f"Removing packages that {lock.name} no longer has: {' '.join(extra)}")
        subprocess.run(  # noqa: S603 (names read from this Python's own metadata)
            [sys.executable, "-m", "pip", "uninstall", "-q", "-y", *extra], check=True
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pyproject", type=Path, default=ROOT / "pyproject.toml")
    parser.add_argument("--locks", type=Path, default=ROOT / "requirements")
    parser.add_argument("--installed", type=Path, metavar="LOCK")
    parser.add_argument("--site", type=Path, metavar="SITE_PACKAGES")
    parser.add_argument("--prune", type=Path, metavar="LOCK")
    arguments = parser.parse_args()
    if arguments.prune:
        prune(arguments.prune)
        return 0
    if arguments.installed:
        found = differences(arguments.installed, arguments.site)
    else:
        found = problems(arguments.pyproject, arguments.locks)
    for line in found:
        print(line)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
