"""Fixtures of the security modules: for those that talk to a gateway process over raw sockets, a
recording upstream and a gateway in front of it with alice signed in (one of each per module);
for the bearer-token modules, the World a crafted token is checked in."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from support.jwts import World, make_world
from support.served import Served, start_served
from support.upstream import RecordingUpstream


@pytest.fixture(scope="module")
def recorder() -> Iterator[RecordingUpstream]:
    upstream = RecordingUpstream().start()
    yield upstream
    upstream.stop()


@pytest.fixture(scope="module")
def module_idp(idp_server: Any) -> Any:
    """The session's identity provider, without earlier tests' faults."""
    idp_server.reset()
    return idp_server


@pytest.fixture(scope="module")
def served(module_idp: Any, recorder: RecordingUpstream) -> Iterator[Served]:
    """One gateway process for the module, with alice signed in."""
    yield from start_served(module_idp, recorder)


@pytest.fixture
def fresh(module_idp: Any, recorder: RecordingUpstream) -> Iterator[Served]:
    """A gateway process of its own, for measurements of its peak memory."""
    yield from start_served(module_idp, recorder)


@pytest.fixture
def world(idp: Any) -> World:
    """Function scope like `idp`: some tests rotate the provider's keys."""
    return make_world(idp)
