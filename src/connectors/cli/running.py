"""Starting a long-running command: one way for every one of them.

It runs until SIGINT or SIGTERM sets the stop event it is given. A data-path process
(the standalone server, the cluster's proxy) runs on uvloop where it is installed; the
others on asyncio. The operator is the exception: kopf handles its signals.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Awaitable, Callable

Main = Callable[[asyncio.Event], Awaitable[None]]


def serve(main: Main, *, fast: bool = False) -> int:
    """Run `main(stop)` until a signal sets `stop`; 0 when it returns."""
    if fast:
        try:
            import uvloop
        except ImportError:
            pass
        else:
            uvloop.run(_until_signalled(main))
            return 0
    asyncio.run(_until_signalled(main))
    return 0


async def _until_signalled(main: Main) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signum, stop.set)
    await main(stop)
