"""Path-prefix matching shared by access rules and token routes. Pure.

Ambiguous request targets are refused before any matching (auth/policy.py).
"""

from __future__ import annotations


def matches(path: str, prefix: str) -> bool:
    if prefix.endswith("/"):
        return path.startswith(prefix)
    return path == prefix or path.startswith(prefix + "/")
