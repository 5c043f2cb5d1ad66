"""The gateway's error tree. Every error a client sees is one of these; web/middleware.py renders
them.

    GatewayError                 500 internal
      SignInRequired             401 (302 to sign-in for browser navigations)
      SessionExpired             401 (same handling; the cookie names a session that has ended)
      StepUpRequired             401 (same handling, asking the provider for scopes or claims; the
                                 session itself stays)
      BadRequest                 400 e.g. bad state, tampered callback, unsafe return target
      Forbidden                  403
      NotFound                   404 unknown path under /.auth
      TooManyRequests            429 e.g. too many sign-ins started by one client
      IdentityProviderError      502 the identity provider refused or could not be reached
      UpstreamUnavailable        502 connection to the application refused or reset
      UpstreamTimeout            504
      StoreUnavailable           503 the session store cannot be reached (fail closed)
      Busy                       503 another request holds this session's refresh for too long
      AdminUnavailable           503 the admin token file holds no usable token (fail closed)
      SignInsBusy                503 too many sign-ins pending, or in progress (SignInQueueFull)
      CorruptRecordError         a stored record could not be decrypted or parsed; callers treat it
                                 as "no record" after logging, never as an empty session

Foreign exceptions are translated where they are raised (proxy/forward.py, store/redis.py,
oidc/msal_client.py); nothing above those modules sees a redis, aiohttp client or MSAL error. This
module imports nothing from the gateway.
"""

from __future__ import annotations

import logging
from typing import ClassVar


class GatewayError(Exception):
    """Base of every error the gateway renders.

    `status` and `code` are what the client sees; `str(self)` is shown only when `expose` is true,
    otherwise a generic sentence for the status is shown and the message goes to the log only.
    """

    status: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"
    expose: ClassVar[bool] = False
    title: ClassVar[str] = "Something went wrong"
    retry_after: ClassVar[int | None] = None  # seconds, sent as Retry-After when set
    # How the error is logged; None: ERROR for 5xx, WARNING otherwise. A person's own choice
    # (a cancelled sign-in) is not something operators must look at.
    log_level: ClassVar[int | None] = None

    def __init__(self, message: str = "", *, clear_cookies: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        # Cookies the rendered answer must delete (e.g. a sign-out that failed half-way).
        self.clear_cookies = clear_cookies


class SignInRequired(GatewayError):
    """The request has no valid session. A control-flow signal, not logged as an error."""

    status, code, expose, title = 401, "sign_in_required", True, "Sign-in required"


class SessionExpired(SignInRequired):
    code = "session_expired"
    title = "Your session has ended"


class RenewalRefused(SignInRequired):
    """The identity provider refused to renew the session's tokens (invalid_grant: a revoked or
    expired refresh token). Shown to the user as any other sign-in requirement."""


class StepUpRequired(SignInRequired):
    """The user must visit the identity provider for more: consent to `scopes`, or satisfy a
    claims challenge (Conditional Access). The session is still valid for everything else."""

    code = "interaction_required"
    title = "Sign-in needed for this page"

    def __init__(self, message: str, *, scopes: tuple[str, ...], claims: str | None) -> None:
        super().__init__(message)
        self.scopes = scopes
        self.claims = claims


class BadRequest(GatewayError):
    status, code, expose, title = 400, "bad_request", True, "The request could not be accepted"


class PayloadTooLarge(BadRequest):
    status, code, title = 413, "payload_too_large", "The request is too large"


class UnsupportedMediaType(BadRequest):
    status, code, title = 415, "unsupported_media_type", "The request could not be accepted"


class SignInNotCompleted(GatewayError):
    """The person did not finish signing in at the identity provider (cancelled, declined
    consent, or an interaction it needed): their choice, not a fault. A page with a way to try
    again, logged at info."""

    status, code, expose, title = 403, "sign_in_not_completed", True, "Sign-in not completed"
    log_level = logging.INFO


class Forbidden(GatewayError):
    status, code, expose, title = 403, "forbidden", True, "Access denied"


class NotFound(GatewayError):
    status, code, expose, title = 404, "not_found", True, "Not found"


class OutsidePrefix(NotFound):
    """A path outside the public URL's path prefix: neither the gateway's nor its application's."""

    def __init__(self) -> None:
        super().__init__(
            "there is nothing at this address: this application lives under another path"
        )


class TooManyRequests(GatewayError):
    status, code, expose, title = 429, "too_many_requests", True, "Too many requests"


class IdentityProviderError(GatewayError):
    """The identity provider answered with an error or could not be reached."""

    status, code, expose, title = 502, "identity_provider_error", True, "Sign-in failed"


class UpstreamUnavailable(GatewayError):
    status, code, expose, title = (
        502,
        "upstream_unavailable",
        True,
        "The application is unavailable",
    )


class UpstreamTimeout(GatewayError):
    status, code, expose, title = 504, "upstream_timeout", True, "The application did not answer"


class StoreUnavailable(GatewayError):
    status, code, expose, title = 503, "store_unavailable", True, "Temporarily unavailable"


class IdentityTooLarge(GatewayError):
    """The signed-in user's principal does not fit GATEWAY_GROUPS__MAX_HEADER_BYTES even without
    its groups: the request is refused rather than forwarded without the identity."""

    status, code, expose, title = (
        500,
        "identity_too_large",
        True,
        "Your sign-in cannot be passed to the application",
    )


class UpstreamBusy(GatewayError):
    """Every connection to the application is in use (or this client holds its share of them)
    and none came free in time; for a WebSocket, which holds its connection for as long as it
    runs, at once."""

    status, code, expose, title = 503, "upstream_busy", True, "The application is busy"
    retry_after = 5


class SignInsBusy(GatewayError):
    """The replica holds as many pending sign-ins as GATEWAY_SIGNIN__MAX_PENDING allows."""

    status, code, expose, title = 503, "sign_ins_busy", True, "Temporarily unavailable"
    retry_after = 10


class SignInQueueFull(SignInsBusy):
    """Every one of GATEWAY_SIGNIN__MAX_CONCURRENT sign-in turns stayed taken for
    GATEWAY_SIGNIN__QUEUE_SECONDS (a sign-in storm): try again in a moment."""

    retry_after = 2


class ClientTooSlow(GatewayError):
    """The client sent its request body slower than the minimum pace (or past the total)."""

    status, code, expose, title = 408, "client_too_slow", True, "The request took too long"


class Busy(GatewayError):
    """A per-session lock stayed taken longer than a live holder could need."""

    status, code, expose, title = 503, "busy", False, "Temporarily unavailable"


class AdminUnavailable(GatewayError):
    """GATEWAY_ADMIN__TOKEN_FILE was replaced by something unusable (too short, unreadable,
    gone): admin calls are refused, whatever they present, until the file is fixed."""

    status, code, expose, title = 503, "admin_unavailable", False, "Temporarily unavailable"


class CorruptRecordError(GatewayError):
    """A stored record failed authentication or parsing: tampered, wrong key, or a bug."""

    code = "corrupt_record"
