"""Supervised background loops: a loop that fails is logged, retried with backoff, and
reported, never left dead.

Every long-running loop in connectors (reloading manifests and signing keys, reconciling,
watching the API server) runs as `supervise(name, step, ...)`: `step` is one pass of the
loop, run again and again. A pass that raises is logged (without its message unless it is
one of our own errors or an OSError, whose messages carry no secrets by construction),
then retried after a backoff that doubles up to a ceiling; a pass that succeeds resets it.
`Health` keeps the record of every loop, and `Health.problems()` is what `/readyz` says
when a loop cannot recover: one that failed several passes in a row, or failed with a
programming error (which no retry will fix, though we keep retrying).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
import traceback
from collections.abc import Awaitable, Callable

from connectors.api.errors import ConnectorsError

log = logging.getLogger(__name__)

Step = Callable[[], Awaitable[None]]


@dataclasses.dataclass(frozen=True)
class Backoff:
    """How long to wait between passes: `every` after a success; after failures, `first`
    doubled per failure up to `ceiling`."""

    every: float = 1.0
    first: float = 0.5
    ceiling: float = 30.0

    def delay(self, failures: int) -> float:
        if failures == 0:
            return self.every
        return min(self.first * 2.0 ** (failures - 1), self.ceiling)


@dataclasses.dataclass
class LoopRecord:
    """One loop's state: consecutive failures and the last one, described safely."""

    name: str
    failures: int = 0
    last_error: str = ""
    programming_error: bool = False
    last_success: float | None = None


class Health:
    """Every supervised loop's record, read by readiness checks. A loop is reported once
    it has failed `unready_after` passes in a row, or at once for a programming error."""

    def __init__(self, unready_after: int = 3) -> None:
        self.unready_after = unready_after
        self._records: dict[str, LoopRecord] = {}

    def record(self, name: str) -> LoopRecord:
        return self._records.setdefault(name, LoopRecord(name))

    def succeeded(self, name: str) -> None:
        """A pass of `name` made progress (a long pass, such as a watch, may say so early)."""
        record = self.record(name)
        if record.failures:
            log.info("%s recovered after %d failed attempts", name, record.failures)
        record.failures = 0
        record.last_error = ""
        record.programming_error = False
        record.last_success = time.time()

    def failed(self, name: str, exc: BaseException) -> LoopRecord:
        record = self.record(name)
        record.failures += 1
        record.last_error = describe(exc)
        record.programming_error = not _expected(exc)
        return record

    def problems(self) -> list[str]:
        """Why the process is not ready, one reason per loop that cannot recover. Only the
        loop's name and count: `/readyz` answers anyone who reaches the port, so the error
        itself (paths, addresses) stays in the log, where `supervise` wrote it."""
        return [
            f"{r.name} failing ({r.failures} attempts in a row, see the log)"
            for r in self._records.values()
            if r.failures and (r.programming_error or r.failures >= self.unready_after)
        ]


async def supervise(
    name: str,
    step: Step,
    health: Health,
    backoff: Backoff = Backoff(),
    *,
    pause: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> None:
    """Run `step` forever, `backoff.every` seconds apart (`pause` waits; a loop that can be
    woken early passes its own); never let a failing pass end the loop."""
    health.record(name)
    while True:
        try:
            await step()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            record = health.failed(name, exc)
            delay = backoff.delay(record.failures)
            log.log(
                logging.ERROR if record.programming_error else logging.WARNING,
                "%s failed (attempt %d): %s; retrying in %.1fs",
                name, record.failures, record.last_error, delay,
            )  # fmt: skip
        else:
            health.succeeded(name)
            delay = backoff.delay(0)
        await pause(delay)


def describe(exc: BaseException) -> str:
    """What went wrong, safe to log and to show: our own errors and OSErrors by their
    message; anything else by its type and where it was raised, since a third-party
    message may quote a URL or a header."""
    if _expected(exc):
        return f"{exc.__class__.__name__}: {exc}"
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" at {frames[-1].filename.rpartition('/')[2]}:{frames[-1].lineno}" if frames else ""
    return f"{exc.__class__.__name__}{where} (a bug: please report it)"


def _expected(exc: BaseException) -> bool:
    return isinstance(exc, ConnectorsError | OSError)
