"""Path-prefix matching for access rules and token routes. Pure.

Ambiguous request targets are refused before any matching (auth/policy.py). Past that, the two
kinds of rule are read differently, because an application often answers more spellings of a path
than the rule names (Express, Spring, Rails, ASP.NET):

- `matches` (public rules, token routes) is narrow: a prefix ending in "/" matches below it;
  otherwise the exact path and everything below it.
- `governs` (protective rules) is broad: "/admin/" also governs "/admin" (the same handler in most
  frameworks), and "/settings" also governs "/settings.json" and "/settings.anything" (format
  suffixes select a representation of the same resource).
"""

from __future__ import annotations


def matches(path: str, prefix: str) -> bool:
    if prefix.endswith("/"):
        return path.startswith(prefix)
    return path == prefix or path.startswith(prefix + "/")


def governs(path: str, prefix: str) -> bool:
    base = prefix.rstrip("/")
    if not base:  # "/": everything
        return True
    return path == base or path.startswith((base + "/", base + "."))
