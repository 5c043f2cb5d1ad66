"""Loopback ports for the servers the tests and the bench scripts start."""

from __future__ import annotations

import socket

# Ports handed out by this process. A fixture often takes several ports before it starts anything
# on them, and the kernel may offer a closed, still unbound port again: once it gave a Sentinel
# set's data node and one of its sentinels the same port, and the sentinels never came up.
_handed_out: set[int] = set()


def free_port() -> int:
    """A port nothing listens on right now and that this process has not handed out before; the
    OS picks it, so parallel runs do not collide."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port: int = sock.getsockname()[1]
        if port not in _handed_out:
            _handed_out.add(port)
            return port


def accepts(port: int, timeout: float = 0.5) -> bool:
    """Whether something accepts connections on 127.0.0.1:`port`."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout):
            return True
    except OSError:
        return False


def free_ports(count: int) -> int:
    """The first of `count` consecutive ports nothing listens on right now (the demo takes the
    ports after its own)."""
    for _ in range(100):
        base = free_port()
        if base + count > 65536:
            continue
        socks: list[socket.socket] = []
        try:
            for port in range(base, base + count):
                sock = socket.socket()
                socks.append(sock)
                sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
        return base
    raise RuntimeError(f"no {count} consecutive free ports")
