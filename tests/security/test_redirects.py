"""Open redirects (THREATS.md A1: RD-01 to RD-19). Return-target validation in
gateway.endpoints.redirects first, with no network: the open-redirect corpus in
data/open_redirects.txt (each case marked with the rows of its section), the positive cases, and a
property test of the safety invariant over arbitrary text. Then through a running gateway: the
sign-in and sign-out return targets, and the absolute-form request line.

Every test here checks RD-01's invariant, that the target never leaves the origin; the module's
marker says so, and each test adds the rows it checks beyond it.
"""

from __future__ import annotations

import asyncio
import codecs
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal
from urllib.parse import unquote, urljoin, urlsplit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support.fixtures import Running, signed_in, stored_keys

from gateway.endpoints.redirects import MAX_TARGET_LENGTH, UnsafeRedirect, safe_return_path
from gateway.errors import BadRequest

pytestmark = pytest.mark.threat("RD-01")

ORIGIN: Final = "https://app.example.com"
CORPUS_FILE: Final = Path(__file__).parent / "data" / "open_redirects.txt"
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f]")

Verdict = Literal["reject", "accept", "any"]
_VERDICTS: Final[dict[str, Verdict]] = {"reject": "reject", "accept": "accept", "any": "any"}


@dataclass(frozen=True, slots=True)
class Case:
    line: int
    verdict: Verdict
    payload: str
    expected: str | None
    threats: tuple[str, ...] = ()  # the catalogue rows its section of the corpus names

    @property
    def id(self) -> str:
        shown = ascii(self.payload)
        return f"L{self.line}-{self.verdict}-{shown[:60]}"


def _decode(text: str) -> str:
    return codecs.decode(text, "unicode_escape")


def load_corpus() -> list[Case]:
    cases: list[Case] = []
    threats: tuple[str, ...] = ()
    for number, raw in enumerate(CORPUS_FILE.read_text(encoding="ascii").splitlines(), start=1):
        if raw.startswith("# ---"):
            threats = tuple(re.findall(r"RD-\d\d", raw))
        if not raw or raw.startswith("#"):
            continue
        word, payload, *rest = raw.split(" ")
        verdict = _VERDICTS[word]
        assert (verdict == "accept") == (len(rest) == 1), f"line {number}: expected field"
        expected = _decode(rest[0]) if rest else None
        cases.append(Case(number, verdict, _decode(payload), expected, threats))
    return cases


CORPUS: Final = load_corpus()


def check_invariant(target: str | None) -> str | None:
    """Run safe_return_path and assert the A1 invariant on whatever it returns.

    Returns the path, or None when the target was refused with UnsafeRedirect. Any other exception
    (a ValueError from urlsplit, say) propagates and fails the test: it would be a 500.
    """
    try:
        result = safe_return_path(target, ORIGIN)
    except UnsafeRedirect:
        return None
    assert isinstance(result, str)
    assert result.startswith("/")
    assert not result.startswith(("//", "/\\"))
    assert not _CONTROL.search(result), ascii(result)
    assert "\\" not in result
    assert result.isascii(), ascii(result)
    path = unquote(urlsplit(result).path)
    assert not path.startswith(("//", "/\\")), ascii(result)
    resolved = urlsplit(urljoin(ORIGIN + "/x", result))
    assert (resolved.scheme, resolved.netloc) == ("https", "app.example.com"), ascii(result)
    return result


def test_corpus_is_large_and_mostly_hostile() -> None:
    verdicts = [case.verdict for case in CORPUS]
    assert len(CORPUS) >= 150
    assert verdicts.count("reject") > 3 * verdicts.count("accept")


@pytest.mark.parametrize(
    "case",
    [
        pytest.param(c, id=c.id, marks=[pytest.mark.threat(*c.threats)] if c.threats else [])
        for c in CORPUS
    ],
)
def test_corpus_payload_gets_its_verdict_and_never_leaves_the_origin(case: Case) -> None:
    result = check_invariant(case.payload)
    if case.verdict == "reject":
        assert result is None, f"accepted as {result!r}"
    elif case.verdict == "accept":
        assert result == case.expected


