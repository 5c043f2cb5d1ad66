"""Configuration problems: the one typed error for "the operator must change a setting", and how
each problem reads.

    ConfigurationError          raised by load_settings, by the start-up checks and by serve when
      .problems: (Problem, ...)  a listener cannot open; the command prints them and exits 2

A Problem names what to fix (an environment variable, a key in the --config file, an option) and
says what is wrong and how to fix it, on one line. It never holds a secret's value.
"""

from __future__ import annotations

import errno
import re
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

# A setting's environment name inside a message (cross-field rules name several).
VARIABLE: Final = re.compile(r"\bGATEWAY_[A-Z0-9_]*[A-Z0-9]")


@dataclass(frozen=True)
class Problem:
    """One thing to fix. `subject` is what to change ("" when the text names it already)."""

    subject: str
    text: str

    def __str__(self) -> str:
        if not self.subject:
            return self.text
        # "GATEWAY_UPSTREAM is required" reads as a sentence; anything else is "where: what".
        joiner = " " if self.text.startswith("is ") else ": "
        return f"{self.subject}{joiner}{self.text}"

    def mentions(self, variables: Iterable[str]) -> bool:
        """True when the problem is about one of `variables` (environment names)."""
        named = set(VARIABLE.findall(f"{self.subject} {self.text}"))
        return not named.isdisjoint(variables)


class ConfigurationError(Exception):
    """The configuration cannot run; `problems` lists every reason found, one line each."""

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems: tuple[Problem, ...] = tuple(problems)
        super().__init__("\n".join(str(problem) for problem in self.problems))


def cannot_listen(variable: str, host: str, port: int, error: OSError) -> Problem:
    """A listener that cannot open, in the words an operator needs (never the OS's alone)."""
    where = f"{host or '*'}:{port}"
    if isinstance(error, socket.gaierror):
        text = f"{host!r} is not a host name this machine can resolve: use an IP address"
    elif error.errno == errno.EADDRINUSE:
        text = f"{where} is already in use by another process: stop it, or choose another port"
    elif error.errno == errno.EACCES:
        text = (
            f"not allowed to listen on {where} (ports below 1024 need privileges): choose a port "
            "of 1024 or above"
        )
    elif error.errno == errno.EADDRNOTAVAIL:
        text = f"{host} is not an address of this machine: use one of its addresses, or 0.0.0.0"
    else:
        reason = error.strerror or str(error) or type(error).__name__
        text = f"cannot listen on {where}: {reason}"
    return Problem(variable, text)
