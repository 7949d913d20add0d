"""The one way tests wait: ask again until the answer is the one wanted, within a bound.

A fixed sleep is a test that is either slow or flaky; this asks often and gives up loudly.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def eventually(check: Callable[[], T], want: T, seconds: float = 20) -> float:
    """Wait until `check()` returns `want`; how long it took, in seconds."""
    started = time.monotonic()
    seen = check()
    while seen != want:
        assert time.monotonic() - started < seconds, f"never became {want!r} (last {seen!r})"
        time.sleep(0.1)
        seen = check()
    return time.monotonic() - started


# What a check may raise while the thing it waits for is not there yet (a kubectl that
# finds no object, a Service that refuses for a moment).
NOT_YET = (AssertionError, OSError, subprocess.SubprocessError, ValueError, KeyError)


def settled(check: Callable[[], T | None], seconds: float, what: str) -> T:
    """`eventually` for a check that yields a value: wait until `check()` returns
    something other than None or False (errors of a thing not there yet count as not yet)
    and return it; on timeout, say `what` never happened and the last error."""
    found: list[T] = []
    last: list[str] = [""]

    def probe() -> bool:
        try:
            value = check()
        except NOT_YET as exc:
            last[0] = f"{type(exc).__name__}: {exc}"
            return False
        if value is None or value is False:
            return False
        found.append(value)
        return True

    try:
        eventually(probe, True, seconds)
    except AssertionError:
        raise AssertionError(f"{what}: not within {seconds:g}s {last[0]}".rstrip()) from None
    return found[-1]
