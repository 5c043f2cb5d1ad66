"""Each client's share of the connections to the application: no one client (a signed-in user,
an API caller, else an address) may hold more than `limit` of them at once, so that a few slow or
greedy clients cannot take every slot from everyone else (UpstreamBusy, 503, beyond it)."""

from __future__ import annotations

from gateway.errors import UpstreamBusy


class SlotShares:
    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._held: dict[str, int] = {}

    def take(self, client: str) -> None:
        held = self._held.get(client, 0)
        if held >= self._limit:
            raise UpstreamBusy("too many of your requests are in progress; try again shortly")
        self._held[client] = held + 1

    def give_back(self, client: str) -> None:
        held = self._held.get(client, 0) - 1
        if held > 0:
            self._held[client] = held
        else:
            self._held.pop(client, None)
