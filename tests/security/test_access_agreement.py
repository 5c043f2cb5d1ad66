"""The proxy and forward-auth make one access decision (gateway/auth/access.py): for a table of
route rules, token routes, identities (anonymous, three users, an API caller) and requests, the
status the proxy answers equals what /.auth/verify answers about the same request, in the nginx
spelling (X-Original-URI / X-Original-Method) and the Envoy one (/.auth/verify/<path>), and a pass
carries the same identity headers both ways.

The one intended difference is pinned too: on a public path forward-auth answers 200 without
reading the session, so it vouches for no one there, while the proxy forwards a signed-in user's
identity.
"""

from __future__ import annotations

from typing import Any, Final

import pytest
from aiohttp import ClientResponse
from support.browser import API
from support.fixtures import ROUTE_RULES as RULES
from support.fixtures import Launch, Running, signed_in
from support.upstream import upstream_headers
from yarl import URL

from security.test_path_matching import PA_PAYLOADS, raw_request

pytestmark = pytest.mark.threat("PA-15", "PA-19", "FA-01")

GATEWAY_API: Final = "api://gateway"
SCOPE: Final = "api://upstream/read"
REPORTS: Final = "api://reports/Read"
AGREEMENT_RULES: Final = [*RULES, {"path": "/api-admin/", "scopes": "admin"}]
PATHS: Final = (
    "/public/a",
    "/healthz",
    "/readers/x",
    "/writers/x",
    "/alice/x",
    "/contoso/x",
    "/bob-only/x",
    "/other-tenant/x",
    "/closed/x",
    "/orders/x",
    "/reports/q1?view=full",  # a token route: another audience's token, renewed on the way
    "/api-admin/x",
    "/anything-else",
)
AMBIGUOUS: Final = ("/public/..%2Freaders/x", "/public/%2e%2e/readers/x")
METHODS: Final = ("GET", "POST")
VOUCHED: Final = (
    "x-ms-client-principal",
    "x-ms-client-principal-name",
    "x-ms-client-principal-id",
    "x-ms-client-principal-idp",
    "x-forwarded-user",
    "x-forwarded-preferred-username",
    "x-forwarded-email",
    "x-forwarded-groups",
    "authorization",
)
IDENTITIES: Final = ("anonymous", "alice", "bob", "jose", "api-caller")


@pytest.fixture
async def judged(launch: Launch) -> Running:
    return await launch(
        scopes=SCOPE,
        policy={"rules": AGREEMENT_RULES},
        proxy={"trusted_proxies": "127.0.0.1/32"},
        api={"audiences": GATEWAY_API},
        tokens={"routes": [{"path": "/reports/", "scopes": REPORTS}], "expose_in_verify": True},
    )


async def answer(response: ClientResponse) -> tuple[int, dict[str, list[str]]]:
    """Status and the identity headers vouched for: what the upstream received from the proxy,
    or what forward-auth answered."""
    async with response:
        if response.status == 200 and response.content_type == "application/json":
            body: dict[str, Any] = await response.json()
            if "headers" in body:  # the upstream echo: what the proxy forwarded
                seen = upstream_headers(body)
                return 200, {name: seen[name] for name in VOUCHED if name in seen}
        await response.read()
        vouched = {
            name: response.headers.getall(name) for name in VOUCHED if name in response.headers
        }
        return response.status, vouched


@pytest.mark.parametrize("who", IDENTITIES)
async def test_the_proxy_and_forward_auth_agree(judged: Running, idp: Any, who: str) -> None:
    headers = dict(API)
    if who == "api-caller":
        token = idp.issue_access_token("alice", scope=f"{GATEWAY_API}/access")
        headers["Authorization"] = f"Bearer {token}"
    elif who != "anonymous":
        await signed_in(judged, user=who)
    session, base = judged.browser.session, judged.url
    disagreements: list[tuple[object, ...]] = []
    statuses: set[int] = set()
    for method in METHODS:
        for path in PATHS + AMBIGUOUS:
            proxied = await answer(
                await session.request(method, URL(base + path, encoded=True), headers=headers)
            )
            nginx = await answer(
                await session.get(
                    base + "/.auth/verify",
                    headers={**headers, "X-Original-URI": path, "X-Original-Method": method},
                )
            )
            envoy = await answer(
                await session.request(
                    method, URL(base + "/.auth/verify" + path, encoded=True), headers=headers
                )
            )
            asked = [("nginx", nginx), ("envoy", envoy)]
            statuses.add(proxied[0])
            public = path.startswith(("/public/", "/healthz"))
            for spelling, verified in asked:
                if verified[0] != proxied[0]:
                    disagreements.append((method, path, spelling, proxied[0], verified[0]))
                elif public:
                    # By design: forward-auth vouches for no one on a public path.
                    if verified[1]:
                        disagreements.append((method, path, spelling, "public", verified[1]))
                elif verified[1] != proxied[1]:
                    disagreements.append((method, path, spelling, proxied[1], verified[1]))
    assert disagreements == []
    # The table is not degenerate: every identity meets passes and refusals of its kind.
    if who == "anonymous":
        assert statuses == {200, 400, 401}
    else:
        assert {200, 400, 403} <= statuses


async def test_a_pass_vouches_for_the_same_user_with_the_same_token(judged: Running) -> None:
    """The check above compares like with like: both ways carry the user and the route's token."""
    await signed_in(judged, user="alice")
    session, base = judged.browser.session, judged.url
    proxied = await answer(await session.get(base + "/reports/q1", headers=API))
    verified = await answer(
        await session.get(base + "/.auth/verify", headers={**API, "X-Original-URI": "/reports/q1"})
    )
    assert proxied == verified
    assert proxied[1]["x-forwarded-user"] == ["0b7e2c1d-4a5f-4e3b-8c9d-1e2f3a4b5c6d"]
    assert proxied[1]["authorization"][0].startswith("Bearer ")
    public = await answer(await session.get(base + "/public/a", headers=API))
    assert public[1]["x-forwarded-user"] == ["0b7e2c1d-4a5f-4e3b-8c9d-1e2f3a4b5c6d"]


# Path tricks (THREATS A5): the table of the nginx mode, plus "%3F", which a decoding router turns
# into a "?" that would hide the rest of the path from the rule (issue 14, item 1).
QUESTION_MARKS: Final = (
    "/public%3F/../readers/x",
    "/public%3f/x/../../readers/x",
    "/public/%3F/../../readers/x",
    "/public/a%3F/../../readers/x",
    "/public%3F%2F..%2Freaders/x",
    "/readers%3F/x",
)


@pytest.mark.parametrize("target", [*PA_PAYLOADS, *QUESTION_MARKS])
async def test_every_spelling_judges_the_raw_target(judged: Running, target: str) -> None:
    """Anonymous: the proxy, nginx's forward-auth and Envoy's (the target appended to the
    verify path, sent byte for byte) give one answer, and a pass is only ever a public path."""
    proxied, _ = await raw_request(judged, target)
    nginx, _ = await raw_request(judged, "/.auth/verify", f"X-Original-URI: {target}\r\n")
    envoy, _ = await raw_request(judged, "/.auth/verify" + target)
    # ingress-nginx without auth-method sends only the absolute URL.
    ingress, _ = await raw_request(
        judged, "/.auth/verify", f"X-Original-URL: https://app.test{target}\r\n"
    )
    assert proxied in (200, 400, 401), proxied
    assert nginx == envoy == ingress == proxied, (proxied, nginx, envoy, ingress)
    if proxied == 200:
        assert target.startswith(("/public/", "/healthz")) and "%" not in target
