"""Settings for the Redis session store (GATEWAY_REDIS__*): standalone, Sentinel or Cluster,
TLS, credentials, pool and timeouts. The other groups are in config/advanced.py."""

from __future__ import annotations

from pathlib import Path
from typing import Literal
from urllib.parse import SplitResult, parse_qs, urlsplit

from pydantic import (
    Field,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    SecretStr,
    field_validator,
)

from gateway.config.advanced import SettingsGroup, SpaceSeparated, is_loopback_host


class RedisSettings(SettingsGroup):
    """How the redis store connects: one server (GATEWAY_REDIS_URL), a Sentinel-managed master,
    or a Redis Cluster; TLS, credentials, pool and timeouts."""

    max_connections: PositiveInt = Field(
        64,
        description="Most connections to Redis per process (per node with a cluster); further "
        "calls wait for a free one.",
    )
    socket_timeout_seconds: PositiveFloat = Field(
        1.0, description="Longest wait for a Redis reply (or a free pooled connection)."
    )
    connect_timeout_seconds: PositiveFloat = Field(1.0, description="Redis connect timeout.")
    username: str | None = Field(
        None, min_length=1, description="Redis ACL user (instead of a user in GATEWAY_REDIS_URL)."
    )
    password: SecretStr | None = Field(
        None,
        min_length=1,
        description="Redis password (instead of one in GATEWAY_REDIS_URL).",
    )
    password_file: Path | None = Field(
        None,
        description="File holding the Redis password, re-read for every new connection so a "
        "rotated secret is picked up without a restart.",
    )
    db: int | None = Field(
        None,
        ge=0,
        description="Database index; default: the one in GATEWAY_REDIS_URL, else 0. Honoured "
        "with sentinels too; a cluster has only 0.",
    )
    tls: bool = Field(
        False,
        description="Speak TLS to Redis (and to the sentinels). rediss:// URLs imply it; set it "
        "for sentinels, which have no URL.",
    )
    ca_file: Path | None = Field(
        None, description="PEM CA bundle trusted for Redis TLS; default: the system store."
    )
    cert_file: Path | None = Field(
        None, description="PEM client certificate for mutual TLS (may also hold the key)."
    )
    key_file: Path | None = Field(
        None, description="PEM private key of the client certificate, if not in it."
    )
    check_hostname: bool = Field(
        True,
        description="Require the Redis certificate to name the host connected to. Sentinels "
        "announce masters by IP address: their certificates then need IP names, or set false "
        "(the CA is still checked).",
    )
    sentinels: SpaceSeparated = Field(
        (),
        description="host:port of each Redis Sentinel, space-separated; set, the master is found "
        "through them (and followed across failovers) and GATEWAY_REDIS_URL is not used.",
    )
    sentinel_master: str = Field(
        "mymaster", min_length=1, description="Name the sentinels monitor the master under."
    )
    sentinel_password: SecretStr | None = Field(
        None, min_length=1, description="Password of the sentinels themselves (requirepass)."
    )
    replica_acks: NonNegativeInt | Literal["all"] | None = Field(
        None,
        description="Replicas that must confirm each write (Redis WAIT) before it counts as "
        "done. all (the default with sentinels): every replica in sync with the master, at least "
        "one while one is up, so a confirmed write survives the loss of any one node; a write "
        "waits for the slowest replica. A number N: N, fewer while fewer are up; faster, but a "
        "failover that promotes a replica that did not confirm a write loses it. Without "
        "sentinels: default 0, and all is not available.",
    )
    replica_max_lag_seconds: PositiveInt = Field(
        5,
        description="With replica_acks all, a replica whose last acknowledgement to the master "
        "is older than this (its INFO replication lag) stops counting until it catches up. "
        "Lower: writes are refused for a shorter time when a replica hangs; higher: a replica "
        "that is merely slow keeps every write for longer. The default matches the sentinels, "
        "which do not promote a replica silent for 5 s.",
    )
    cluster: bool = Field(
        False,
        description="GATEWAY_REDIS_URL names any node of a Redis Cluster; the gateway discovers "
        "the others and follows slot moves.",
    )
    allow_insecure: bool = Field(
        False,
        description="Allow a Redis (or sentinel) off loopback without TLS or without a "
        "password. Only for a network nobody else can reach.",
    )

    @field_validator("replica_acks", mode="before")
    @classmethod
    def _acks(cls, value: object) -> object:
        """One message for a bad value, not one per member of the union."""
        if isinstance(value, bool):
            raise ValueError(f"{value!r} is neither all nor a number of replicas (0 or more)")
        if value is None or value == "all" or (isinstance(value, int) and value >= 0):
            return value
        if isinstance(value, str) and value.strip().lower() == "all":
            return "all"
        if isinstance(value, str) and value.strip().isdigit():
            return int(value)
        raise ValueError(f"{value!r} is neither all nor a number of replicas (0 or more)")

    @field_validator("sentinels")
    @classmethod
    def _host_ports(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for item in value:
            cls._host_port(item)
        return value

    @staticmethod
    def _host_port(value: str) -> tuple[str, int]:
        host, sep, port = value.rpartition(":")
        host = host.removeprefix("[").removesuffix("]")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"{value!r} is not host:port (an IPv6 address goes in brackets)")
        return host, int(port)

    @property
    def sentinel_addresses(self) -> tuple[tuple[str, int], ...]:
        return tuple(self._host_port(item) for item in self.sentinels)

    def uses_tls(self, url: str | None) -> bool:
        return self.tls or (url is not None and urlsplit(url).scheme == "rediss")

    def problems(self, url: str | None, *, in_use: bool) -> list[str]:
        """The rules across these fields and GATEWAY_REDIS_URL (`url`), each naming what to set;
        `in_use`: GATEWAY_SESSION_STORE is redis. Messages name hosts, never credentials."""
        found: list[str] = []
        parts = urlsplit(url) if url else None
        unix = parts is not None and parts.scheme == "unix"
        if in_use and parts is None and not self.sentinels:
            found.append(
                "GATEWAY_REDIS_URL (or GATEWAY_REDIS__SENTINELS) is required when "
                "GATEWAY_SESSION_STORE is redis"
            )
        if parts is not None and self.sentinels:
            found.append(
                "set GATEWAY_REDIS_URL or GATEWAY_REDIS__SENTINELS, not both (with sentinels, "
                "use GATEWAY_REDIS__DB, __USERNAME, __PASSWORD and __TLS)"
            )
        if self.cluster and self.sentinels:
            found.append("GATEWAY_REDIS__CLUSTER and GATEWAY_REDIS__SENTINELS exclude each other")
        url_db = self._url_db(parts) if parts is not None else None
        if self.db is not None and url_db is not None and self.db != url_db:
            found.append(
                f"GATEWAY_REDIS__DB={self.db} contradicts database {url_db} in "
                "GATEWAY_REDIS_URL: set it in one place"
            )
        if self.cluster:
            if unix:
                found.append("GATEWAY_REDIS__CLUSTER needs a redis:// or rediss:// URL")
            if self.db or url_db:
                found.append("a Redis Cluster has only database 0 (GATEWAY_REDIS__DB)")
            if self.replica_acks:
                found.append(
                    "GATEWAY_REDIS__REPLICA_ACKS is not supported with GATEWAY_REDIS__CLUSTER"
                )
        has_url_password = parts is not None and bool(parts.password)
        if has_url_password and (self.password or self.password_file):
            found.append(
                "set the Redis password in one place: GATEWAY_REDIS_URL, "
                "GATEWAY_REDIS__PASSWORD or GATEWAY_REDIS__PASSWORD_FILE"
            )
        elif self.password and self.password_file:
            found.append("set only one of GATEWAY_REDIS__PASSWORD and GATEWAY_REDIS__PASSWORD_FILE")
        if parts is not None and parts.username and self.username:
            found.append("set the Redis user in GATEWAY_REDIS_URL or GATEWAY_REDIS__USERNAME")
        for name in ("password_file", "ca_file", "cert_file", "key_file"):
            path = getattr(self, name)
            if path is not None and not path.is_file():
                found.append(f"GATEWAY_REDIS__{name.upper()}: no such file: {path}")
        tls = self.uses_tls(url)
        if not tls and (self.ca_file or self.cert_file or self.key_file):
            found.append(
                "GATEWAY_REDIS__CA_FILE, __CERT_FILE and __KEY_FILE apply only with a rediss:// "
                "URL or GATEWAY_REDIS__TLS=true"
            )
        if self.key_file and not self.cert_file:
            found.append("GATEWAY_REDIS__KEY_FILE needs GATEWAY_REDIS__CERT_FILE")
        if self.tls and unix:
            found.append("GATEWAY_REDIS__TLS does not apply to a unix:// socket")
        if self.replica_acks == "all" and not self.sentinels and not self.cluster:
            found.append(
                "GATEWAY_REDIS__REPLICA_ACKS=all needs GATEWAY_REDIS__SENTINELS (with "
                "GATEWAY_REDIS_URL, give a number of replicas)"
            )
        if self.sentinel_password and not self.sentinels:
            found.append("GATEWAY_REDIS__SENTINEL_PASSWORD applies only with sentinels")
        if in_use and not self.allow_insecure:
            found.extend(self._exposure(parts, tls=tls, url_password=has_url_password))
        return found

    def _exposure(self, parts: SplitResult | None, *, tls: bool, url_password: bool) -> list[str]:
        """RS-01: a Redis reachable off this host must need TLS and a password."""
        if self.sentinels:
            hosts = [host for host, _ in self.sentinel_addresses]
        elif parts is not None and parts.scheme != "unix":
            hosts = [parts.hostname or ""]
        else:
            hosts = []  # a unix socket is local
        remote = [host for host in hosts if not is_loopback_host(host)]
        if not remote:
            return []
        missing = []
        if not tls:
            missing.append("TLS (a rediss:// URL or GATEWAY_REDIS__TLS=true)")
        if not (url_password or self.password or self.password_file):
            missing.append(
                "a password (in GATEWAY_REDIS_URL, GATEWAY_REDIS__PASSWORD or "
                "GATEWAY_REDIS__PASSWORD_FILE)"
            )
        if self.sentinels and not self.sentinel_password:
            missing.append("a sentinel password (GATEWAY_REDIS__SENTINEL_PASSWORD)")
        if not missing:
            return []
        return [
            f"Redis at {remote[0]} is reachable off this host without {' or '.join(missing)}: "
            "anyone on that network could read or replace sessions. "
            f"Add {'it' if len(missing) == 1 else 'them'}, or set "
            "GATEWAY_REDIS__ALLOW_INSECURE=true for a network only the gateway can reach"
        ]

    @staticmethod
    def _url_db(parts: SplitResult) -> int | None:
        for value in parse_qs(parts.query).get("db", []):
            return int(value) if value.isdigit() else None
        path = parts.path.strip("/")
        if parts.scheme != "unix" and path.isdigit():
            return int(path)
        return None
