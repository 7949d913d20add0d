"""The one way tests wait: ask again until the answer is the one wanted, within a bound.

A fixed sleep is a test that is either slow or flaky; this asks often and gives up loudly.
"""

from __future__ import annotations

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
