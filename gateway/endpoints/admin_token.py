"""The bearer token of the operator endpoints under /.auth/admin/: GATEWAY_ADMIN__TOKEN, or the
file GATEWAY_ADMIN__TOKEN_FILE names, read again when it changes so that a rotated Kubernetes
Secret needs no restart.

The file is looked at when an admin call arrives, by `stat` and at most once a second (the same
rule as the client credential files: oidc/credential_files.py), so the kubelet's `..data` swap
and an in-place rewrite are both noticed. A replacement that cannot be used (unreadable, gone,
shorter than the configured minimum) does not leave the old token working: admin calls are
refused with 503 and an error in the log until the file holds a usable token again. Fail closed:
whoever rotated the token meant the old one to stop.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Callable

from gateway.config.advanced import AdminSettings, read_admin_token
from gateway.errors import AdminUnavailable
from gateway.oidc.credential_files import WatchedFile

log = logging.getLogger(__name__)


class AdminToken:
    """Checks a presented admin token against the current one. For the event loop only."""

    def __init__(self, settings: AdminSettings, clock: Callable[[], float] = time.monotonic):
        assert settings.enabled, "the admin endpoints exist only with a token"
        self._token = settings.token.get_secret_value() if settings.token is not None else None
        self._file = WatchedFile(settings.token_file, clock) if settings.token_file else None
        if self._file is not None:
            self._load(changed=False)  # what the file holds now, not what was validated

    def matches(self, presented: str) -> bool:
        """Whether `presented` is the token, compared in constant time. AdminUnavailable while
        the token file holds no usable token."""
        if self._file is not None and self._file.changed():
            self._load(changed=True)
        if self._token is None:
            raise AdminUnavailable(
                "GATEWAY_ADMIN__TOKEN_FILE holds no usable admin token; admin calls are refused "
                "until it does"
            )
        return hmac.compare_digest(presented.encode(), self._token.encode())

    def _load(self, *, changed: bool) -> None:
        assert self._file is not None
        try:
            self._token = read_admin_token(self._file.path)
        except ValueError as exc:
            self._token = None
            # Looked at again at the next check even if unchanged (a rewrite caught half-way).
            self._file.forget()
            log.error(
                "GATEWAY_ADMIN__TOKEN_FILE: %s; admin calls are refused (503) until it is fixed",
                exc,
            )
            return
        if changed:
            log.info("GATEWAY_ADMIN__TOKEN_FILE changed; the admin token in it applies now")
