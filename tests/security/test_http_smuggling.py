"""Request smuggling and framing (THREATS.md A7: HT-01, HT-03, HT-05) against a real
`python -m gateway serve` process over raw sockets, in front of an echo upstream that records
every request it receives.

Every case sends a first request whose framing is the attack, with a second request hidden where
the body would be: anonymous, to `/smuggled-<token>`. Whatever the gateway decides, the upstream
must never see that path (it would be an unauthenticated request the gateway never judged), every
request the upstream sees must carry a request id the gateway answered the client with, and a
clean request afterwards must get its own answer (no desynchronised upstream pool).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Final, Literal

import pytest
from support.raw_http import (
    REFUSED,
    Exchange,
    exchange,
    token,
)
from support.served import Served, check_after
from support.upstream import RecordingUpstream, Seen

pytestmark = pytest.mark.threat("HT-01", "HT-03", "HT-05")

HELLO_SHA256: Final = hashlib.sha256(b"hello").hexdigest()


def smuggled_request(tag: str) -> bytes:
    return (
        f"GET /smuggled-{tag} HTTP/1.1\r\nHost: app.test\r\nX-Smuggled: yes\r\n"
        "Connection: close\r\n\r\n"
    ).encode()


def assert_no_smuggling(result: Exchange, window: list[Seen], tag: str) -> None:
    answered = {v for reply in result.replies for v in reply.header("X-Request-Id")}
    for seen in window:
        assert f"smuggled-{tag}" not in seen.raw_path, "an unjudged request reached the upstream"
        assert not seen.header("X-Smuggled")
        ids = seen.header("X-Request-Id")
        assert len(ids) == 1 and ids[0] in answered, "the upstream got a request nobody answered"


# ---- HT-01, HT-03, HT-05 and the rest of A7's framing: refused, or framed exactly ----

# Placeholders in templates: {first} the first request's path, {cookie} alice's Cookie line,
# {smuggled} the hidden anonymous request.
SMUGGLED: Final = b"{smuggled}"
CHUNKED_HELLO: Final = b"5\r\nhello\r\n0\r\n\r\n" + SMUGGLED


def post(*headers: bytes, body: bytes, line: bytes = b"POST {first} HTTP/1.1") -> bytes:
    return (
        line + b"\r\nHost: app.test\r\n{cookie}" + b"".join(h + b"\r\n" for h in headers) + b"\r\n"
    ) + body


@dataclass(frozen=True)
class Framing:
    id: str
    template: bytes
    # refuse: 400/413/431 (or `allowed`), the connection closed, nothing forwarded;
    # forward: exactly the first request reaches the upstream, with the body "hello"
    expect: Literal["refuse", "forward"]
    allowed: frozenset[int] = REFUSED

    def render(self, tag: str, cookie_line: bytes) -> bytes:
        return (
            self.template.replace(b"{first}", f"/first-{tag}".encode())
            .replace(b"{cookie}", cookie_line)
            .replace(SMUGGLED, smuggled_request(tag))
        )


VERSION_REFUSED: Final = REFUSED | {505}

FRAMINGS: Final = [
    # HT-01: a bare CR must not end a header line (the table's payload, plus a hidden request).
    Framing(
        "bare-cr-before-transfer-encoding",
        post(b"X-Abc: \rxTransfer-Encoding: chunked", body=b"1\r\nA\r\n0\r\n\r\n" + SMUGGLED),
        "refuse",
    ),
    Framing(
        "bare-cr-in-value",
        post(b"X-Abc: a\rTransfer-Encoding: chunked", body=b"0\r\n\r\n" + SMUGGLED),
        "refuse",
    ),
    Framing(
        "bare-cr-in-name",
        post(b"X-A\rbc: x", b"Content-Length: 5", body=b"hello" + SMUGGLED),
        "refuse",
    ),
    # Content-Length together with Transfer-Encoding, in both orders (CL.TE and TE.CL).
    Framing(
        "content-length-then-transfer-encoding",
        post(b"Content-Length: 5", b"Transfer-Encoding: chunked", body=b"0\r\n\r\n" + SMUGGLED),
        "refuse",
    ),
    Framing(
        "transfer-encoding-then-content-length",
        post(b"Transfer-Encoding: chunked", b"Content-Length: 5", body=b"0\r\n\r\n" + SMUGGLED),
        "refuse",
    ),
    # Transfer-Encoding variants that must not be read as chunked by one hop and not the other.
    Framing(
        "te-chunked-identity",
        post(b"Transfer-Encoding: chunked, identity", body=b"0\r\n\r\n" + SMUGGLED),
        "refuse",
    ),
    Framing(
        "te-header-line-starting-with-space",
        post(b" Transfer-Encoding: chunked", body=CHUNKED_HELLO),
        "refuse",
    ),
    Framing("te-xchunked", post(b"Transfer-Encoding: xchunked", body=CHUNKED_HELLO), "refuse"),
    Framing(
        "te-space-before-colon", post(b"Transfer-Encoding : chunked", body=CHUNKED_HELLO), "refuse"
    ),
    Framing("te-identity", post(b"Transfer-Encoding: identity", body=CHUNKED_HELLO), "refuse"),
    Framing(
        "te-chunked-twice-in-one-header",
        post(b"Transfer-Encoding: chunked, chunked", body=CHUNKED_HELLO),
        "refuse",
    ),
    Framing(
        "te-two-headers",
        post(b"Transfer-Encoding: chunked", b"Transfer-Encoding: chunked", body=CHUNKED_HELLO),
        "refuse",
    ),
    Framing(
        "te-obs-fold-value", post(b"Transfer-Encoding:", b" chunked", body=CHUNKED_HELLO), "refuse"
    ),
    Framing("te-nul", post(b"Transfer-Encoding: chunked\x00", body=CHUNKED_HELLO), "refuse"),
    Framing(
        "te-vertical-tab", post(b"Transfer-Encoding:\x0bchunked", body=CHUNKED_HELLO), "refuse"
    ),
    Framing(
        "te-chunked-with-parameter",
        post(b"Transfer-Encoding: chunked;q=1", body=CHUNKED_HELLO),
        "refuse",
    ),
    Framing(
        "te-after-bare-lf",
        post(b"X-Abc: a\nTransfer-Encoding: chunked", body=b"0\r\n\r\n" + SMUGGLED),
        "refuse",
    ),
    Framing(
        "te-chunked-on-http-1.0",
        post(
            b"Transfer-Encoding: chunked",
            body=b"0\r\n\r\n" + SMUGGLED,
            line=b"POST {first} HTTP/1.0",
        ),
        "refuse",
    ),
    # Content-Length that two parsers could read differently.
    Framing(
        "cl-duplicate-different-values",
        post(b"Content-Length: 5", b"Content-Length: 50", body=b"hello" + SMUGGLED),
        "refuse",
    ),
    Framing("cl-list", post(b"Content-Length: 5, 50", body=b"hello" + SMUGGLED), "refuse"),
    Framing("cl-plus-sign", post(b"Content-Length: +5", body=b"hello" + SMUGGLED), "refuse"),
    Framing("cl-negative", post(b"Content-Length: -1", body=b"hello" + SMUGGLED), "refuse"),
    Framing("cl-hex", post(b"Content-Length: 0x5", body=b"hello" + SMUGGLED), "refuse"),
    Framing("cl-inner-space", post(b"Content-Length: 5 0", body=b"hello" + SMUGGLED), "refuse"),
    Framing(
        "cl-overflow",
        post(b"Content-Length: 99999999999999999999999", body=b"hello" + SMUGGLED),
        "refuse",
    ),
    # HT-05, verbatim from the table.
    Framing(
        "version-1o1",
        "GET / HTTP/1ö1\r\nHost: app.test\r\n{cookie}\r\n{smuggled}".encode(),
        "refuse",
        VERSION_REFUSED,
    ),
    Framing(
        "version-mathematical-digit",
        "GET / HTTP/1.𝟙\r\nHost: app.test\r\n{cookie}\r\n{smuggled}".encode(),  # noqa: RUF001
        "refuse",
        VERSION_REFUSED,
    ),
    Framing(
        "method-without-space",
        b"GET/: HTTP/1.1\r\nHost: app.test\r\n{cookie}\r\n{smuggled}",
        "refuse",
    ),
    Framing(
        "header-name-with-question-mark",
        post(b"Content-Encoding?: chunked", b"Content-Length: 5", body=b"hello" + SMUGGLED),
        "refuse",
    ),
    Framing(
        "content-length-arabic-indic-digits",
        post("Content-Length: ١٠".encode(), body=b"helloworld" + SMUGGLED),  # noqa: RUF001
        "refuse",
    ),
    # More request-line grammar.
    Framing(
        "request-line-without-version",
        b"GET {first}\r\nHost: app.test\r\n{cookie}\r\n",
        "refuse",
        VERSION_REFUSED,
    ),
    Framing(
        "request-line-http-0.9-with-headers",
        b"GET {first} HTTP/0.9\r\nHost: app.test\r\n{cookie}\r\n",
        "refuse",
        VERSION_REFUSED,
    ),
    Framing(
        "request-line-http-2.0-as-text",
        b"GET {first} HTTP/2.0\r\nHost: app.test\r\n{cookie}\r\n",
        "refuse",
        VERSION_REFUSED,
    ),
    Framing(
        "request-line-junk-after-version",
        b"GET {first} HTTP/1.1 junk\r\nHost: app.test\r\n{cookie}\r\n",
        "refuse",
    ),
    Framing(
        "request-line-lowercase-version",
        b"GET {first} http/1.1\r\nHost: app.test\r\n{cookie}\r\n",
        "refuse",
        VERSION_REFUSED,
    ),
    Framing(
        "request-line-tabs", b"GET\t{first}\tHTTP/1.1\r\nHost: app.test\r\n{cookie}\r\n", "refuse"
    ),
    Framing(
        "request-line-space-in-target",
        b"GET {first} x HTTP/1.1\r\nHost: app.test\r\n{cookie}\r\n",
        "refuse",
    ),
    Framing(
        "request-line-del-in-target",
        b"GET {first}\x7f HTTP/1.1\r\nHost: app.test\r\n{cookie}\r\n",
        "refuse",
    ),
    Framing(
        "request-line-bare-lf",
        b"GET {first} HTTP/1.1\nHost: app.test\n{cookie}\n",
        "refuse",
    ),
    # Header grammar: obs-fold, NUL/CR/LF in names and values, odd names, Host.
    Framing("obs-fold", post(b"X-Abc: a", b" b", b"Content-Length: 0", body=b""), "refuse"),
    Framing("nul-in-value", post(b"X-Abc: a\x00b", b"Content-Length: 0", body=b""), "refuse"),
    Framing("nul-in-name", post(b"X-A\x00bc: a", b"Content-Length: 0", body=b""), "refuse"),
    Framing("lf-in-name", post(b"X-A\nbc: a", b"Content-Length: 0", body=b""), "refuse"),
    Framing("space-in-name", post(b"X Abc: a", b"Content-Length: 0", body=b""), "refuse"),
    Framing("empty-name", post(b": a", b"Content-Length: 0", body=b""), "refuse"),
    Framing("line-without-colon", post(b"X-Abc", b"Content-Length: 0", body=b""), "refuse"),
    Framing(
        "duplicate-host", post(b"Host: other.example", b"Content-Length: 0", body=b""), "refuse"
    ),
    Framing(
        "missing-host",
        b"GET {first} HTTP/1.1\r\n{cookie}\r\n",
        "refuse",
    ),
    # HT-03: chunk-size lines and chunk extensions.
    Framing(
        "chunk-extension-bare-lf",
        post(b"Transfer-Encoding: chunked", body=b"1;a\nb\r\nA\r\n0\r\n\r\n" + SMUGGLED),
        "refuse",
    ),
    Framing(
        "chunk-size-bare-lf",
        post(b"Transfer-Encoding: chunked", body=b"1\nA\r\n0\r\n\r\n" + SMUGGLED),
        "refuse",
    ),
    Framing(
        "chunk-size-0x-prefix",
        post(b"Transfer-Encoding: chunked", body=b"0x5\r\nhello\r\n0\r\n\r\n" + SMUGGLED),
        "refuse",
    ),
    Framing(
        "chunk-size-negative",
        post(b"Transfer-Encoding: chunked", body=b"-5\r\nhello\r\n0\r\n\r\n" + SMUGGLED),
        "refuse",
    ),
    Framing(
        "chunk-size-trailing-space",
        post(b"Transfer-Encoding: chunked", body=b"5 \r\nhello\r\n0\r\n\r\n" + SMUGGLED),
        "refuse",
    ),
    Framing(
        "chunk-size-overflow",
        post(
            b"Transfer-Encoding: chunked",
            body=b"fffffffffffffffff5\r\nhello\r\n0\r\n\r\n" + SMUGGLED,
        ),
        "refuse",
    ),
    Framing(
        "chunk-data-longer-than-size",
        post(b"Transfer-Encoding: chunked", body=b"5\r\nhelloXX\r\n0\r\n\r\n" + SMUGGLED),
        "refuse",
    ),
    Framing(
        "chunk-data-bare-lf",
        post(b"Transfer-Encoding: chunked", body=b"5\r\nhello\n0\r\n\r\n" + SMUGGLED),
        "refuse",
    ),
    Framing(
        "last-chunk-bare-lf",
        post(b"Transfer-Encoding: chunked", body=b"5\r\nhello\r\n0\n\n" + SMUGGLED),
        "refuse",
    ),
    Framing(
        "chunk-extension-quoted-lf",
        post(b"Transfer-Encoding: chunked", body=b'5;a="b\nc"\r\nhello\r\n0\r\n\r\n' + SMUGGLED),
        "refuse",
    ),
    Framing(
        "chunk-extension-nul",
        post(b"Transfer-Encoding: chunked", body=b"5;a\x00\r\nhello\r\n0\r\n\r\n" + SMUGGLED),
        "refuse",
    ),
    Framing(
        "trailer-bare-lf",
        post(
            b"Transfer-Encoding: chunked",
            body=b"5\r\nhello\r\n0\r\nX-T: 1\nTransfer-Encoding: chunked\r\n\r\n" + SMUGGLED,
        ),
        "refuse",
    ),
    # Valid spellings: forwarded, with exactly the body the client framed.
    Framing(
        "te-extra-whitespace", post(b"Transfer-Encoding:  chunked", body=CHUNKED_HELLO), "forward"
    ),
    Framing(
        "te-tab-before-value", post(b"Transfer-Encoding:\tchunked", body=CHUNKED_HELLO), "forward"
    ),
    Framing(
        "te-trailing-whitespace",
        post(b"Transfer-Encoding: chunked  ", body=CHUNKED_HELLO),
        "forward",
    ),
    Framing("te-uppercase", post(b"Transfer-Encoding: CHUNKED", body=CHUNKED_HELLO), "forward"),
    Framing(
        "chunk-extension",
        post(b"Transfer-Encoding: chunked", body=b"5;name=value\r\nhello\r\n0\r\n\r\n" + SMUGGLED),
        "forward",
    ),
    Framing(
        "chunked-with-trailer",
        post(b"Transfer-Encoding: chunked", body=b"5\r\nhello\r\n0\r\nX-T: 1\r\n\r\n" + SMUGGLED),
        "forward",
    ),
    Framing(
        "cl-surrounding-whitespace",
        post(b"Content-Length:  5  ", body=b"hello" + SMUGGLED),
        "forward",
    ),
    Framing("cl-exact", post(b"Content-Length: 5", body=b"hello" + SMUGGLED), "forward"),
]


@pytest.mark.parametrize("case", FRAMINGS, ids=[c.id for c in FRAMINGS])
def test_framing_is_refused_or_exact_and_nothing_is_smuggled(
    served: Served, recorder: RecordingUpstream, case: Framing
) -> None:
    tag = token()
    mark = recorder.mark()
    result = exchange(served.port, case.render(tag, served.cookie_line))
    window = check_after(served, recorder, mark, tag)
    assert_no_smuggling(result, window, tag)
    statuses = [r.status for r in result.replies]
    if case.expect == "refuse":
        # An answer the client can read, or at least a closed connection.
        assert (statuses and statuses[0] in case.allowed) or not statuses, statuses
        assert not [s for s in statuses if s < 400], statuses
        assert result.closed  # a connection whose framing is in doubt is never reused
        assert window == [], [s.raw_path for s in window]  # nothing at all was forwarded
    else:
        assert statuses and statuses[0] == 200, statuses
        echoed = result.replies[0].echo()
        assert echoed["raw_path"] == f"/first-{tag}"
        assert (echoed["body_length"], echoed["body_sha256"]) == (5, HELLO_SHA256)
        assert [s.raw_path for s in window] == [f"/first-{tag}"]
        # What follows the body is the client's next request, judged like any other: anonymous.
        assert all(s == 401 for s in statuses[1:]), statuses
    for reply in result.replies:
        assert b"Traceback" not in reply.body
