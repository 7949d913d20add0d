"""The tests' one way to wait: ask again until the answer is there, then go on at once.

A fixed sleep is a test that is either slow or flaky; `eventually` polls a check instead,
and its failure says what never happened and the last error seen on the way.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")
# What a check may raise while the thing it waits for is not there yet.
NOT_YET = (AssertionError, OSError, subprocess.SubprocessError, ValueError, KeyError)


def eventually(
    check: Callable[[], T | None], timeout: float, what: str, interval: float = 0.25
) -> T:
    """Call `check` until it returns something other than None or False (then return
    that); fail after `timeout` seconds, saying `what` never happened."""
    deadline = time.monotonic() + timeout
    last = ""
    while True:
        try:
            result = check()
            if result is not None and result is not False:
                return result
            last = ""
        except NOT_YET as exc:
            last = f" (last: {type(exc).__name__}: {exc})"
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:g}s{last}")
        time.sleep(interval)
