"""What this build is: the gateway's version, read from its package metadata (pyproject.toml is
the one place it is written), and the versions of the runtime pieces an operator asks about first
when a deployment misbehaves.

Shown by `msal-gateway --version`, `check-config`, the start-up log line and the
msal_gateway_build_info gauge. Read from metadata, not by importing the packages: the hot path's
modules must not import MSAL.
"""

from __future__ import annotations

import platform
from functools import cache
from importlib import metadata
from typing import Final

DISTRIBUTION: Final = "msal-gateway"


@cache
def version() -> str:
    return metadata.version(DISTRIBUTION)


@cache
def components() -> dict[str, str]:
    """The gateway's version and its runtime's, as the build-info gauge labels them."""
    return {
        "version": version(),
        "python": platform.python_version(),
        "aiohttp": metadata.version("aiohttp"),
        "msal": metadata.version("msal"),
    }


def describe() -> str:
    """One line for people: `msal-gateway 0.1.0 (Python 3.11.7, aiohttp 3.14.5, msal 1.39.0)`."""
    parts = components()
    runtime = ", ".join(
        f"{'Python' if name == 'python' else name} {value}"
        for name, value in parts.items()
        if name != "version"
    )
    return f"{DISTRIBUTION} {parts['version']} ({runtime})"
