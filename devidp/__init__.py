"""The development identity provider: an Entra ID v2 emulator that the real msal accepts.

A separate application (it imports nothing else from `gateway`) used by the tests as their fake
Entra, by `msal-gateway devidp` (see `cli.main`) and by `msal-gateway demo`. It implements the
contract in `shared/ENTRA.md` (b) over HTTPS with its own CA, for one tenant, and never belongs
in production: it signs in anyone who clicks a test user.

Starting it
    `running = await start(DevIdpConfig(port=0))` inside a loop; `await running.stop()`.
    `RunningDevIdp` has `authority` (`https://127.0.0.1:PORT/<tenant id>`, for msal's
    `authority=`), `base_url`, `graph_url` (`{base_url}/v1.0`, a Microsoft Graph base URL),
    `issuer`, `port`, `ca_path` (PEM to trust), `state_dir`,
    `tenant_id`, `client_id`/`client_secret` (the first configured client), `control_url`, and
    every control method below. Clients of msal need `instance_discovery=False`,
    `azure_region=False` and an `http_client` trusting `ca_path` (ENTRA.md c.1, c.2, c.6).
    `start` raises `NonLoopbackRefused` for a non-loopback host unless
    `DevIdpConfig.force_non_loopback` is set (`--allow-non-loopback` on the command line).

Defaults
    Tenant `DEFAULT_TENANT_ID` (domain `contoso.example`), one confidential client
    `DEFAULT_CLIENT_ID` / `DEFAULT_CLIENT_SECRET` accepting any loopback http(s) or any https
    redirect URI, and the users `alice` (Alice Example, group Readers, role Reader), `bob` (Bob
    Builder), `jose` (José Núñez, no email, groups Readers and Writers, roles Reader and Writer)
    and `carol` (Carol Many-Groups, in the 250 groups "Group 001".."Group 250", whose ids are
    uuid5(6f1b8e2a-3c4d-4e5f-9a0b-1c2d3e4f5a6b, "group-<n>")). Tokens live 3600 s.

Groups overage
    A user in more than `DevIdpConfig.groups_overage_limit` groups (default 200, as Entra) gets
    no `groups` claim in id or access tokens but `"_claim_names": {"groups": "src1"}` and
    `"_claim_sources": {"src1": {"endpoint": "https://graph.windows.net/<tid>/users/<oid>/
    getMemberObjects"}}` (never `hasgroups`, which Entra uses only for implicit flows). The
    groups then come from the Graph endpoint below; `DevIdpConfig.groups` names them.

Claims requests, consent and step-up (token endpoint, user grants)
    A `claims` parameter (at authorize or on the token request; msal merges its
    `client_capabilities` into a claims challenge) asking for `access_token.xms_cc.values` or
    `access_token.acrs` (`value` or `values`) puts `"xms_cc": [...]` / `"acrs": [...]` into the
    access token; it must be a JSON object (else invalid_request). `require_consent` and
    `require_claims_for_refresh` below add Entra's AADSTS65001 and AADSTS50076 refusals; a
    refused refresh never consumes the refresh token. An authorize request may name scopes of
    several resources (the user consents to all); a token request may name only one.

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
    GET  /v1.0/me/transitiveMemberOf/microsoft.graph.group, /v1.0/me/transitiveMemberOf
                                             Microsoft Graph (below); request-log and fault
                                             endpoint name "graph"

Microsoft Graph (the part a gateway needs for groups overage; base URL `graph_url`)
    Needs `Authorization: Bearer <delegated access token from this emulator>` whose `aud` is
    Graph (`00000003-0000-0000-c000-000000000000` from a scope such as `User.Read`, or
    `https://graph.microsoft.com` from `https://graph.microsoft.com/GroupMember.Read.All`),
    checked for signature, issuer and expiry. Answers `{"@odata.context", "value":
    [{"@odata.type": "#microsoft.graph.group", "id", "displayName", "description", "mail",
    "mailEnabled", "securityEnabled", "groupTypes"}, ...], "@odata.nextLink"}`, in the order of
    `User.groups`. The next link (only while more remain) is absolute and repeats the query with
    a `$skiptoken` (opaque, tied to the user). `$top` 1..999 (default 100); `$select` keeps the
    named known properties (and `id`); other options are ignored. A group missing from
    `DevIdpConfig.groups` has a null `displayName`.
    Errors are Graph-shaped, `{"error": {"code", "message", "innerError"}}`: 401
    `InvalidAuthenticationToken` (with `WWW-Authenticate`) for a missing, foreign, expired or
    non-Graph token; 400 for an app token (`/me` needs a user) or a bad `$top`/`$skiptoken`.

Control API (Python method on `RunningDevIdp` = JSON `POST /_devidp/<operation>` with the
keyword arguments as a JSON object; loopback clients only; thread-safe)
    reset()                                       `reset`: faults, lifetimes, grants,
                                                  revocations, keys, users, clients, the
                                                  request log, the overage limit, consent
                                                  requirements and consents, and the step-up
                                                  requirement back to the configuration
    clear_faults()                                `faults/clear`
    fail(endpoint, status, body=None, *, times=1, content_type=None, headers=None)
                                                  `faults/fail`: answer the next `times`
                                                  requests (None: until cleared); endpoints:
                                                  discovery, authorize, token, jwks, logout,
                                                  userinfo, graph; a non-str body is JSON
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
    set_groups_overage_limit(limit: int | None)   `groups/overage-limit`: more groups than
                                                  `limit` gives the overage marker; None: the
                                                  configured limit
    require_consent(resource: str)                `consent/require`: refresh-token and code
                                                  grants for a scope on `resource` (e.g.
                                                  `api://reports`) get invalid_grant
                                                  AADSTS65001, suberror consent_required, unless
                                                  the user consented to it for that client: an
                                                  authorize request whose `scope` named it
    grant_consent(user: str, resource: str, *, client_id: str | None = None)
                                                  `consent/grant`: consent without a sign-in
                                                  (client default: the first client)
    require_claims_for_refresh(acrs: str | None)  `claims/refresh`: Conditional Access step-up.
                                                  Refresh-token grants get invalid_grant
                                                  AADSTS50076 with `claims` = `{"access_token":
                                                  {"acrs":{"essential":true,"value":<acrs>}}}`
                                                  (asking for it silently is not enough) unless
                                                  the refresh token comes from a code sign-in
                                                  that asked for `acrs`; that sign-in's access
                                                  token carries `"acrs": [<acrs>]`. None: off
    Python only, awaited on the emulator's loop (`ThreadedDevIdp.call` in the tests):
    reissue_tls_certificate(*, new_ca=False) -> ca_path
                                                  serve a new TLS certificate to new
                                                  connections, from a new CA written over
                                                  `ca.pem` with `new_ca`; open connections are
                                                  closed once idle, so clients shake hands again
    Read-only: users, clients, user(selector), lifetimes, signing_kid, tenant_id,
    groups_overage_limit, refresh_acrs;
    `GET /_devidp/state` shows all of it plus the active faults and `policies` (overage limit,
    consent requirements and consents, step-up acrs).

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
from .control_api import DevIdpControl
from .groups import Group
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
    "Group",
    "LoggedRequest",
    "NonLoopbackRefused",
    "RunningDevIdp",
    "User",
    "main",
    "start",
    "summary",
]
