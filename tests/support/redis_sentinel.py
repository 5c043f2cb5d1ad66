"""A real Redis Sentinel deployment on loopback: one master, one or more replicas (one by default,
two for the failover scenarios of issue 14) and three sentinels.

Quorum 2, down-after 1 s and failover-timeout 5 s, so that a killed master is replaced within a few
seconds. Each sentinel is told its own id and its peers' ids and the replica up front (myid,
known-sentinel, known-replica), so the deployment is usable as soon as every process has answered
once: nothing waits for the sentinels' two-second hello gossip. Readiness and failover completion
are polled, never slept for.
"""

from __future__ import annotations

import secrets
import subprocess
import time
from pathlib import Path
from typing import Any

import redis

from support.binaries import require_binary
from support.ports import free_port
from support.redis_server import RedisServer

MASTER_NAME = "mymaster"
QUORUM = 2
DOWN_AFTER_MILLISECONDS = 1000
FAILOVER_TIMEOUT_MILLISECONDS = 5000
POLL_SECONDS = 0.05
START_SECONDS = 60.0  # the deployment coming up (see start)


class _SentinelProcess:
    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self.id = secrets.token_hex(20)
        self.config = directory / f"sentinel-{self.port}.conf"
        self.process: subprocess.Popen[bytes] | None = None

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None


