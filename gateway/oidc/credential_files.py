"""Credential files that change while the gateway runs: the client secret, the client certificate
and the CA bundle, re-read when they change so that a rotated Kubernetes Secret needs no restart.

A file is checked at use (a sign-in, a refresh or an on-behalf-of exchange, never a proxied
request), by `stat` and at most once a second: device, inode, size and modification time. `stat`
follows symbolic links, so the kubelet's rotation (it writes a new directory and swaps the
`..data` link the file points through) shows as a new inode. An `invalid_client` from the
provider reads the file at once (`reread`), without asking `stat`: the operator may have rotated
the secret at Entra a moment before the file changed, and a same-size rewrite within the file
system's timestamp granularity looks unchanged.

When the CA bundle changes, the connections kept open are closed: a CA taken out of the bundle
must not go on being trusted on them. The federated token file needs none of this: it is read at
every use (oidc/credentials.py). The admin token file follows the same rule (WatchedFile) in
endpoints/admin_token.py.
"""

from __future__ import annotations

import datetime
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import requests
from cryptography import x509

from gateway.config.settings import Settings
from gateway.oidc import credentials

log = logging.getLogger(__name__)

MIN_CHECK_SECONDS: Final = 1.0
WARN_DAYS: Final = 30  # check-config warns, and the shipped alert fires, this long ahead
Signature = tuple[int, int, int, int]
# When each kind of client credential stops working (Unix time), for the expiry gauge.
Expiry = dict[str, float]


def certificate_not_after(pem: str) -> float | None:
    """The first certificate's notAfter in a PEM text (Unix time), or None without one."""
    try:
        return x509.load_pem_x509_certificates(pem.encode())[0].not_valid_after_utc.timestamp()
    except (ValueError, IndexError):
        return None


def credential_expiry(settings: Settings, credential: str | dict[str, Any]) -> Expiry:
    """What is known of the credential's end: a certificate's notAfter, and the client
    secret's expiry as GATEWAY_CLIENT_SECRET_EXPIRES states it (Entra does not tell clients)."""
    expiry: Expiry = {}
    if isinstance(credential, dict) and isinstance(credential.get("public_certificate"), str):
        not_after = certificate_not_after(credential["public_certificate"])
        if not_after is not None:
            expiry["certificate"] = not_after
    stated = settings.client_secret_expires
    if settings.client_secret is not None and stated is not None:
        if stated.tzinfo is None:
            stated = stated.replace(tzinfo=datetime.UTC)
        expiry["secret"] = stated.timestamp()
    return expiry


def expiry_warnings(settings: Settings, now: datetime.datetime) -> list[str]:
    """check-config's warnings: a credential that ends within WARN_DAYS (or has ended)."""
    credential: str | dict[str, Any] = ""
    if settings.client_certificate_file is not None:
        try:
            pem = settings.client_certificate_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            pem = ""  # the start-up checks report an unreadable file
        credential = {"public_certificate": pem}
    names = {
        "certificate": f"the client certificate in {settings.client_certificate_file}",
        "secret": "the client secret (GATEWAY_CLIENT_SECRET_EXPIRES)",
    }
    warnings = []
    for kind, ends in credential_expiry(settings, credential).items():
        left = ends - now.timestamp()
        day = datetime.datetime.fromtimestamp(ends, datetime.UTC).date().isoformat()
        if left <= 0:
            warnings.append(f"{names[kind]} expired on {day}: sign-in and refresh fail")
        elif left < WARN_DAYS * 86400:
            warnings.append(
                f"{names[kind]} expires on {day}, in {left / 86400:.0f} day(s): rotate it "
                "(docs/operations.md)"
            )
    return warnings


class WatchedFile:
    """Whether a file changed since it was last looked at. For one thread at a time."""

    def __init__(self, path: Path, clock: Callable[[], float] = time.monotonic) -> None:
        self.path = path
        self._clock = clock
        self._checked_at = clock()
        self._seen = self._signature()

    def _signature(self) -> Signature | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None  # mid-rotation or removed: keep what we have, look again later
        return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)

    def changed(self, *, now: bool = False) -> bool:
        """True once per change, a file that vanished included (reading it tells the caller
        why); checks at most every MIN_CHECK_SECONDS unless `now`."""
        if not now and self._clock() - self._checked_at < MIN_CHECK_SECONDS:
            return False
        self._checked_at = self._clock()
        seen = self._signature()
        if seen == self._seen:
            return False
        self._seen = seen
        return True

    def forget(self) -> None:
        """Report the file as changed at the next check where it exists (its content could not
        be used)."""
        self._seen = None

    def note(self) -> None:
        """The file was just read whatever `stat` said: what `stat` says now is what was read."""
        self._checked_at = self._clock()
        self._seen = self._signature()


class LiveCredential:
    """MSAL's `client_credential` as the files hold it now, and the shared HTTP session whose
    pooled connections are dropped when the CA bundle changes (new connections read the bundle
    again). Thread-safe: MSAL calls run on worker threads."""

    def __init__(
        self,
        settings: Settings,
        http: requests.Session,
        observe: Callable[[Expiry], None] | None = None,
    ) -> None:
        self._settings = settings
        self._http = http
        self._lock = threading.Lock()
        self._credential = credentials.client_credential(settings)
        self._observe = observe
        if observe is not None:
            observe(credential_expiry(settings, self._credential))
        self._secret = (
            WatchedFile(settings.client_secret_file)
            if settings.client_secret is not None and settings.client_secret_file
            else None
        )
        self._certificate = (
            WatchedFile(settings.client_certificate_file)
            if settings.client_certificate_file
            else None
        )
        self._ca = WatchedFile(settings.ca_bundle) if settings.ca_bundle else None

    def current(self) -> str | dict[str, Any]:
        self._check(now=False)
        return self._credential

    def reread(self) -> bool:
        """Read the credential file now, whatever `stat` says (a rewrite of the same size
        within the file system's timestamp granularity leaves it unchanged); whether the
        credential changed, so that the refused call is worth one retry."""
        return self._check(now=True, force=True)

    def _check(self, *, now: bool, force: bool = False) -> bool:
        with self._lock:
            if self._ca is not None and self._ca.changed(now=now):
                log.info("GATEWAY_CA_BUNDLE changed; new connections to the provider trust it")
                self._http.close()  # pooled connections go; the session stays usable
            fresh: str | dict[str, Any] | None = None
            if self._secret is not None and (force or self._secret.changed(now=now)):
                fresh = self._read(self._secret, "GATEWAY_CLIENT_SECRET_FILE")
            elif self._certificate is not None and (force or self._certificate.changed(now=now)):
                pem = self._read(self._certificate, "GATEWAY_CLIENT_CERTIFICATE_FILE")
                fresh = {"private_key": pem, "public_certificate": pem} if pem else None
            if not fresh or fresh == self._credential:
                return False
            self._credential = fresh
            log.info("the client credential changed on disk; using the new one")
            if self._observe is not None:
                self._observe(credential_expiry(self._settings, fresh))
            return True

    @staticmethod
    def _read(watched: WatchedFile, setting: str) -> str | None:
        watched.note()  # before the read: a change after it is noticed at the next check
        try:
            text = watched.path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            log.warning(
                "%s: cannot read %s (%s); keeping the previous credential",
                setting,
                watched.path,
                exc,
            )
            watched.forget()
            return None
        if setting == "GATEWAY_CLIENT_SECRET_FILE":
            text = text.strip()
        if not text.strip():
            watched.forget()  # caught between truncation and the write: look again next time
            return None
        return text
