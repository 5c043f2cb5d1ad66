"""Debian's headless Chromium driven by Selenium, for the tests that need a real browser.

Chromium and its driver are Debian's (`chromium`, `chromium-driver`; scripts/bootstrap.sh installs
them), driven by Selenium from PyPI with the driver's path given, so nothing is downloaded. Under
CI=true a missing browser fails the test; elsewhere it skips with the install hint.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from support.binaries import require_binary, under_ci

try:
    from selenium import webdriver
    from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
except ImportError:  # pragma: no cover - the test extra installs it
    if under_ci():
        raise
    pytest.skip("selenium is not installed: pip install -e '.[test]'", allow_module_level=True)


def chromium_driver(profile: Path, *extra: str, window: str = "1024,768") -> Iterator[Any]:
    """A headless Chromium with its own profile directory, quit when the generator closes."""
    browser = require_binary("chromium", "chromium")
    driver_path = require_binary("chromedriver", "chromium-driver")
    options = Options()
    options.binary_location = browser
    for argument in (
        *extra,
        "--headless=new",
        "--no-sandbox",  # the suite runs as root in CI, where Chromium's sandbox refuses to start
        "--disable-dev-shm-usage",
        f"--window-size={window}",
        "--lang=en-US",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def wait_for(
    driver: Any,
    selector: str,
    text: str | None = None,
    seconds: float = 20.0,
    on_timeout: Callable[[], object] | None = None,
) -> Any:
    """The first element matching `selector` (and containing `text`) once it shows up; an
    assertion naming the page and what it shows when it does not within `seconds` (after
    `on_timeout`, say a screenshot)."""

    def found(driver: Any) -> Any:
        for element in driver.find_elements(By.CSS_SELECTOR, selector):
            if text is None or text in element.text:
                return element
        return False

    try:
        # An element of the page being navigated away from goes stale under our feet.
        wait = WebDriverWait(driver, seconds, ignored_exceptions=(StaleElementReferenceException,))
        return wait.until(found)
    except TimeoutException:
        if on_timeout is not None:
            on_timeout()
        body = driver.find_element(By.TAG_NAME, "body").text[:800]
        raise AssertionError(
            f"no {selector!r} with {text!r} at {driver.current_url}: {body}"
        ) from None