@pytest.mark.threat("RD-13")
@pytest.mark.parametrize("target", [None, ""])
def test_absent_or_empty_target_means_the_site_root(target: str | None) -> None:
    assert safe_return_path(target, ORIGIN) == "/"


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("/", "/"),
        ("/path?q=1#frag", "/path?q=1#frag"),
        ("https://app.example.com/a?b=c", "/a?b=c"),
        ("https://app.example.com", "/"),
        ("/a/b%20c", "/a/b%20c"),
        ("/reports/2024/q1?sort=desc&page=2", "/reports/2024/q1?sort=desc&page=2"),
    ],
)
def test_same_origin_target_comes_back_as_a_path(target: str, expected: str) -> None:
    assert safe_return_path(target, ORIGIN) == expected


@pytest.mark.threat("RD-15")
def test_unsafe_redirect_is_a_bad_request_not_an_internal_error() -> None:
    with pytest.raises(UnsafeRedirect) as caught:
        safe_return_path("//evil.com", ORIGIN)
    assert isinstance(caught.value, BadRequest)
    assert caught.value.status == 400
    assert "evil.com" not in str(caught.value)


@pytest.mark.threat("RD-19")
def test_query_parameters_never_move_the_host() -> None:
    result = safe_return_path("https://app.example.com/cb?x=//evil.com", ORIGIN)
    assert result == "/cb?x=//evil.com"
    assert urlsplit(urljoin(ORIGIN + "/", result)).netloc == "app.example.com"


@pytest.mark.threat("RD-19")
def test_allow_listed_host_as_a_prefix_of_another_host_is_refused() -> None:
    with pytest.raises(UnsafeRedirect):
        safe_return_path("https://app.example.com.evil.com/cb", ORIGIN)


@pytest.mark.threat("RD-13")
@pytest.mark.parametrize(
    "target", ["app.example.com/redirect", "@evil.com", "<>//evil.com", "evil.com", "a/b"]
)
def test_scheme_less_values_are_refused_not_guessed_at(target: str) -> None:
    with pytest.raises(UnsafeRedirect):
        safe_return_path(target, ORIGIN)


def test_state_carried_target_is_refused_after_decoding() -> None:
    # The callback sees the value again after the query string is decoded: state=%2F%2Fevil.com.
    with pytest.raises(UnsafeRedirect):
        safe_return_path(unquote("%2F%2Fevil.com"), ORIGIN)


@pytest.mark.parametrize(
    ("target", "accepted"),
    [
        ("/" + "a" * (MAX_TARGET_LENGTH - 1), True),
        ("/" + "a" * MAX_TARGET_LENGTH, False),
        ("/" + "a" * 100_000, False),
        ("//evil.com/" + "a" * 10_000, False),
        ("https://app.example.com/" + "a" * MAX_TARGET_LENGTH, False),
    ],
    ids=["at-limit", "one-over", "100k", "long-protocol-relative", "long-absolute"],
)
def test_length_limit_is_enforced(target: str, accepted: bool) -> None:
    result = check_invariant(target)
    assert (result is not None) == accepted


_FRAGMENTS: Final = [
    "/",
    "//",
    "\\",
    "%2f",
    "%2F",
    "%5c",
    "%2e",
    "%00",
    "%09",
    "%0a",
    "%20",
    "%40",
    ".",
    "..",
    "@",
    ":",
    "?",
    "#",
    "[",
    "]",
    ";",
    "\t",
    "\n",
    "\r",
    "\x0b",
    "\x00",
    " ",
    "\u3002",
    "\uff0e",
    "\uff0f",
    "\u2215",
    "https:",
    "http:",
    "https://",
    "javascript:",
    "data:",
    "app.example.com",
    "APP.EXAMPLE.COM",
    "app.example.com:443",
    "evil.com",
    "evil.com:80",
    ".auth/",
    "a",
]


# Weighted by repetition towards the shapes that reach the absolute-URL branch.
_SCHEMES: Final = ["https:"] * 4 + ["", "", "http:", "HTTPS:", "javascript:", "data:", "x:"]
_SLASHES: Final = ["//"] * 4 + ["", "/", "///", "\\\\", "/\\", "\\/", "/\t/", "%2f%2f"]
_AUTHORITIES: Final = [
    "app.example.com",
    "APP.example.com",
    "evil.com",
    "app.example.com.evil.com",
    "app.example.com:443",
    "app.example.com@evil.com",
    "evil.com\\@app.example.com",
    "[::1]",
    "[",
    "]",
    "@",
    ":",
    "%40",
    "\u3002",
]


