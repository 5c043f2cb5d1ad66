"""The cookie-secret ring settings (gateway/config/rotation.py): the next secret, the previous
ones from the environment, a file (one a line) or a directory (one a file, as a mounted Secret
with several keys, in file-name order, the kubelet's hidden entries skipped), and their rules."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

import pytest
from pydantic import ValidationError

from gateway.config.rotation import secret_ring
from gateway.config.settings import Settings

S1: Final = "1" * 40
S2: Final = "2" * 40
S3: Final = "3" * 40
BASE: Final[dict[str, Any]] = {
    "upstream": "http://127.0.0.1:8080",
    "public_url": "https://app.test",
    "tenant_id": "contoso.example",
    "client_id": "c",
    "client_secret": "s",
}


def test_the_ring_is_current_next_then_previous_in_order() -> None:
    settings = Settings(
        **BASE, cookie_secret=S3, cookie_secret_next=S2, cookie_secrets_previous=f"{S1} {S2}"
    )
    assert secret_ring(settings) == (S3.encode(), S2.encode(), (S1.encode(), S2.encode()))


def test_previous_secrets_from_a_mounted_secret_directory(tmp_path: Path) -> None:
    data = tmp_path / "..2026_01"
    data.mkdir()
    (data / "b-older").write_text(S1 + "\n")
    (data / "a-newer").write_text(S2)
    (tmp_path / "..data").symlink_to(data.name)
    for name in ("a-newer", "b-older"):
        (tmp_path / name).symlink_to(Path("..data") / name)
    settings = Settings(**BASE, cookie_secret=S3, cookie_secrets_previous_file=tmp_path)
    assert secret_ring(settings)[2] == (S2.encode(), S1.encode())


def test_previous_secrets_from_a_file(tmp_path: Path) -> None:
    listed = tmp_path / "previous"
    listed.write_text(f"{S1}\n{S2}\n")
    settings = Settings(**BASE, cookie_secret=S3, cookie_secrets_previous_file=listed)
    assert secret_ring(settings)[2] == (S1.encode(), S2.encode())


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"cookie_secret_next": S2}, "GATEWAY_COOKIE_SECRET_NEXT needs GATEWAY_COOKIE_SECRET"),
        (
            {"cookie_secret": S3, "cookie_secrets_previous": "short"},
            "GATEWAY_COOKIE_SECRETS_PREVIOUS: every secret must be at least 32 bytes",
        ),
        (
            {"cookie_secret": S3, "cookie_secrets_previous_file": "/nonexistent/previous"},
            "GATEWAY_COOKIE_SECRETS_PREVIOUS_FILE: cannot read /nonexistent/previous",
        ),
    ],
)
def test_mistakes_name_the_setting(values: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Settings(**BASE, **values)
