"""The rules of store/master_watch.py on sentinel answers as Redis 7 gives them (the states below
were read from real sentinels during SENTINEL FAILOVER and kill -9 runs): which master an answer
names, which replicas count as up, which answer wins, and how many confirmations a write needs.
The behaviour against real processes is in test_failover_durability.py."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.store.master_watch import View, pick, required

OLD, NEW, OTHER = ("10.0.0.1", 6379), ("10.0.0.2", 6379), ("10.0.0.3", 6379)


def node(address: tuple[str, int], flags: str, **fields: Any) -> dict[str, Any]:
    return {"ip": address[0], "port": str(address[1]), "flags": flags, **fields}


def replica(address: tuple[str, int], flags: str = "slave", role: str = "slave") -> dict[str, Any]:
    return node(address, flags, **{"role-reported": role, "master-link-status": "ok"})


def test_a_serving_master_is_named_with_its_replicas_up() -> None:
    view = View.read(node(OLD, "master", **{"config-epoch": "3"}), [replica(NEW), replica(OTHER)])
    assert (view.master, view.epoch, view.failing_over, view.replicas_up) == (OLD, 3, False, 2)


@pytest.mark.parametrize("state", ["wait_start", "select_slave", "wait_promotion"])
def test_a_failover_names_nothing_until_the_promoted_replica_is_master(state: str) -> None:
    master = node(OLD, "master,failover_in_progress", **{"failover-state": state})
    promoted = replica(NEW, "slave,promoted")  # still reports itself a replica
    view = View.read(master, [promoted, replica(OTHER)])
    assert view.master is None and view.failing_over


def test_a_promoted_replica_that_reports_master_is_named_with_the_new_epoch() -> None:
    master = node(
        OLD,
        "s_down,o_down,master,disconnected,failover_in_progress",
        **{"config-epoch": "1", "failover-state": "reconf_slaves"},
    )
    # The other replica is being moved to the new master; the sentinel's link to it drops.
    moving = replica(OTHER, "slave,disconnected,reconf_sent")
    view = View.read(master, [replica(NEW, "slave,promoted", role="master"), moving])
    assert (view.master, view.epoch, view.replicas_up) == (NEW, 1, 1)


def test_down_masters_and_unreachable_or_self_declared_masters_do_not_count() -> None:
    down = View.read(node(OLD, "s_down,master,disconnected"), [replica(NEW)])
    assert down.master is None
    view = View.read(
        node(NEW, "master"),
        [
            replica(OLD, "slave,disconnected"),  # a killed master, newly listed as a replica
            replica(OTHER, "slave", role="master"),  # the former master awaiting demotion
        ],
    )
    assert view.replicas_up == 0 and view.replica_claims_master


def test_the_highest_epoch_wins_and_a_lower_one_only_when_every_sentinel_names_it() -> None:
    old = View(0, OLD, False, 2, False)
    new = View(1, NEW, True, 1, False)
    assert pick([old, new, old], 3, None) == new
    following_new = pick([new], 3, None)
    # The sentinel that knows of the promotion did not answer: stay.
    assert pick([old, old], 3, following_new) is None
    # Every sentinel names the older configuration: they were reset.
    assert pick([old, old, old], 3, following_new) == old
    assert pick([View(0, None, True, 0, False)], 3, None) is None


@pytest.mark.parametrize(
    ("policy", "linked", "up", "expected"),
    [
        ("all", 2, 2, 2),  # every replica in sync
        ("all", 1, 2, 1),  # one resynchronising: the one in sync
        ("all", 0, 1, 1),  # a new master before its replica attaches: wait for it
        ("all", 0, 0, 0),  # no replica left at all (one replica, master killed)
        (1, 2, 2, 1),
        (2, 1, 1, 1),  # fewer up than asked for
        (0, 2, 2, 0),
    ],
)
def test_confirmations_asked_for(policy: Any, linked: int, up: int, expected: int) -> None:
    assert required(policy, linked, up) == expected
