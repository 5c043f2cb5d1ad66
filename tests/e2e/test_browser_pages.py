"""The pages people see, in a real headless Chromium: sign in through the gateway at the
development identity provider, land on the application, meet a refusal (on a desktop and a phone
screen), sign out, and recover from a sign-in the identity provider refused.

Chromium and its driver are Debian's (`chromium`, `chromium-driver`; scripts/bootstrap.sh installs
them), driven by Selenium from PyPI with the driver's path given, so nothing is downloaded. Under
CI=true a missing browser fails the test; elsewhere it skips with the install hint.

The gateway is a real `python -m gateway serve` process on http://127.0.0.1:PORT (loopback http is
allowed for development, so its cookies work without TLS), in front of the demo's sample "legacy"
application. The development identity provider speaks https with a CA of its own, which Chromium
is not told about: the browser runs with --ignore-certificate-errors. That switch cannot be limited
to one origin, and is acceptable only because every origin this browser visits is on loopback and
started by this test.

Every step is screenshotted into the test's temporary directory, and each PNG is decoded here and
must show more than a handful of colours (a blank or error-less white page shows one or two).
"""

from __future__ import annotations

import asyncio
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import pytest
from aiohttp import web
from support.binaries import under_ci
from support.chromium import chromium_driver, wait_for
from support.demo import running_demo
from support.gateway import GatewayProcess, settings_for
from support.ports import free_port
from support.threaded import ThreadedServer

from gateway.demo import _legacy_page

try:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
except ImportError:  # pragma: no cover - the test extra installs it
    if under_ci():
        raise
    pytest.skip("selenium is not installed: pip install -e '.[test]'", allow_module_level=True)

WAIT_SECONDS: Final = 20.0
MIN_COLOURS: Final = 16
DENIED_PATH: Final = "/admin/"
BRAND: Final = "Contoso Expenses"


# ---- a tiny PNG reader: enough to count the colours of Chromium's screenshots ----


def _paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    if pa <= pb and pa <= pc:
        return a
    return b if pb <= pc else c


