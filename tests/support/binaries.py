"""Finding the programs the tests start (redis-server, nginx, chromium, node), and what a test does
when one is missing: it skips with the install hint, except under CI, where it fails, because a CI
run that silently skips a check proves nothing."""

from __future__ import annotations

import os
import shutil
from typing import NoReturn

import pytest


def under_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def unavailable(reason: str) -> NoReturn:
    """Skip, or fail under CI."""
    if under_ci():
        pytest.fail(f"{reason} (CI is set, so this is a failure, not a skip)", pytrace=False)
    pytest.skip(reason)


def find_binary(name: str, sbin: str | None = None) -> str | None:
    """The path of `name`, or None. Debian puts nginx and apache2 in /usr/sbin, which is not on
    every user's PATH: `sbin` names that fallback."""
    path = shutil.which(name)
    if path is None and sbin is not None and os.access(sbin, os.X_OK):
        path = sbin
    return path


def require_binary(name: str, package: str, sbin: str | None = None) -> str:
    path = find_binary(name, sbin)
    if path is None:
        unavailable(
            f"{name} not found: install the Debian package {package} "
            "(scripts/bootstrap.sh test does)"
        )
    return path
