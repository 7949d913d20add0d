"""Give memory back to the system after a large index page.

glibc keeps freed heap memory for reuse, and raises its threshold for serving large
allocations from fresh mappings each time one is freed, so after a hostile page of tens of
megabytes the proxy's resident size would stay high long after the page is gone.
`release_soon` asks glibc to return what it holds free (`malloc_trim`), at most once a
second, after the large page's buffers have been let go. Elsewhere than glibc it does
nothing.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
from collections.abc import Callable

_MIN_INTERVAL_SECONDS = 1.0


def _trimmer() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        trim: Callable[[int], int] = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):
        return None
    return trim


class _Trimmer:
    """At most one trim scheduled, and none sooner than a second after the last."""

    def __init__(self) -> None:
        self.trim = _trimmer()
        self.scheduled = False
        self.last = -_MIN_INTERVAL_SECONDS

    def soon(self) -> None:
        if self.trim is None or self.scheduled:
            return
        loop = asyncio.get_running_loop()
        self.scheduled = True
        loop.call_later(max(0.0, self.last + _MIN_INTERVAL_SECONDS - loop.time()), self._run)

    def _run(self) -> None:
        self.scheduled = False
        self.last = asyncio.get_running_loop().time()
        if self.trim is not None:
            self.trim(0)


_TRIMMER = _Trimmer()


def release_soon() -> None:
    """Return free heap memory to the system shortly, once the caller's frame is gone."""
    _TRIMMER.soon()
