"""What one tenant may take of the shared proxy, so that no tenant's registry can take it
all: every namespace's Connectors share one proxy, and a Connector's author chooses its
registry, which may stall, crawl or send enormous pages on purpose.

- `Shares`: registry requests in flight, capped per connector and per namespace. A request
  over its share waits briefly for a slot, then gets 503; at most as many wait as the
  share holds, and any more get 503 at once, so that a tenant can never hold more than
  twice its share of the client connections either. The shared connection pool itself
  has no global cap that one tenant could fill.
- `ByteBudget`: bytes the proxy holds for index pages and small bodies, capped per
  namespace and overall. A page that does not fit is refused with 503 (or, for a small
  body, streamed instead of held).

State exists only for connectors that have requests in flight (entries are dropped when
their count returns to zero), so nothing here grows with traffic that has ended, and only
authorized requests ever reach it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Iterator

from connectors.api.errors import Overloaded


@dataclasses.dataclass(frozen=True)
class FairnessSettings:
    requests_per_connector: int = 32
    requests_per_namespace: int = 64
    # Seconds a request may wait for a slot before it is refused with 503.
    queue_timeout_seconds: float = 10.0
    held_bytes_per_namespace: int = 160 * 1024 * 1024
    held_bytes_total: int = 384 * 1024 * 1024


class _Gate:
    """A counting slot with waiters, dropped by its owner once nobody uses it."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self.waiters = 0
        self.freed = asyncio.Condition()


class Shares:
    def __init__(self, settings: FairnessSettings) -> None:
        self.settings = settings
        self._gates: dict[tuple[str, ...], _Gate] = {}

    def in_flight(self, namespace: str, name: str | None = None) -> int:
        gate = self._gates.get((namespace,) if name is None else (namespace, name))
        return gate.used if gate else 0

    @contextlib.asynccontextmanager
    async def slot(self, namespace: str, name: str) -> AsyncIterator[None]:
        """Hold one registry request of this connector for the duration of the block."""
        keys = ((namespace,), (namespace, name))
        limits = (self.settings.requests_per_namespace, self.settings.requests_per_connector)
        gates = [
            self._gates.setdefault(key, _Gate(limit))
            for key, limit in zip(keys, limits, strict=True)
        ]
        for gate in gates:
            gate.waiters += 1
        try:
            async with asyncio.timeout(self.settings.queue_timeout_seconds):
                await self._take(gates)
        except TimeoutError:
            raise self._overloaded(namespace, name) from None
        finally:
            for gate in gates:
                gate.waiters -= 1
        try:
            yield
        finally:
            for gate in gates:
                gate.used -= 1
                async with gate.freed:
                    gate.freed.notify()
            self._forget_unused(keys, gates)

    def _forget_unused(self, keys: tuple[tuple[str, ...], ...], gates: list[_Gate]) -> None:
        for key, gate in zip(keys, gates, strict=True):
            if gate.used == 0 and gate.waiters == 0:
                self._gates.pop(key, None)

    def _overloaded(self, namespace: str, name: str) -> Overloaded:
        return Overloaded(
            f"connector {namespace}/{name} has {self.in_flight(namespace, name)} requests in "
            f"flight to its registry, its namespace {self.in_flight(namespace)}: retry shortly"
        )

    @staticmethod
    async def _take(gates: list[_Gate]) -> None:
        while True:
            if all(gate.used < gate.limit for gate in gates):
                for gate in gates:
                    gate.used += 1
                return
            full = next(gate for gate in gates if gate.used >= gate.limit)
            async with full.freed:
                await full.freed.wait()


class ByteBudget:
    def __init__(self, settings: FairnessSettings) -> None:
        self.settings = settings
        self.total = 0
        self._by_namespace: dict[str, int] = {}

    def held(self, namespace: str | None = None) -> int:
        return self.total if namespace is None else self._by_namespace.get(namespace, 0)

    def try_take(self, namespace: str, size: int) -> bool:
        held = self._by_namespace.get(namespace, 0)
        if (
            held + size > self.settings.held_bytes_per_namespace
            or self.total + size > self.settings.held_bytes_total
        ):
            return False
        self._by_namespace[namespace] = held + size
        self.total += size
        return True

    def take(self, namespace: str, size: int) -> None:
        if not self.try_take(namespace, size):
            raise Overloaded(
                f"the proxy is holding as many index pages of namespace {namespace} as it "
                "may: retry shortly"
            )

    def give_back(self, namespace: str, size: int) -> None:
        held = self._by_namespace.get(namespace, 0) - size
        if held <= 0:
            self._by_namespace.pop(namespace, None)
        else:
            self._by_namespace[namespace] = held
        self.total -= size

    @contextlib.contextmanager
    def holding(self, namespace: str) -> Iterator[Holding]:
        """What one request holds, all given back when the block ends."""
        held = Holding(self, namespace)
        try:
            yield held
        finally:
            self.give_back(namespace, held.size)


class Holding:
    def __init__(self, budget: ByteBudget, namespace: str) -> None:
        self.budget = budget
        self.namespace = namespace
        self.size = 0

    def take(self, size: int) -> None:
        self.budget.take(self.namespace, size)
        self.size += size

    def try_take(self, size: int) -> bool:
        if not self.budget.try_take(self.namespace, size):
            return False
        self.size += size
        return True
