"""What one tenant may take of the shared proxy, so that no tenant's registry can take it
all: every namespace's Connectors share one proxy, and a Connector's author chooses its
registry, which may stall, crawl or send enormous pages on purpose.

- `Shares`: registry requests in flight, capped per connector and per namespace. A request
  over its share waits briefly for a slot, then gets 503; at most four times the share
  may wait, and any more get 503 at once, so that a tenant can never hold more than five
  times its share of the client connections either. The shared connection pool itself
  has no global cap that one tenant could fill. The same slots bound how many index
  pages a namespace has rewritten at once (rewriting is CPU, spent in slices).
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
    requests_per_connector: int = 64
    requests_per_namespace: int = 128
    # How many may wait for a slot, as a multiple of the share; any more get 503 at once.
    waiting_per_slot: int = 4
    # Large index pages (forwarding's large_page_bytes) one namespace may have read and
    # rewritten at once: that costs CPU in slices, and this keeps one tenant's share small.
    rewrites_per_namespace: int = 4
    # Seconds a request may wait for a slot before it is refused with 503.
    queue_timeout_seconds: float = 10.0
    held_bytes_per_namespace: int = 160 * 1024 * 1024
    held_bytes_total: int = 384 * 1024 * 1024


Key = tuple[str, ...]


class Shares:
    """Counted slots under several keys at once (a connector and its namespace); a waiter
    takes all of its slots together, or none."""

    def __init__(self, settings: FairnessSettings) -> None:
        self.settings = settings
        self._used: dict[Key, int] = {}
        self._waiting: dict[Key, int] = {}
        self._freed = asyncio.Condition()

    def in_flight(self, *key: str) -> int:
        """Slots held under (namespace) or (namespace, connector)."""
        return self._used.get(key, 0)

    def waiting(self, *key: str) -> int:
        """Requests waiting for a slot under (namespace) or (namespace, connector)."""
        return self._waiting.get(key, 0)

    def request_slot(
        self, namespace: str, name: str
    ) -> contextlib.AbstractAsyncContextManager[None]:
        """One registry request of this connector, for the duration of the block."""
        limits: dict[Key, int] = {
            (namespace,): self.settings.requests_per_namespace,
            (namespace, name): self.settings.requests_per_connector,
        }
        return self._slot(limits, f"connector {namespace}/{name}")

    def rewrite_slot(self, namespace: str) -> contextlib.AbstractAsyncContextManager[None]:
        """One index-page rewrite of this namespace, for the duration of the block."""
        limits: dict[Key, int] = {("rewrite", namespace): self.settings.rewrites_per_namespace}
        return self._slot(limits, f"namespace {namespace}")

    @contextlib.asynccontextmanager
    async def _slot(self, limits: dict[Key, int], who: str) -> AsyncIterator[None]:
        if not self._fits(limits):
            waiting = self.settings.waiting_per_slot
            if any(self._waiting.get(k, 0) >= limit * waiting for k, limit in limits.items()):
                raise self._overloaded(limits, who)
            await self._wait(limits, who)
        for key in limits:
            self._used[key] = self._used.get(key, 0) + 1
        try:
            yield
        finally:
            for key in limits:
                _decrement(self._used, key)
            if self._waiting:  # nobody to wake otherwise, and taking the lock costs
                async with self._freed:
                    self._freed.notify_all()  # every waiter re-checks all of its keys

    async def _wait(self, limits: dict[Key, int], who: str) -> None:
        for key in limits:
            self._waiting[key] = self._waiting.get(key, 0) + 1
        try:
            async with asyncio.timeout(self.settings.queue_timeout_seconds), self._freed:
                await self._freed.wait_for(lambda: self._fits(limits))
        except TimeoutError:
            raise self._overloaded(limits, who) from None
        finally:
            for key in limits:
                _decrement(self._waiting, key)

    def _fits(self, limits: dict[Key, int]) -> bool:
        return all(self._used.get(key, 0) < limit for key, limit in limits.items())

    def _overloaded(self, limits: dict[Key, int], who: str) -> Overloaded:
        held = ", ".join(f"{self._used.get(k, 0)} of {limit}" for k, limit in limits.items())
        return Overloaded(f"{who} is using its whole share of the proxy ({held}): retry shortly")


def _decrement(counts: dict[Key, int], key: Key) -> None:
    left = counts.get(key, 0) - 1
    if left > 0:
        counts[key] = left
    else:
        counts.pop(key, None)  # nothing is kept for a key nobody uses


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