@st.composite
def _targets(draw: st.DrawFn) -> str:
    """Arbitrary text half of the time, otherwise scheme + slashes + authority + path pieces."""
    if draw(st.booleans()):
        return draw(st.text(max_size=40))
    printable = st.characters(min_codepoint=0x21, max_codepoint=0x7E)
    piece = st.sampled_from(_FRAGMENTS) | st.text(printable, min_size=1, max_size=3)
    return (
        draw(st.sampled_from(_SCHEMES))
        + draw(st.sampled_from(_SLASHES))
        + "".join(draw(st.lists(st.sampled_from(_AUTHORITIES) | piece, max_size=3)))
        + "".join(draw(st.lists(piece, max_size=6)))
    )


@settings(max_examples=400, deadline=None, database=None, derandomize=True)
@given(_targets())
def test_any_text_is_refused_or_becomes_a_same_origin_path(target: str) -> None:
    check_invariant(target)


_PRINTABLE: Final = st.characters(min_codepoint=0x21, max_codepoint=0x7E)


@settings(max_examples=300, deadline=None, database=None, derandomize=True)
@given(
    st.sampled_from(["https", "HTTPS", "http", "javascript", "x"]),
    st.sampled_from(["//", "/", "", "///"]),
    st.text(_PRINTABLE, max_size=25) | st.sampled_from(_AUTHORITIES),
    st.text(_PRINTABLE, max_size=10),
)
def test_absolute_url_with_any_authority_is_refused_or_same_origin(
    scheme: str, slashes: str, authority: str, tail: str
) -> None:
    check_invariant(f"{scheme}:{slashes}{authority}/{tail}")


@settings(max_examples=200, deadline=None, database=None, derandomize=True)
@given(st.text(alphabet=st.characters(codec="ascii", exclude_characters="\\"), max_size=30))
def test_absolute_url_on_the_public_origin_keeps_its_path_or_is_refused(tail: str) -> None:
    result = check_invariant(ORIGIN + "/" + tail)
    if result is not None:
        assert urljoin(ORIGIN + "/x", result).startswith(ORIGIN + "/")


# ---- through a running gateway ----


@pytest.mark.threat("RD-15")
async def test_unsafe_return_targets_are_refused_before_sign_in(gateway: Running) -> None:
    for target in ("//evil.com", "https://evil.com/", "/\\evil.com", "javascript:alert(1)"):
        response = await gateway.browser.get(
            "/.auth/login/aad", params={"post_login_redirect_uri": target}
        )
        assert response.status == 400
        assert "Location" not in response.headers
    assert stored_keys(gateway) == []


@pytest.mark.threat("RD-17")
async def test_absolute_form_request_line_never_names_a_foreign_host(gateway: Running) -> None:
    """RD-17: the sign-in redirect is built from the path, never from the request line's URL."""
    host, port = gateway.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(
        b"GET http://evil.com/evil.com HTTP/1.1\r\nHost: app.test\r\n"
        b"Accept: text/html\r\nSec-Fetch-Mode: navigate\r\nConnection: close\r\n\r\n"
    )
    await writer.drain()
    head = (await reader.read(4096)).decode("latin-1")
    writer.close()
    await writer.wait_closed()
    location = next(line for line in head.split("\r\n") if line.lower().startswith("location:"))
    target = location.split(":", 1)[1].strip()
    assert target.startswith("/.auth/login/aad")
    assert "evil.com" not in target.split("post_login_redirect_uri=")[0]
    assert not unquote(target.split("post_login_redirect_uri=")[-1]).startswith("//")


async def test_logout_refuses_a_foreign_return_target(gateway: Running) -> None:
    await signed_in(gateway)
    response = await gateway.browser.get("/.auth/logout?post_logout_redirect_uri=//evil.com")
    assert response.status == 400
    assert "Location" not in response.headers


# ---- under a path prefix, and with return hosts under a shared cookie domain (issue 16) ----

PREFIX: Final = "/payroll"
RETURN_HOST: Final = "wiki.example.com"


def _allowed(netloc: str) -> bool:
    return netloc in (RETURN_HOST, f"{RETURN_HOST}:443")


