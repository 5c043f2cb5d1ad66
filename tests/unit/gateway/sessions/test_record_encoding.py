"""What a session record and a pending sign-in are stored as (gateway.sessions.store and .flows):
every field, in the JSON that dataclasses.asdict gave before the encoders were written out field
by field, so records written by either read back alike; and a field added later cannot be left
out of the encoding unnoticed."""

from __future__ import annotations

import json
from dataclasses import asdict, fields
from typing import Any

from gateway.sessions.flows import PendingSignIn
from gateway.sessions.store import FORMAT_VERSION, SessionRecord, UpstreamToken

CLAIMS: dict[str, Any] = {
    "oid": "00000000-0000-0000-0000-00000000a11c",
    "tid": "00000000-0000-0000-0000-0000000000c0",
    "name": "Alice Ünïcode",
    "roles": ["Reader", "Writer"],
    "nested": {"a": [1, 2.5, None, True]},
}


def record() -> SessionRecord:
    return SessionRecord(
        user_key="00000000-0000-0000-0000-00000000a11c.00000000-0000-0000-0000-0000000000c0",
        home_account_id="a11c.c0",
        claims=CLAIMS,
        created_at=1_800_000_000.5,
        expires_at=1_800_086_400,
        id_token="eyJhbGciOiJSUzI1NiJ9.eyJzaWQiOiJ4In0.c2ln",
        tokens={
            "api://upstream/read": UpstreamToken("at-1", 1_800_003_600.0, 1_800_003_300.0),
            "api://reports/Read offline_access": UpstreamToken(
                "at-2", 1_800_003_601, 1_800_003_000
            ),
        },
        groups=("g1", "g2"),
    )


def test_a_session_record_encodes_as_asdict_did_and_reads_back() -> None:
    original = record()
    as_before = asdict(original)
    del as_before["derived"]
    expected = json.dumps({"v": FORMAT_VERSION, **as_before}, separators=(",", ":")).encode()
    assert original.encode() == expected
    assert SessionRecord.decode(original.encode()) == original


def test_a_session_record_without_tokens_or_groups_reads_back() -> None:
    bare = SessionRecord("u", "h", {"oid": "u"}, 1.0, 2.0)
    assert SessionRecord.decode(bare.encode()) == bare


def test_every_stored_field_of_a_session_record_is_encoded() -> None:
    stored = {f.name for f in fields(SessionRecord) if f.name != "derived"}
    assert json.loads(record().encode()).keys() == stored | {"v"}


def test_a_pending_sign_in_encodes_as_asdict_did_and_reads_back() -> None:
    pending = PendingSignIn(
        msal_flow={"state": "s", "nonce": "n", "code_verifier": "v", "scope": ["openid"]},
        return_to="/reports?q=1",
        browser_binding="b" * 43,
        scopes=("api://upstream/read",),
    )
    assert pending.encode() == json.dumps(asdict(pending), separators=(",", ":")).encode()
    assert PendingSignIn.decode(pending.encode()) == pending
    assert json.loads(pending.encode()).keys() == {f.name for f in fields(PendingSignIn)}
