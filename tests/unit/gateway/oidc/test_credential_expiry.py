"""What check-config says about a client credential near its end (gateway.oidc.credential_files):
a certificate's notAfter read from GATEWAY_CLIENT_CERTIFICATE_FILE, and the client secret's
expiry as GATEWAY_CLIENT_SECRET_EXPIRES states it; quiet when more than 30 days are left."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

from support.certificates import certificate_pem, private_key_pem, rsa_key

from gateway.config.settings import Settings
from gateway.oidc.credential_files import expiry_warnings

NOW = datetime.datetime.now(datetime.UTC)
BASE: dict[str, Any] = {
    "upstream": "http://127.0.0.1:8080",
    "public_url": "https://app.test",
    "tenant_id": "contoso.example",
    "client_id": "c",
}


def certificate_settings(tmp_path: Path, days: float) -> Settings:
    key = rsa_key()
    pem = tmp_path / "tls.pem"
    pem.write_text(private_key_pem(key) + certificate_pem(key, days=days))
    return Settings(**BASE, client_certificate_file=pem)


def test_a_certificate_within_30_days_of_its_end_is_warned_about(tmp_path: Path) -> None:
    (warning,) = expiry_warnings(certificate_settings(tmp_path, 12), NOW)
    assert "client certificate" in warning and "in 12 day(s)" in warning


def test_an_expired_certificate_is_warned_about(tmp_path: Path) -> None:
    (warning,) = expiry_warnings(certificate_settings(tmp_path, 1), NOW + datetime.timedelta(2))
    assert "expired on" in warning


def test_a_certificate_with_months_left_is_not(tmp_path: Path) -> None:
    assert expiry_warnings(certificate_settings(tmp_path, 90), NOW) == []


def test_the_stated_secret_expiry_is_warned_about_30_days_ahead() -> None:
    soon = (NOW + datetime.timedelta(days=20)).date().isoformat()
    later = (NOW + datetime.timedelta(days=200)).date().isoformat()
    (warning,) = expiry_warnings(
        Settings(**BASE, client_secret="s", client_secret_expires=soon), NOW
    )
    assert "GATEWAY_CLIENT_SECRET_EXPIRES" in warning and soon in warning
    assert (
        expiry_warnings(Settings(**BASE, client_secret="s", client_secret_expires=later), NOW) == []
    )