def check_scoped_invariant(target: str | None) -> str | None:
    """safe_return_path with a prefix and one return host: the result is a path inside the
    prefix on the public origin, or an https URL on exactly that host; or a refusal."""
    try:
        result = safe_return_path(target, ORIGIN, prefix=PREFIX, other_host=_allowed)
    except UnsafeRedirect:
        return None
    assert isinstance(result, str)
    assert not _CONTROL.search(result) and "\\" not in result and result.isascii(), ascii(result)
    resolved = urlsplit(urljoin(ORIGIN + PREFIX + "/x", result))
    if result.startswith("/"):
        assert (resolved.scheme, resolved.netloc) == ("https", "app.example.com"), ascii(result)
        for path in (resolved.path, unquote(resolved.path)):
            assert path == PREFIX or path.startswith(PREFIX + "/"), ascii(result)
            assert path != PREFIX + "/.auth", ascii(result)
            assert not path.startswith(PREFIX + "/.auth/"), ascii(result)
    else:
        assert resolved.scheme == "https" and _allowed(resolved.netloc), ascii(result)
        assert resolved.username is None and resolved.password is None
        path = unquote(resolved.path)
        assert not path.startswith(("//", "/.auth/")) and path != "/.auth", ascii(result)
    return result


@pytest.mark.parametrize(
    "case",
    [
        pytest.param(c, id=c.id, marks=[pytest.mark.threat(*c.threats)] if c.threats else [])
        for c in CORPUS
    ],
)
def test_corpus_under_a_prefix_with_a_return_host_never_leaves_the_allowed_places(
    case: Case,
) -> None:
    result = check_scoped_invariant(case.payload)
    if case.verdict == "reject":
        assert result is None, f"accepted as {result!r}"


@pytest.mark.threat("RD-19")
@pytest.mark.parametrize(
    ("target", "expected"),
    [
        (None, "/payroll/"),
        ("", "/payroll/"),
        ("/payroll", "/payroll"),
        ("/payroll/", "/payroll/"),
        ("/payroll/reports?q=1#f", "/payroll/reports?q=1#f"),
        ("/payroll?tab=2", "/payroll?tab=2"),
        ("/payroll#top", "/payroll#top"),
        ("https://app.example.com/payroll?tab=2", "/payroll?tab=2"),
        ("https://app.example.com/payroll/a", "/payroll/a"),
        ("https://wiki.example.com/page?x=1", "https://wiki.example.com/page?x=1"),
        ("https://WIKI.example.com", "https://wiki.example.com/"),
        ("https://wiki.example.com:443/", "https://wiki.example.com:443/"),
        ("https://wiki.example.com/.authx", "https://wiki.example.com/.authx"),
    ],
)
def test_targets_inside_the_prefix_or_on_a_return_host_are_kept(
    target: str | None, expected: str
) -> None:
    assert check_scoped_invariant(target) == expected


@pytest.mark.threat("RD-19")
@pytest.mark.parametrize(
    "target",
    [
        "/",
        "/payrollx",
        "/payroll-other/",
        "/other/payroll/",
        "/payroll/../x",
        "/payroll/%2e%2e/x",
        "/payroll%2f..%2fx",
        "/payroll%2Fx",
        "/payroll%3F/../x",
        "/payrollx?/payroll/",
        "/x?/payroll/",
        "/%70ayroll/",
        "/payroll/.auth/logout",
        "/payroll/%2eauth/me",
        "/payroll/.auth",
        "https://app.example.com/",
        "https://app.example.com/other",
        "http://wiki.example.com/",
        "https://wiki.example.com:8443/",
        "https://wiki.example.com.evil.com/",
        "https://evil.com@wiki.example.com/",
        "https://wiki.example.com@evil.com/",
        "https://sub.wiki.example.com/",
        "https://example.com/",
        "//wiki.example.com/",
        "https://wiki.example.com//evil.com",
        "https://wiki.example.com/%2f%2fevil.com",
        "https://wiki.example.com/.auth/me",
        "https://wiki.example.com/a/../b",
    ],
)
def test_targets_outside_the_prefix_or_the_return_hosts_are_refused(target: str) -> None:
    assert check_scoped_invariant(target) is None


@settings(max_examples=400, deadline=None, database=None, derandomize=True)
@given(_targets())
def test_any_text_is_refused_or_stays_inside_the_prefix_or_the_return_host(target: str) -> None:
    check_scoped_invariant(target)
