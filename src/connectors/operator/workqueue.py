"""The operator's work queue, in controller-runtime's sense: keys, not events.

- A key is queued once however often it is added (`add` deduplicates).
- A key is never worked on twice at once; one added while it is being worked on is
  worked on again right after (`done` re-queues it).
- `add_after` queues a key later; a newer request for the same key replaces the older.
- A pass ends in one of three ways (`done`): `Succeeded`, queued again after the resync
  interval; `Retry`, a retryable failure (the API server refused or could not be
  reached), queued again after a backoff that doubles per failure in a row, up to a
  ceiling; `Terminal`, a failure that retrying soon would only repeat, queued again only
  after the resync interval, with the backoff reset. A key that is `forget`-ten (its
  object is gone) is not queued again by its timers.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


class Outcome(enum.Enum):
    SUCCEEDED = "succeeded"
    RETRY = "retry"
    TERMINAL = "terminal"


@dataclasses.dataclass(frozen=True)
class Timing:
    """When keys come back: `resync_seconds` after a pass that succeeded or failed for
    good; after a retryable failure, `first_retry_seconds` doubling up to
    `max_retry_seconds`."""

    resync_seconds: float = 60.0
    first_retry_seconds: float = 2.0
    max_retry_seconds: float = 60.0


class WorkQueue(Generic[K]):
    def __init__(self, timing: Timing = Timing()) -> None:
        self.timing = timing
        self._ready: asyncio.Queue[K] = asyncio.Queue()
        self._queued: set[K] = set()
        self._active: set[K] = set()
        self._again: set[K] = set()
        self._timers: dict[K, asyncio.TimerHandle] = {}
        self._failures: dict[K, int] = {}
        self._known: set[K] = set()

    def add(self, key: K) -> None:
        """Queue `key` now (once, however often it is added)."""
        self._known.add(key)
        if key in self._active:
            self._again.add(key)
        elif key not in self._queued:
            self._queued.add(key)
            self._ready.put_nowait(key)

    def add_after(self, key: K, delay: float) -> None:
        """Queue `key` in `delay` seconds, replacing any earlier request to do so."""
        self._known.add(key)
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()
        self._timers[key] = asyncio.get_running_loop().call_later(delay, self._due, key)

    async def get(self) -> K:
        """The next key to work on; it is active until `done`."""
        key = await self._ready.get()
        self._queued.discard(key)
        self._active.add(key)
        return key

    def done(self, key: K, outcome: Outcome) -> float | None:
        """End the pass on `key`; when it comes back, in seconds (None: at once, since it
        was added meanwhile, or never, since it was forgotten)."""
        self._active.discard(key)
        if key in self._again:
            self._again.discard(key)
            self.add(key)
            return None
        if key not in self._known:
            return None
        if outcome is Outcome.RETRY:
            failures = self._failures[key] = self._failures.get(key, 0) + 1
            delay = min(
                self.timing.first_retry_seconds * 2.0 ** (failures - 1),
                self.timing.max_retry_seconds,
            )
        else:
            self._failures.pop(key, None)
            delay = self.timing.resync_seconds
        self.add_after(key, delay)
        return delay

    def forget(self, key: K) -> None:
        """The object behind `key` is gone: no timer brings it back, no backoff is kept."""
        self._known.discard(key)
        self._again.discard(key)
        self._failures.pop(key, None)
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()

    def idle(self) -> bool:
        """Nothing queued now and nothing being worked on (timers may be pending)."""
        return not self._queued and not self._active

    def close(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()

    def _due(self, key: K) -> None:
        self._timers.pop(key, None)
        if key in self._known:
            self.add(key)
