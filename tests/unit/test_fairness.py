"""A tenant's shares of the proxy: slots per connector and namespace, a bounded queue,
no lost wake-ups, and a byte budget that is always given back."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from connectors.api.errors import Overloaded
from connectors.proxy.fairness import ByteBudget, FairnessSettings, Shares
from tests.support.waiting import until

SMALL = FairnessSettings(
    requests_per_connector=2,
    requests_per_namespace=3,
    waiting_per_slot=1,
    queue_timeout_seconds=0.5,
    held_bytes_per_namespace=100,
    held_bytes_total=150,
)


async def hold(shares: Shares, namespace: str, name: str, release: asyncio.Event) -> None:
    async with shares.request_slot(namespace, name):
        await release.wait()


async def test_a_connector_waits_beyond_its_share_and_the_namespace_caps_its_connectors():
    shares, release = Shares(SMALL), asyncio.Event()
    holders = [asyncio.create_task(hold(shares, "ns", "a", release)) for _ in range(2)]
    holders.append(asyncio.create_task(hold(shares, "ns", "b", release)))
    await until(lambda: shares.in_flight("ns") == 3)
    assert shares.in_flight("ns", "a") == 2
    with pytest.raises(Overloaded, match="connector ns/b is using its whole share"):
        async with shares.request_slot("ns", "b"):
            pass  # the namespace's 3 are taken: waits 0.5 s, then 503
    async with shares.request_slot("other", "a"):  # another tenant is not held up
        pass
    release.set()
    await asyncio.gather(*holders)
    assert shares.in_flight("ns") == 0 and not shares._used and not shares._waiting


async def test_past_the_waiting_room_a_request_is_refused_at_once():
    shares, release = Shares(SMALL), asyncio.Event()
    holders = [asyncio.create_task(hold(shares, "ns", "a", release)) for _ in range(4)]
    # 2 hold slots, 2 wait: the waiting room is 1 x 2 connector slots, now full.
    await until(lambda: (shares.in_flight("ns", "a"), shares.waiting("ns", "a")) == (2, 2))
    started = asyncio.get_running_loop().time()
    with pytest.raises(Overloaded):
        async with shares.request_slot("ns", "a"):
            pass
    assert asyncio.get_running_loop().time() - started < 0.1
    release.set()
    await asyncio.gather(*holders)


async def test_a_freed_slot_reaches_a_waiter_of_another_connector():
    # A release must wake every waiter that could now proceed, not one that still cannot.
    settings = FairnessSettings(
        requests_per_connector=2, requests_per_namespace=3, queue_timeout_seconds=2
    )
    shares = Shares(settings)
    release_a, release_b = asyncio.Event(), asyncio.Event()
    a = [asyncio.create_task(hold(shares, "ns", "a", release_a)) for _ in range(2)]
    b = [asyncio.create_task(hold(shares, "ns", "b", release_b))]
    await until(lambda: shares.in_flight("ns") == 3)
    a_waiting = [asyncio.create_task(hold(shares, "ns", "a", release_a)) for _ in range(3)]
    await until(lambda: shares.waiting("ns", "a") == 3)
    b_waiting = asyncio.create_task(hold(shares, "ns", "b", release_b))
    await until(lambda: shares.waiting("ns", "b") == 1)
    release_b.set()  # frees a namespace slot, which only the "b" waiter can take
    # Woken at once; a lost wake-up would end only with the 2 s queue timeout, in a 503.
    await until(b_waiting.done, 1)
    assert b_waiting.exception() is None
    release_a.set()
    await asyncio.gather(*a, *b, *a_waiting, b_waiting)


def test_the_byte_budget_is_given_back_whatever_happens():
    budget = ByteBudget(SMALL)
    with contextlib.suppress(Overloaded), budget.holding("ns") as held:
        held.take(60)
        assert not held.try_take(50)  # over the namespace's 100
        held.take(50)
    assert budget.held() == 0 and budget.held("ns") == 0
    with budget.holding("a") as a, budget.holding("b") as b:
        a.take(100)
        assert not b.try_take(60)  # over the total of 150
    assert budget.held() == 0
