"""One `connectors serve` per state directory.

Two servers on one state directory would overwrite each other's server.json and
status.json, and the one that stopped first would delete the other's address. So a server
holds an exclusive `flock` on STATE_DIR/server.lock for as long as it runs, taken before it
writes anything there; a second server finds the lock held and stops at once, having
written nothing (the lock file is opened, never truncated or removed). The kernel releases
the lock when the process ends, however it ends, so a crashed server never blocks the next.
"""

from __future__ import annotations

import fcntl
import os

from connectors.api.errors import StateError
from connectors.standalone.state import StateDir


class StateLock:
    """Held while a server runs: `StateLock.acquire(state)`, then `release()`."""

    def __init__(self, state: StateDir, fd: int) -> None:
        self.state = state
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, state: StateDir) -> StateLock:
        state.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(state.lock_file, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StateError(_held_message(state)) from None
        return cls(state, fd)

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the last descriptor releases the flock
            self._fd = None


def _held_message(state: StateDir) -> str:
    try:
        running = state.server_record()
    except StateError:
        running = None
    who = "another `connectors serve`"
    if running is not None:
        who += f" (pid {running[1]}, serving {running[0]})"
    return (
        f"{who} already uses the state directory {state.root}: stop it first, or give "
        "this server its own --state-dir"
    )