class SentinelSet:
    """Start with `start()`, always `cleanup()`. Data nodes and sentinels may require passwords."""

    def __init__(
        self,
        *,
        password: str | None = None,
        sentinel_password: str | None = None,
        replicas: int = 1,
        node_args: tuple[str, ...] = (),
        priorities: tuple[int, ...] = (),
    ):
        """`node_args`: extra redis-server arguments for every data node (say, the settings
        docs/operations.md asks operators for); `priorities`: replica-priority of each replica
        in turn (lower is promoted first; Redis's default is 100)."""
        self.binary = require_binary("redis-server", "redis-server")
        self.password = password
        self.sentinel_password = sentinel_password
        # A master waits 5 s by default before a diskless full sync, hoping for more replicas,
        # and up to 10 s on SIGTERM for its replicas to catch up.
        quick_sync = ("--repl-diskless-sync-delay", "0", "--shutdown-timeout", "0", *node_args)
        self.nodes = [
            RedisServer(password=password, extra_args=quick_sync) for _ in range(1 + replicas)
        ]
        first = self.nodes[0]
        for replica in self.nodes[1:]:
            replica.extra_args += ("--replicaof", "127.0.0.1", str(first.port))
        for replica, priority in zip(self.nodes[1:], priorities, strict=False):
            replica.extra_args += ("--replica-priority", str(priority))
        self.sentinels = [_SentinelProcess(Path(first.dir)) for _ in range(3)]

    @property
    def addresses(self) -> str:
        """The GATEWAY_REDIS__SENTINELS value."""
        return " ".join(f"127.0.0.1:{s.port}" for s in self.sentinels)

    def start(self) -> SentinelSet:
        try:
            for node in self.nodes:
                node.start()
            # Generous: a full sync of every replica on a loaded 2-core machine (the whole suite
            # beside it) once took longer than 20 s; a healthy start returns in well under one.
            self._wait(
                self._replicas_in_sync, "the replicas to sync with the master", START_SECONDS
            )
            for sentinel in self.sentinels:
                sentinel.config.write_text(self._config(sentinel))
                sentinel.process = subprocess.Popen(
                    [self.binary, str(sentinel.config), "--sentinel"],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            self._wait(
                self._sentinels_agree, "the sentinels to see the master and replica", START_SECONDS
            )
        except BaseException:
            self.cleanup()
            raise
        return self

    def _config(self, me: _SentinelProcess) -> str:
        master, *replicas = self.nodes
        lines = [
            f"port {me.port}",
            "bind 127.0.0.1",
            f"dir {me.config.parent}",
            'logfile ""',
            f"sentinel myid {me.id}",
            f"sentinel monitor {MASTER_NAME} 127.0.0.1 {master.port} {QUORUM}",
            f"sentinel down-after-milliseconds {MASTER_NAME} {DOWN_AFTER_MILLISECONDS}",
            f"sentinel failover-timeout {MASTER_NAME} {FAILOVER_TIMEOUT_MILLISECONDS}",
            f"sentinel parallel-syncs {MASTER_NAME} 1",
        ]
        lines += [
            f"sentinel known-replica {MASTER_NAME} 127.0.0.1 {replica.port}" for replica in replicas
        ]
        lines += [
            f"sentinel known-sentinel {MASTER_NAME} 127.0.0.1 {peer.port} {peer.id}"
            for peer in self.sentinels
            if peer is not me
        ]
        if self.password is not None:
            lines.append(f"sentinel auth-pass {MASTER_NAME} {self.password}")
        if self.sentinel_password is not None:
            # The sentinels authenticate to each other with the same password.
            lines += [
                f"requirepass {self.sentinel_password}",
                f"sentinel sentinel-pass {self.sentinel_password}",
            ]
        return "\n".join(lines) + "\n"

    # ---- raw access for assertions and fault injection ----

    def node_client(self, address: tuple[str, int], db: int = 0) -> redis.Redis:
        host, port = address
        return redis.Redis(host=host, port=port, db=db, password=self.password, socket_timeout=2)

    def sentinel_client(self, index: int = 0) -> redis.Redis:
        return redis.Redis(
            host="127.0.0.1",
            port=self.sentinels[index].port,
            password=self.sentinel_password,
            socket_timeout=2,
            decode_responses=True,
        )

    def master_address(self, index: int = 0) -> tuple[str, int]:
        with self.sentinel_client(index) as client:
            host, port = client.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER_NAME)
        return str(host), int(port)

    def node_at(self, address: tuple[str, int]) -> RedisServer:
        return next(node for node in self.nodes if node.address == address)

    def failover(self) -> None:
        """SENTINEL FAILOVER (no agreement needed); retried while the sentinel has not yet judged
        the replica promotable (-NOGOODSLAVE right after start-up)."""

        def ask() -> bool:
            with self.sentinel_client() as client:
                try:
                    client.execute_command("SENTINEL", "FAILOVER", MASTER_NAME)
                except redis.ResponseError as exc:
                    if "NOGOODSLAVE" in str(exc):
                        return False
                    raise
            return True

        self._wait(ask, "SENTINEL FAILOVER to be accepted")

    def wait_for_master_other_than(self, old: tuple[str, int], timeout: float = 30) -> None:
        """Until every sentinel names a master other than `old` that answers as a master."""

        def moved() -> bool:
            addresses = {self.master_address(i) for i in range(len(self.sentinels))}
            if len(addresses) != 1 or old in addresses:
                return False
            with self.node_client(addresses.pop()) as client:
                role: Any = client.execute_command("ROLE")
            return bool(role[0] == b"master")

        self._wait(moved, "a new master", timeout)

    # ---- readiness ----

    def _replicas_in_sync(self) -> bool:
        """Every replica confirms a write. After a full sync the master streams to a replica
        only once it has acknowledged (within a second), and WAIT counts only acknowledgements."""
        wanted = len(self.nodes) - 1
        with self.node_client(self.nodes[0].address) as client:
            try:
                client.set("gw:probe", "1")
            except redis.ResponseError as exc:  # min-replicas-to-write: no replica yet
                if "NOREPLICAS" in str(exc):
                    return False
                raise
            confirmed: int = client.execute_command("WAIT", wanted, 100)
            client.delete("gw:probe")
        return confirmed == wanted

    def _sentinels_agree(self) -> bool:
        for index in range(len(self.sentinels)):
            with self.sentinel_client(index) as client:
                master = client.execute_command("SENTINEL", "MASTER", MASTER_NAME)
                replicas = client.execute_command("SENTINEL", "REPLICAS", MASTER_NAME)
            if master.get("flags") != "master" or int(master["num-other-sentinels"]) != 2:
                return False
            if [r.get("master-link-status") for r in replicas] != ["ok"] * (len(self.nodes) - 1):
                return False
        return True

    def _wait(self, check: Any, what: str, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if check():
                    return
            except (redis.ConnectionError, redis.TimeoutError, OSError):
                pass
            time.sleep(POLL_SECONDS)
        raise RuntimeError(f"timed out waiting for {what}:\n{self._replication_report()}")

    def _replication_report(self) -> str:
        """Each data node's INFO replication, for the failure message."""
        lines = []
        for node in self.nodes:
            try:
                with self.node_client(node.address) as client:
                    info = client.info("replication")
                lines.append(f"{node.address}: {info}")
            except (redis.RedisError, OSError) as exc:
                lines.append(f"{node.address}: {exc!r}")
        return "\n".join(lines)

    def cleanup(self) -> None:
        for sentinel in self.sentinels:
            sentinel.stop()
        for node in self.nodes:
            node.cleanup()
