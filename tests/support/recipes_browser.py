"""Debian's headless Chromium for the recipe tests: start it, pick a user at the development
identity provider's account picker, wait for what an application renders, and keep screenshots.

Chromium and its driver are Debian's (`chromium`, `chromium-driver`; scripts/bootstrap.sh installs
them), driven by Selenium with the driver's path given, so nothing is downloaded. The identity
provider serves its pages over TLS with a CA of its own, which the browser is not told about: it
runs with --ignore-certificate-errors, acceptable only because every origin it visits is on
loopback and started by the test. Screenshots go to the test's directory; the ones a person should
look at are also copied to $MSAL_GATEWAY_SCREENSHOTS when that is set.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import pytest

from support.chromium import chromium_driver, wait_for

try:
    from selenium.webdriver.common.by import By
except ImportError:  # pragma: no cover - support.chromium skips or fails first
    pytest.skip("selenium is not installed", allow_module_level=True)

WAIT_SECONDS: Final = 60.0


def chromium(profile: Path) -> Iterator[Any]:
    """A headless Chromium with a profile of its own, quit when the generator closes."""
    yield from chromium_driver(profile, "--ignore-certificate-errors", window="1280,900")


class Steps:
    """A browser session of one test: waits, sign-ins and numbered screenshots."""

    def __init__(self, driver: Any, directory: Path) -> None:
        self.driver = driver
        self.directory = directory
        self.shots: list[Path] = []

    def shoot(self, name: str, keep_as: str | None = None) -> Path:
        """A screenshot in the test's directory; `keep_as` also copies it under that name to
        $MSAL_GATEWAY_SCREENSHOTS, when set."""
        path = self.directory / f"{len(self.shots) + 1:02d}-{name}.png"
        assert self.driver.save_screenshot(str(path)), f"no screenshot for {name}"
        self.shots.append(path)
        keep = os.environ.get("MSAL_GATEWAY_SCREENSHOTS")
        if keep_as and keep:
            Path(keep).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, Path(keep) / keep_as)
        return path

    def wait_for(
        self, selector: str, text: str | None = None, seconds: float = WAIT_SECONDS
    ) -> Any:
        """The first element matching `selector` (and holding `text`), once there is one."""
        return wait_for(
            self.driver, selector, text, seconds, on_timeout=lambda: self.shoot("timed-out")
        )

    def sign_in_as(self, user: str) -> None:
        """At the identity provider's account picker, pick `user`."""
        self.wait_for(f'button[name="devidp_user"][value="{user}"]').click()

    def body_text(self) -> str:
        text: str = self.driver.find_element(By.TAG_NAME, "body").text
        return text
