"""Protocol errors in Entra's shape: `error`, `error_description: "AADSTSnnnn: ..."`, `error_codes`.

Handlers raise `OAuthError`; the token endpoint renders it as JSON (400, or 401 for
`invalid_client`) and the authorize endpoint sends it to the redirect URI or shows a 400 page.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Final

INVALID_REQUEST: Final = "invalid_request"
INVALID_GRANT: Final = "invalid_grant"
INVALID_CLIENT: Final = "invalid_client"
INVALID_SCOPE: Final = "invalid_scope"
UNAUTHORIZED_CLIENT: Final = "unauthorized_client"


class OAuthError(Exception):
    """An OAuth error with its AADSTS code. `status` is 401 for invalid_client, else 400.

    `suberror` (e.g. `consent_required`) and `claims` (a claims challenge for the interactive
    request) are added to the JSON body only when given, as Entra does.
    """

    def __init__(
        self,
        error: str,
        code: int,
        message: str,
        *,
        status: int | None = None,
        suberror: str | None = None,
        claims: str | None = None,
    ) -> None:
        super().__init__(f"{error}: AADSTS{code}: {message}")
        self.error = error
        self.code = code
        self.message = message
        self.status = status if status is not None else (401 if error == INVALID_CLIENT else 400)
        self.suberror = suberror
        self.claims = claims

    @property
    def description(self) -> str:
        return f"AADSTS{self.code}: {self.message}"

    def body(self, *, now: float, correlation_id: str | None) -> dict[str, object]:
        """The JSON body Entra sends, with the trace details Entra appends to the description."""
        trace_id = str(uuid.uuid4())
        correlation = correlation_id or str(uuid.uuid4())
        stamp = dt.datetime.fromtimestamp(now, dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")
        body: dict[str, object] = {
            "error": self.error,
            "error_description": (
                f"{self.description} Trace ID: {trace_id} Correlation ID: {correlation}"
                f" Timestamp: {stamp}"
            ),
            "error_codes": [self.code],
            "timestamp": stamp,
            "trace_id": trace_id,
            "correlation_id": correlation,
        }
        if self.suberror is not None:
            body["suberror"] = self.suberror
        if self.claims is not None:
            body["claims"] = self.claims
        return body


def missing(parameter: str) -> OAuthError:
    return OAuthError(
        INVALID_REQUEST,
        900144,
        f"The request body must contain the following parameter: '{parameter}'.",
    )


def unknown_client(client_id: str, tenant_id: str) -> OAuthError:
    return OAuthError(
        UNAUTHORIZED_CLIENT,
        700016,
        f"Application with identifier '{client_id}' was not found in the directory '{tenant_id}'.",
    )
