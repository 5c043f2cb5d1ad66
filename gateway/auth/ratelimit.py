"""Rate limits on starting sign-ins, in process (each replica counts for itself).

Each started sign-in is held in the store until it completes or expires, so an anonymous flood
would fill it: starts are limited per client (a token bucket per key, in a table bounded by
evicting the least recently seen client) and in total (one bucket whose capacity is the most
pending sign-ins a replica lets the store hold, refilled over the sign-in lifetime). A client is
its address, or for IPv6 its /64: one host commonly holds a whole /64, so a per-address key would
let it through 2^64 times.

A per-address limit also falls on everyone behind one address (an office behind NAT, or every
client when a proxy in front is not listed in GATEWAY_PROXY__TRUSTED_PROXIES): the default is
high enough for an office, and `SharedAddressWatch` warns when every sign-in comes from one
private address.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Final

from gateway.errors import SignInsBusy, TooManyRequests

log = logging.getLogger(__name__)

MAX_CLIENTS: Final = 10_000
SHARED_ADDRESS_SAMPLE: Final = 50  # sign-ins from one private address before the warning


def client_key(address: str) -> str:
    """What the per-client limit counts by: the address, or an IPv6 address's /64."""
    try:
        ip = ipaddress.ip_address(address.strip().strip("[]"))
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is None:
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip.ipv4_mapped or ip) if isinstance(ip, ipaddress.IPv6Address) else str(ip)


class RateLimiter:
    def __init__(
        self,
        per_minute: float,
        *,
        capacity: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._capacity = float(per_minute if capacity is None else capacity)
        self._rate = per_minute / 60.0
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # tokens, at

    def allow(self, key: str) -> bool:
        """Whether `key` may act now (and take one token if so)."""
        now = self._clock()
        tokens, at = self._buckets.pop(key, (self._capacity, now))
        tokens = min(self._capacity, tokens + (now - at) * self._rate)
        allowed = tokens >= 1.0
        self._buckets[key] = (tokens - 1.0 if allowed else tokens, now)
        while len(self._buckets) > MAX_CLIENTS:
            self._buckets.popitem(last=False)
        return allowed


class SharedAddressWatch:
    """Warns once when the first sign-ins all come from one private address while no proxy is
    trusted: per-client limits then fall on everyone at once."""

    def __init__(self, *, proxies_trusted: bool) -> None:
        self._done = proxies_trusted
        self._address: str | None = None
        self._seen = 0

    def saw(self, address: str) -> None:
        if self._done:
            return
        if self._address is None:
            self._address = address
        if address != self._address:
            self._done = True  # clients are told apart: nothing to say
            return
        self._seen += 1
        if self._seen < SHARED_ADDRESS_SAMPLE:
            return
        self._done = True
        try:
            private = ipaddress.ip_address(address.strip("[]")).is_private
        except ValueError:
            return
        if private:
            log.warning(
                "the last %d sign-ins all came from %s: if a proxy or ingress is in front, "
                "list it in GATEWAY_PROXY__TRUSTED_PROXIES, or per-client limits fall on every "
                "user at once",
                SHARED_ADDRESS_SAMPLE,
                address,
                extra={"event": "shared_client_address"},
            )


class SignInLimits:
    """Both limits on starting a sign-in, and the shared-address warning."""

    def __init__(
        self,
        *,
        per_client_per_minute: int,
        max_pending: int,
        pending_seconds: float,
        proxies_trusted: bool,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._per_client = RateLimiter(per_client_per_minute, clock=clock)
        # Capacity: the pending sign-ins a replica may hold; refilled as they expire.
        self._total = RateLimiter(
            max_pending * 60.0 / pending_seconds, capacity=max_pending, clock=clock
        )
        self._watch = SharedAddressWatch(proxies_trusted=proxies_trusted)

    def admit(self, address: str) -> None:
        """TooManyRequests (429) for a client over its limit, SignInsBusy (503) when the replica
        holds as many pending sign-ins as it may."""
        self._watch.saw(address)
        if not self._per_client.allow(client_key(address)):
            raise TooManyRequests("too many sign-ins started from this address; try again shortly")
        if not self._total.allow(""):
            log.warning(
                "sign-in refused: GATEWAY_SIGNIN__MAX_PENDING pending sign-ins reached",
                extra={"event": "sign_in_flood"},
            )
            raise SignInsBusy("too many sign-ins are in progress; try again shortly")
