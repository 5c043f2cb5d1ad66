"""Loopback ports for the servers the tests and the bench scripts start."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A port nothing listens on right now; the OS picks it, so parallel runs do not collide."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def accepts(port: int, timeout: float = 0.5) -> bool:
    """Whether something accepts connections on 127.0.0.1:`port`."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout):
            return True
    except OSError:
        return False
