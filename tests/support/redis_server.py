"""Real redis-server processes for tests, on free loopback ports, with nothing kept on disk.

A server may require a password (requirepass, and masterauth so it can also serve as a replica),
speak only TLS (certificates from a trustme CA, client certificates optional) or carry any extra
redis-server arguments (--replicaof, --user, cluster mode). A missing redis-server binary fails
under CI and skips otherwise, with the install hint.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import trustme

from support.binaries import require_binary
from support.ports import free_port

READY_TIMEOUT_SECONDS = 10.0


def free_cluster_port() -> int:
    """A free port whose cluster bus port (the port + 10000) is free and valid as well."""
    while True:
        port = free_port()
        if port + 10000 > 65535:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port


@dataclass(frozen=True)
class RedisTls:
    """PEM files of one trustme CA: a server certificate for 127.0.0.1/localhost and a client
    certificate, both issued by it."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path

    @classmethod
    def issue(cls, directory: Path, names: Sequence[str] = ("127.0.0.1", "localhost")) -> RedisTls:
        ca = trustme.CA()
        server = ca.issue_cert(*names)
        client = ca.issue_cert("gateway@example.test")
        files = cls(
            ca=directory / "ca.pem",
            server_cert=directory / "server.pem",
            server_key=directory / "server.key",
            client_cert=directory / "client.pem",
            client_key=directory / "client.key",
        )
        ca.cert_pem.write_to_path(str(files.ca))
        server.cert_chain_pems[0].write_to_path(str(files.server_cert))
        server.private_key_pem.write_to_path(str(files.server_key))
        client.cert_chain_pems[0].write_to_path(str(files.client_cert))
        client.private_key_pem.write_to_path(str(files.client_key))
        return files

    def client_context(self) -> ssl.SSLContext:
        """For the harness's own readiness probes and commands: the CA is checked, the name is
        not (some tests issue server certificates for other names on purpose)."""
        context = ssl.create_default_context(cafile=str(self.ca))
        context.check_hostname = False
        context.load_cert_chain(str(self.client_cert), str(self.client_key))
        return context


class RedisServer:
    def __init__(
        self,
        *,
        password: str | None = None,
        tls: RedisTls | None = None,
        tls_auth_clients: bool = False,
        extra_args: Sequence[str] = (),
        port: int | None = None,
    ) -> None:
        self.binary = require_binary("redis-server", "redis-server")
        self.port = free_port() if port is None else port
        self.password = password
        self.tls = tls
        self.tls_auth_clients = tls_auth_clients
        self.extra_args = tuple(extra_args)
        self.dir = tempfile.mkdtemp(prefix="gw-redis-")
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        scheme = "rediss" if self.tls else "redis"
        return f"{scheme}://127.0.0.1:{self.port}/0"

    @property
    def address(self) -> tuple[str, int]:
        return "127.0.0.1", self.port

    def arguments(self) -> list[str]:
        args = [
            self.binary,
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            self.dir,
            "--logfile",
            self.log_path,
        ]
        if self.tls is None:
            args += ["--port", str(self.port)]
        else:
            args += [
                "--port",
                "0",
                "--tls-port",
                str(self.port),
                "--tls-cert-file",
                str(self.tls.server_cert),
                "--tls-key-file",
                str(self.tls.server_key),
                "--tls-ca-cert-file",
                str(self.tls.ca),
                "--tls-auth-clients",
                "yes" if self.tls_auth_clients else "no",
            ]
        if self.password is not None:
            args += ["--requirepass", self.password, "--masterauth", self.password]
        return [*args, *self.extra_args]

    def start(self) -> RedisServer:
        self._process = subprocess.Popen(
            self.arguments(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self.ping():
                return self
            if self._process.poll() is not None:
                raise RuntimeError(
                    f"redis-server exited with {self._process.returncode}: {self.log_tail()}"
                )
            time.sleep(0.02)
        log = self.log_tail()
        self.cleanup()  # the caller gets no server to clean up: do not leave the process behind
        raise RuntimeError(f"redis-server did not answer on port {self.port}: {log}")

    @property
    def log_path(self) -> str:
        return os.path.join(self.dir, "redis.log")

    def log_tail(self) -> str:
        try:
            return Path(self.log_path).read_text(errors="replace")[-2000:]
        except OSError:
            return "(no log)"

    def _connect(self, timeout: float) -> socket.socket:
        sock = socket.create_connection(self.address, timeout=timeout)
        if self.tls is None:
            return sock
        return self.tls.client_context().wrap_socket(sock, server_hostname="127.0.0.1")

    def ping(self) -> bool:
        """Whether the server answers; a NOAUTH answer counts (it is up, it wants a password)."""
        try:
            with self._connect(0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith((b"+PONG", b"-NOAUTH"))
        except OSError:
            return False

    def command(self, *parts: str) -> bytes:
        """One command on a fresh connection, authenticated if needed; the raw reply bytes."""
        payload = b""
        commands = [parts] if self.password is None else [("AUTH", self.password), parts]
        for command in commands:
            payload += f"*{len(command)}\r\n".encode() + b"".join(
                f"${len(p.encode())}\r\n{p}\r\n".encode() for p in command
            )
        with self._connect(2) as sock:
            sock.sendall(payload)
            reply = sock.recv(65536)
            if self.password is not None:
                # Drop the AUTH reply; the command's reply may trail it in a second segment.
                if not reply.startswith(b"+OK\r\n"):
                    return reply
                reply = reply.removeprefix(b"+OK\r\n") or sock.recv(65536)
            return reply

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.wait(10)
            self._process = None

    def kill(self) -> None:
        """SIGKILL: no shutdown, no goodbye to clients or replicas."""
        if self._process is not None:
            self._process.send_signal(signal.SIGKILL)
            self._process.wait(10)
            self._process = None

    def pause(self) -> None:
        """SIGSTOP: the process hangs with its connections open (a stalled host, a long GC)."""
        if self._process is not None:
            self._process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self._process is not None:
            self._process.send_signal(signal.SIGCONT)

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class RedisClusterNodes:
    """Three cluster-enabled masters on loopback joined with `redis-cli --cluster create` (no
    replicas): enough for slots spread over several nodes, MOVED redirects and hash tags."""

    def __init__(self) -> None:
        self.cli = require_binary("redis-cli", "redis-tools")
        self.nodes = [
            RedisServer(
                extra_args=("--cluster-enabled", "yes", "--cluster-node-timeout", "2000"),
                port=free_cluster_port(),
            )
            for _ in range(3)
        ]

    @property
    def url(self) -> str:
        return self.nodes[0].url

    def start(self) -> RedisClusterNodes:
        try:
            for node in self.nodes:
                node.start()
            subprocess.run(
                [
                    self.cli,
                    "--cluster",
                    "create",
                    *(f"127.0.0.1:{node.port}" for node in self.nodes),
                    "--cluster-replicas",
                    "0",
                    "--cluster-yes",
                ],
                check=True,
                capture_output=True,
                timeout=30,
            )
            deadline = time.monotonic() + READY_TIMEOUT_SECONDS
            while not all(b"cluster_state:ok" in n.command("CLUSTER", "INFO") for n in self.nodes):
                if time.monotonic() > deadline:
                    raise RuntimeError("the cluster did not reach cluster_state:ok")
                time.sleep(0.05)
        except BaseException:
            self.cleanup()
            raise
        return self

    def flush(self) -> None:
        for node in self.nodes:
            node.command("FLUSHALL")

    def cleanup(self) -> None:
        for node in self.nodes:
            node.cleanup()