def png_pixels(data: bytes) -> tuple[int, int, list[bytes]]:
    """Width, height and the pixels (as byte strings) of an 8-bit RGB/RGBA, non-interlaced PNG."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    position, idat = 8, b""
    width = height = channels = 0
    while position < len(data):
        (length,) = struct.unpack(">I", data[position : position + 4])
        kind = data[position + 4 : position + 8]
        body = data[position + 8 : position + 8 + length]
        position += 12 + length
        if kind == b"IHDR":
            width, height, depth, color_type, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert depth == 8 and color_type in (2, 6) and interlace == 0, "unexpected PNG format"
            channels = 3 if color_type == 2 else 4
        elif kind == b"IDAT":
            idat += body
        elif kind == b"IEND":
            break
    raw = zlib.decompress(idat)
    stride = width * channels
    previous = bytearray(stride)
    pixels: list[bytes] = []
    for y in range(height):
        start = y * (stride + 1)
        filter_type, line = raw[start], bytearray(raw[start + 1 : start + 1 + stride])
        if filter_type == 1:
            for i in range(channels, stride):
                line[i] = (line[i] + line[i - channels]) & 0xFF
        elif filter_type == 2:
            line = bytearray((x + p) & 0xFF for x, p in zip(line, previous, strict=True))
        elif filter_type == 3:
            for i in range(stride):
                left = line[i - channels] if i >= channels else 0
                line[i] = (line[i] + ((left + previous[i]) >> 1)) & 0xFF
        elif filter_type == 4:
            for i in range(stride):
                left = line[i - channels] if i >= channels else 0
                up_left = previous[i - channels] if i >= channels else 0
                line[i] = (line[i] + _paeth(left, previous[i], up_left)) & 0xFF
        pixels.extend(bytes(line[i : i + 3]) for i in range(0, stride, channels))
        previous = line
    return width, height, pixels


def assert_not_blank(path: Path) -> int:
    width, height, pixels = png_pixels(path.read_bytes())
    assert len(pixels) == width * height
    colours = len(set(pixels))
    assert colours > MIN_COLOURS, f"{path.name} looks blank: {colours} colours"
    return colours


# ---- the browser ----


def _chromium(tmp_path: Path, *extra: str) -> Iterator[Any]:
    yield from chromium_driver(tmp_path / "profile", *extra)


@pytest.fixture
def chromium(tmp_path: Path) -> Iterator[Any]:
    # The session's identity provider serves its pages over TLS with a CA of its own (see above).
    yield from _chromium(tmp_path, "--ignore-certificate-errors")


@pytest.fixture
def stock_chromium(tmp_path: Path) -> Iterator[Any]:
    """Chromium as a new user has it: no certificate flags, no CA added."""
    yield from _chromium(tmp_path)


def legacy_app() -> web.Application:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", _legacy_page)
    return app


@pytest.fixture
def sample_app() -> Iterator[ThreadedServer]:
    server = ThreadedServer(legacy_app).start()
    yield server
    server.stop()


@pytest.fixture
def gateway_url(idp: Any, sample_app: ThreadedServer) -> Iterator[str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    settings = settings_for(
        idp,
        sample_app.url,
        public_url=url,
        policy={"rules": [{"path": DENIED_PATH, "allow": "deny"}]},
        pages={"title": BRAND, "color": "#5c2d91"},
    )
    process = GatewayProcess(settings, {"GATEWAY_LISTEN": f"127.0.0.1:{port}"})
    process.port = port  # the listen address (and so the public URL) is the one chosen here
    asyncio.run(process.ready())
    try:
        yield url
    finally:
        errors = process.stop()
        assert process.returncode == 0, errors[-2000:]


class Steps:
    """Screenshots, numbered in the order taken."""

    def __init__(self, driver: Any, directory: Path) -> None:
        self.driver = driver
        self.directory = directory
        self.shots: list[Path] = []

    def shoot(self, name: str) -> Path:
        path = self.directory / f"{len(self.shots) + 1:02d}-{name}.png"
        assert self.driver.save_screenshot(str(path)), f"no screenshot for {name}"
        self.shots.append(path)
        return path

    def wait_for(self, selector: str, text: str | None = None) -> Any:
        return wait_for(self.driver, selector, text, WAIT_SECONDS)


def structure(driver: Any) -> dict[str, Any]:
    """What assistive technology relies on, read from the rendered page."""
    result: dict[str, Any] = driver.execute_script(
        """
        const main = document.querySelectorAll('main, [role=main]');
        const h1 = document.querySelectorAll('h1');
        const html = document.documentElement;
        return {
            lang: html.lang,
            mains: main.length,
            h1s: Array.from(h1).map(e => e.textContent.trim()),
            banner: document.querySelectorAll('body > div > header, body > header').length,
            viewport: (document.querySelector('meta[name=viewport]') || {}).content || '',
            overflows: html.scrollWidth > window.innerWidth,
            title: document.title,
        };
        """
    )
    return result


def assert_accessible(driver: Any, heading: str) -> dict[str, Any]:
    page = structure(driver)
    assert page["lang"] == "en"
    assert page["mains"] == 1, page
    assert page["h1s"] == [heading], page
    assert page["banner"] == 1, page
    assert "width=device-width" in page["viewport"]
    assert not page["overflows"], "the page scrolls sideways"
    assert page["title"] == f"{heading} · {BRAND}"
    return page


def test_pages_along_sign_in_and_sign_out_in_chromium(
    chromium: Any, gateway_url: str, idp: Any, tmp_path: Path
) -> None:
    steps = Steps(chromium, tmp_path)

    # 1. The application, through the gateway: off to the identity provider's account picker.
    chromium.get(gateway_url + "/reports?month=5")
    alice = steps.wait_for('button[name="devidp_user"][value="alice"]')
    assert chromium.current_url.startswith(idp.authority)
    steps.shoot("identity-provider-sign-in")

    # 2. Pick Alice: back through the callback to the page first asked for.
    alice.click()
    heading = steps.wait_for("h1", "Hello,")
    assert heading.text == "Hello, alice@contoso.example"
    assert chromium.current_url == gateway_url + "/reports?month=5"
    assert "X-Forwarded-Email" in chromium.find_element(By.TAG_NAME, "table").text
    steps.shoot("application-signed-in")

    # 3. A refused page: the gateway's own 403, with its structure, request id and ways on.
    chromium.get(gateway_url + DENIED_PATH)
    steps.wait_for("h1", "Access denied")
    assert_accessible(chromium, "Access denied")
    main = chromium.find_element(By.TAG_NAME, "main").text
    assert "Error 403" in main and "Request id:" in main
    links = [
        (a.text, a.get_attribute("href")) for a in chromium.find_elements(By.CSS_SELECTOR, "a")
    ]
    assert links == [
        ("Go to the start page", gateway_url + "/"),
        ("Sign out to use another account", gateway_url + "/.auth/logout"),
    ]
    # Keyboard users see where they are: the first Tab lands on the main action, outlined.
    chromium.find_element(By.TAG_NAME, "body").send_keys(Keys.TAB)
    focused = chromium.execute_script(
        "const a = document.activeElement;"
        "return [a.textContent, getComputedStyle(a).outlineStyle, getComputedStyle(a).outlineWidth]"
    )
    assert focused == ["Go to the start page", "solid", "3px"], focused
    steps.shoot("access-denied")
    chromium.set_window_size(390, 844)  # a phone
    assert_accessible(chromium, "Access denied")
    steps.shoot("access-denied-phone")
    chromium.set_window_size(1024, 768)

    # 4. Sign out: the session ends here and at the identity provider, which sends the browser
    # back to the gateway's signed-out page.
    chromium.get(gateway_url + "/.auth/logout")
    steps.wait_for("h1", "You have signed out")
    assert chromium.current_url == gateway_url + "/.auth/logout/complete"
    assert_accessible(chromium, "You have signed out")
    assert BRAND in chromium.find_element(By.TAG_NAME, "header").text
    assert "Request id:" in chromium.find_element(By.TAG_NAME, "main").text
    sign_in_again = chromium.find_element(By.LINK_TEXT, "Sign in again")
    assert sign_in_again.get_attribute("href") == gateway_url + "/.auth/login/aad"
    steps.shoot("signed-out")

    # 5. Signed out means signed out: the application sends the browser to sign in again.
    chromium.get(gateway_url + "/reports")
    steps.wait_for('button[name="devidp_user"][value="bob"]')
    assert chromium.current_url.startswith(idp.authority)
    steps.shoot("signed-out-app-asks-again")

    # 6. The person presses Cancel at the identity provider: their choice, not a failure. A
    # 4xx page that offers to sign in again.
    chromium.find_element(By.CSS_SELECTOR, 'button[name="devidp_cancel"]').click()
    steps.wait_for("h1", "Sign-in not completed")
    assert_accessible(chromium, "Sign-in not completed")
    main = chromium.find_element(By.TAG_NAME, "main").text
    assert "(access_denied)" in main and "Error 403" in main and "Request id:" in main
    steps.shoot("sign-in-cancelled")
    chromium.find_element(By.LINK_TEXT, "Sign in again").click()

    # 7. The identity provider fails this sign-in: the gateway's page says so and offers
    # another try, which works.
    idp.fail_authorize("server_error")
    steps.wait_for('button[name="devidp_user"][value="bob"]').click()
    steps.wait_for("h1", "Sign-in failed")
    assert_accessible(chromium, "Sign-in failed")
    main = chromium.find_element(By.TAG_NAME, "main").text
    assert "(server_error)" in main and "Error 502" in main and "Request id:" in main
    steps.shoot("identity-provider-error")
    chromium.find_element(By.LINK_TEXT, "Try signing in again").click()
    steps.wait_for('button[name="devidp_user"][value="bob"]').click()
    heading = steps.wait_for("h1", "Hello,")
    assert heading.text.startswith("Hello, bob@")
    steps.shoot("application-signed-in-again")

    colours = {path.name: assert_not_blank(path) for path in steps.shots}
    assert len(colours) == 9, colours


def test_the_demo_in_a_stock_browser(stock_chromium: Any, tmp_path: Path) -> None:
    """Issue 15 item 1: the demo opens, signs in and out in a browser that trusts nothing extra:
    every page a browser visits is plain http on loopback; only MSAL's back channel uses TLS.
    Twice, to show the addresses and the provider's CA stay the same across runs."""
    state = tmp_path / "state"
    cas = []
    for run in range(2):
        with running_demo(state) as demo:
            cas.append(Path(demo.ca_path).read_bytes())
            steps = Steps(stock_chromium, tmp_path / f"run-{run}")
            steps.directory.mkdir()
            stock_chromium.get(demo.url + "/")
            alice = steps.wait_for('button[name="devidp_user"][value="alice"]')
            assert stock_chromium.current_url.startswith("http://127.0.0.1:")
            steps.shoot("demo-sign-in-page")
            alice.click()
            heading = steps.wait_for("h1", "Hello,")
            assert heading.text == "Hello, alice@contoso.example"
            names = [cell.text for cell in stock_chromium.find_elements(By.CSS_SELECTOR, "td")][::2]
            assert "X-Forwarded-Email" in names  # header names whole, never broken mid-word
            steps.shoot("demo-signed-in")
            stock_chromium.get(demo.url + "/.auth/logout")
            steps.wait_for("h1", "You have signed out")
            steps.shoot("demo-signed-out")
            assert all(assert_not_blank(path) for path in steps.shots)
    assert cas[0] == cas[1]
