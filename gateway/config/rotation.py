"""Settings for secrets that rotate: the cookie-secret ring (current, next, previous) and the
client secret's known expiry. Parsing and rules only; gateway/sessions/sealing.py uses the ring.

The order rule, which docs/security.md spells out as a procedure: GATEWAY_COOKIE_SECRET seals
and names everything written; GATEWAY_COOKIE_SECRET_NEXT (the secret about to be promoted) and
GATEWAY_COOKIE_SECRETS_PREVIOUS (secrets promoted away from, in the order given; from a directory,
in file-name order) only open what other replicas wrote. The current secret is always tried first.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Final

from pydantic import BeforeValidator, SecretStr
from pydantic_settings import NoDecode

from gateway.config.advanced import split_words

if TYPE_CHECKING:
    from gateway.config.settings import Settings

PREVIOUS_FILE: Final = "GATEWAY_COOKIE_SECRETS_PREVIOUS_FILE"
# Secrets are words: space- (or comma-) separated in the environment, one a line in a file.
CookieSecrets = Annotated[tuple[SecretStr, ...], NoDecode, BeforeValidator(split_words)]


def read_previous_secrets(path: Path) -> tuple[str, ...]:
    """The secrets in a file (one a line) or a directory (one a file, such as a mounted Secret
    with several keys; hidden entries like Kubernetes' `..data` are skipped), in file-name
    order. ValueError naming the setting when it cannot be read or holds nothing."""
    try:
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if not p.name.startswith(".") and p.is_file())
            found = tuple(s for p in files if (s := p.read_text(encoding="utf-8").strip()))
        else:
            found = tuple(path.read_text(encoding="utf-8").split())
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ValueError(f"{PREVIOUS_FILE}: cannot read {path}: {reason}") from None
    if not found:
        raise ValueError(f"{PREVIOUS_FILE}: {path} holds no secret")
    return found


def read_rotation_files(data: dict[str, Any]) -> dict[str, Any]:
    """The model's input with GATEWAY_COOKIE_SECRETS_PREVIOUS read from its _FILE form."""
    path = data.get("cookie_secrets_previous_file")
    if not path:
        return data
    if data.get("cookie_secrets_previous"):
        raise ValueError(f"set only one of GATEWAY_COOKIE_SECRETS_PREVIOUS and {PREVIOUS_FILE}")
    return {**data, "cookie_secrets_previous": read_previous_secrets(Path(path))}


def rotation_problems(settings: Settings, min_bytes: int) -> list[str]:
    """The rules for the ring, one line each naming the settings involved."""
    problems: list[str] = []
    extra = (
        [("GATEWAY_COOKIE_SECRET_NEXT", settings.cookie_secret_next)]
        if (settings.cookie_secret_next is not None)
        else []
    )
    extra += [("GATEWAY_COOKIE_SECRETS_PREVIOUS", s) for s in settings.cookie_secrets_previous]
    if extra and settings.cookie_secret is None:
        problems.append(
            f"{extra[0][0]} needs GATEWAY_COOKIE_SECRET: the current secret is the one that seals"
        )
    for name, secret in extra:
        size = len(secret.get_secret_value().encode())
        if size < min_bytes:
            problems.append(f"{name}: every secret must be at least {min_bytes} bytes (got {size})")
    return problems


def secret_ring(settings: Settings) -> tuple[bytes | None, bytes | None, tuple[bytes, ...]]:
    """(current, next, previous) as bytes for the Sealer and the assertion signer."""

    def raw(secret: SecretStr | None) -> bytes | None:
        return secret.get_secret_value().encode() if secret is not None else None

    previous = tuple(s.get_secret_value().encode() for s in settings.cookie_secrets_previous)
    return raw(settings.cookie_secret), raw(settings.cookie_secret_next), previous
