"""The one way tests wait: ask again until the answer is the one wanted, within a bound.

A fixed sleep is a test that is either slow or flaky; this asks often and gives up loudly.
"""

from __future__ import annotations

import asyncio
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
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


def holds(check: Callable[[], T], want: T, seconds: float) -> None:
    """The opposite wait, for what must not happen: ask again and again for `seconds`
    that `check()` stays `want`, and fail on the first answer that is not."""
    until = time.monotonic() + seconds
    while True:
        seen = check()
        assert seen == want, f"became {seen!r} instead of staying {want!r}"
        if time.monotonic() >= until:
            return
        time.sleep(0.1)


def started(
    process: subprocess.Popen[bytes],
    check: Callable[[], T | None],
    seconds: float,
    what: str,
    log: Path | None = None,
) -> T:
    """`settled` for a process coming up: fails at once if the process exits first,
    quoting its `log` when there is one."""

    def alive_and(check_: Callable[[], T | None]) -> T | None:
        if process.poll() is not None:
            output = log.read_text(errors="replace") if log is not None else ""
            raise RuntimeError(f"{what}: exited with code {process.returncode}\n{output}")
        return check_()

    return settled(lambda: alive_and(check), seconds, what)


def answers(url: str, context: ssl.SSLContext | None = None) -> bool:
    """Whether anything answers HTTP at `url`, whatever the status (an error status is an
    answer); a connection refused is not yet."""
    try:
        with urllib.request.urlopen(url, timeout=2, context=context):
            return True
    except urllib.error.HTTPError:
        return True


async def until(check: Callable[[], bool], seconds: float = 5) -> None:
    """`eventually` inside an event loop: let other tasks run until `check()` is true."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not check():
        assert loop.time() < deadline, f"not within {seconds:g}s"
        await asyncio.sleep(0.001)
