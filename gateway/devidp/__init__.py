"""The development identity provider: an Entra ID v2 emulator that the real msal accepts.

A separate application (it imports nothing else from `gateway`) used by the tests as their fake
Entra, by `msal-gateway devidp` (see `cli.main`) and by `msal-gateway demo`. It implements the
contract in `shared/ENTRA.md` (b) over HTTPS with its own CA, for one tenant, and never belongs
in production: it signs in anyone who clicks a test user.

Starting it
    `running = await start(DevIdpConfig(port=0))` inside a loop; `await running.stop()`.
    `RunningDevIdp` has `authority` (`https://127.0.0.1:PORT/<tenant id>`, for msal's
    `authority=`), `base_url`, `issuer`, `port`, `ca_path` (PEM to trust), `state_dir`,
    `tenant_id`, `client_id`/`client_secret` (the first configured client), `control_url`, and
    every control method below. Clients of msal need `instance_discovery=False`,
    `azure_region=False` and an `http_client` trusting `ca_path` (ENTRA.md c.1, c.2, c.6).
    `start` raises `NonLoopbackRefused` for a non-loopback host unless
    `DevIdpConfig.force_non_loopback` is set (`--allow-non-loopback` on the command line).

Defaults
    Tenant `DEFAULT_TENANT_ID` (domain `contoso.example`), one confidential client
    `DEFAULT_CLIENT_ID` / `DEFAULT_CLIENT_SECRET` accepting any loopback http(s) or any https
    redirect URI, and the users `alice` (Alice Example, groups, role Reader), `bob` (Bob Builder)
    and `jose` (José Núñez, no email, roles Reader and Writer). Tokens live 3600 s.

Protocol endpoints (`{tenant}`: the GUID, `contoso.example`, `organizations` or `common`)
    GET  /{tenant}/v2.0/.well-known/openid-configuration
    GET  /{tenant}/discovery/v2.0/keys
    GET  /{tenant}/oauth2/v2.0/authorize     account picker, or answers at once when the request
                                             carries `X-DevIdp-User: <username|oid|upn>`
    POST /{tenant}/login                     the account picker's form
    POST /{tenant}/oauth2/v2.0/token         authorization_code, refresh_token,
                                             client_credentials, jwt-bearer (on-behalf-of);
                                             client_secret (form or Basic) or client assertions
    GET  /{tenant}/oauth2/v2.0/logout        redirects only to a registered origin
    GET  /oidc/userinfo                      bearer access token from this emulator

Control API (Python method on `RunningDevIdp` = JSON `POST /_devidp/<operation>` with the
keyword arguments as a JSON object; loopback clients only; thread-safe)
    reset()                                       `reset`: faults, lifetimes, grants,
                                                  revocations, keys, users, clients and the
                                                  request log back to the configuration
    clear_faults()                                `faults/clear`
    fail(endpoint, status, body=None, *, times=1, content_type=None, headers=None)
                                                  `faults/fail`: answer the next `times`
                                                  requests (None: until cleared); endpoints:
                                                  discovery, authorize, token, jwks, logout,
                                                  userinfo; a non-str body is JSON
    delay(endpoint, seconds, *, times=None)       `faults/delay`
    fail_authorize(error="access_denied", description=<contains <script>>, *, times=1)
                                                  `faults/authorize`
    set_token_faults(*, nonce=None, omit_id_token=False, omit_client_info=False,
        omit_refresh_token=False, id_token_issuer=None, id_token_audience=None,
        id_token_expired=False, id_token_unknown_key=False, id_token_claims=None)
                                                  `faults/token`: replaces the set
    set_lifetimes(*, expires_in=None, ext_expires_in=None, refresh_in=None)   `lifetimes`
    set_strict_rotation(on=True)                  `strict-rotation`
    revoke_refresh_tokens(user) -> int            `revoke` -> {"revoked": n}
    rotate_signing_key(*, keep_old=True) -> kid   `keys/rotate` -> {"kid": ...}
    add_user(User) / register_client(Client)      `users` / `clients` (fields as JSON)
    issue_access_token(user="alice", *, scope="api://upstream/read", client_id=None,
        lifetime=None, claims=None, unknown_key=False) -> str
                                                  `tokens/access` -> {"access_token": ...}
    issue_id_token(user="alice", *, client_id=None, nonce=None, claims=None,
        unknown_key=False) -> str                 `tokens/id` -> {"id_token": ...}
    requests(endpoint=None, *, grant_type=None) -> list[LoggedRequest]
                                                  `GET /_devidp/requests?endpoint=&grant_type=`
    token_requests(grant_type=None), clear_log()  `requests/clear`
    Read-only: users, clients, user(selector), lifetimes, signing_kid, tenant_id;
    `GET /_devidp/state` shows all of it plus the active faults.

Every protocol request is logged (method, path, endpoint, query, form, headers, status);
`/_devidp` calls are not.
"""

from __future__ import annotations

from .cli import main, summary
from .config import (
    DEFAULT_CLIENT_ID,
    DEFAULT_CLIENT_SECRET,
    DEFAULT_TENANT_ID,
    DEFAULT_USERS,
    Client,
    DevIdpConfig,
    FederatedCredential,
    User,
)
from .control import DevIdpControl
from .requestlog import LoggedRequest
from .server import NonLoopbackRefused, RunningDevIdp, start

__all__ = [
    "DEFAULT_CLIENT_ID",
    "DEFAULT_CLIENT_SECRET",
    "DEFAULT_TENANT_ID",
    "DEFAULT_USERS",
    "Client",
    "DevIdpConfig",
    "DevIdpControl",
    "FederatedCredential",
    "LoggedRequest",
    "NonLoopbackRefused",
    "RunningDevIdp",
    "User",
    "main",
    "start",
    "summary",
]
