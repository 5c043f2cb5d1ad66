"""Start-up checks that look at the machine, run by check-config and by serve before anything
starts: the files the settings name (readable, and PEM that parses: a client certificate with its
RSA key, CA bundles that load into a TLS context), the listen addresses (free to bind), and the
optional packages a setting needs. Each problem names the setting to fix.

Settings validation stays pure (config/); these checks read files and bind sockets, never the
network beyond this host. A worker process skips the port checks: its siblings share the port.
"""

from __future__ import annotations

import datetime
import importlib.util
import socket
import ssl
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from gateway.config.problems import Problem, cannot_listen
from gateway.config.settings import Settings
from gateway.telemetry import tracing

PEM_BUNDLE_HINT: Final = "give a PEM file of one or more -----BEGIN CERTIFICATE----- blocks"


def check(settings: Settings, *, listeners: bool = True) -> list[Problem]:
    """Every problem these checks find; `listeners=False` leaves the ports alone."""
    problems = [*_files(settings), *_extras(settings)]
    if listeners:
        problems.extend(_listeners(settings))
    return problems


# ---- files ----


def _read(path: Path) -> bytes | str:
    """The file's bytes, or why it cannot be read."""
    try:
        return path.read_bytes()
    except OSError as exc:
        return f"cannot read {path}: {exc.strerror or exc}"


def _existing(path: Path | None) -> Path | None:
    # A file that does not exist is the settings' own problem ("no such file"): not twice.
    return path if path is not None and path.is_file() else None


def client_certificate_problem(path: Path, now: datetime.datetime) -> str | None:
    """Why the client certificate file cannot sign the gateway in, or None when it can."""
    data = _read(path)
    if isinstance(data, str):
        return data
    try:
        key = load_pem_private_key(data, password=None)
    except TypeError:
        return f"the private key in {path} is encrypted: store it unencrypted (a Kubernetes secret)"
    except ValueError:
        return (
            f"{path} holds no PEM private key: it must hold the RSA private key "
            "(-----BEGIN PRIVATE KEY-----) and its certificate (-----BEGIN CERTIFICATE-----)"
        )
    if not isinstance(key, rsa.RSAPrivateKey):
        return f"the private key in {path} is not RSA: Entra ID client certificates need RSA"
    try:
        certificate = x509.load_pem_x509_certificates(data)[0]
    except ValueError:
        return (
            f"{path} holds a private key but no PEM certificate: append the certificate "
            "(-----BEGIN CERTIFICATE-----) uploaded to the app registration"
        )
    public = certificate.public_key()
    if not isinstance(public, rsa.RSAPublicKey) or (
        public.public_numbers() != key.public_key().public_numbers()
    ):
        return f"the certificate in {path} does not belong to its private key"
    if certificate.not_valid_after_utc < now:
        expired = certificate.not_valid_after_utc.date().isoformat()
        return f"the certificate in {path} expired on {expired}: upload and install a new one"
    return None


def trust_problem(path: Path) -> str | None:
    """Why a CA bundle cannot be trusted for TLS, or None when it loads."""
    # A bare client context: a default one would first load the system's trust store (20 ms of
    # start-up) only to check that this file loads too.
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        context.load_verify_locations(cafile=str(path))
    except ssl.SSLError as exc:
        return f"{path} holds no usable certificate ({exc.reason or 'not PEM'}): {PEM_BUNDLE_HINT}"
    except OSError as exc:
        return f"cannot read {path}: {exc.strerror or exc}"
    return None


def _token_problem(path: Path) -> str | None:
    data = _read(path)
    if isinstance(data, str):
        return data
    return None if data.strip() else f"{path} is empty"


def _client_certificate(path: Path) -> str | None:
    return client_certificate_problem(path, datetime.datetime.now(datetime.UTC))


def _redis_client_certificate(settings: Settings) -> Callable[[Path], str | None]:
    def problem(cert_file: Path) -> str | None:
        key_file = _existing(settings.redis.key_file)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # no trust store needed to load a key
        try:
            context.load_cert_chain(str(cert_file), str(key_file) if key_file else None)
        except (ssl.SSLError, OSError) as exc:
            reason = getattr(exc, "reason", None) or exc.strerror or "not PEM"
            return (
                f"{cert_file} and its key do not load as a client certificate ({reason}): give "
                "the PEM certificate, and its PEM key in it or in GATEWAY_REDIS__KEY_FILE"
            )
        return None

    return problem


def _files(settings: Settings) -> Iterator[Problem]:
    """Each file a setting names, read the way its user will read it."""
    checks: list[tuple[str, Path | None, Callable[[Path], str | None]]] = [
        ("GATEWAY_CLIENT_CERTIFICATE_FILE", settings.client_certificate_file, _client_certificate),
        ("GATEWAY_CA_BUNDLE", settings.ca_bundle, trust_problem),
        ("GATEWAY_FEDERATED_TOKEN_FILE", settings.federated_token_file, _token_problem),
    ]
    if settings.session_store == "redis":  # the Redis files are not read otherwise
        redis = settings.redis
        checks += [
            ("GATEWAY_REDIS__CA_FILE", redis.ca_file, trust_problem),
            ("GATEWAY_REDIS__CERT_FILE", redis.cert_file, _redis_client_certificate(settings)),
            ("GATEWAY_REDIS__PASSWORD_FILE", redis.password_file, _token_problem),
        ]
    for variable, path, problem_of in checks:
        existing = _existing(path)
        text = problem_of(existing) if existing is not None else None
        if text is not None:
            yield Problem(variable, text)


# ---- packages ----


def _extras(settings: Settings) -> Iterator[Problem]:
    if settings.log.tracing and (missing := tracing.missing_extra()):
        yield Problem(
            tracing.SETTING,
            f"is true but OpenTelemetry is not installed (no module {missing}): "
            f"{tracing.INSTALL_OTEL}, or set it to false",
        )
    if settings.event_loop == "uvloop" and importlib.util.find_spec("uvloop") is None:
        yield Problem(
            "GATEWAY_EVENT_LOOP",
            "is uvloop but uvloop is not installed: install it, or set auto or asyncio",
        )


# ---- listeners ----


def bind_problem(variable: str, host: str, port: int) -> Problem | None:
    """Whether host:port can be listened on now: every address it resolves to is bound and let
    go at once, with the options the server's own sockets use."""
    try:
        addresses = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as exc:
        return cannot_listen(variable, host, port, exc)
    for family, kind, protocol, _, address in addresses:
        with socket.socket(family, kind, protocol) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                probe.bind(address)
            except OSError as exc:
                return cannot_listen(variable, host, port, exc)
    return None


def _listeners(settings: Settings) -> Iterator[Problem]:
    for variable, listen in (
        ("GATEWAY_LISTEN", settings.listen),
        ("GATEWAY_METRICS_LISTEN", settings.metrics_listen),
    ):
        if not listen:
            continue
        host, _, port = listen.rpartition(":")
        if problem := bind_problem(variable, host.strip("[]"), int(port)):
            yield problem
