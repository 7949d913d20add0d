"""The last requests the proxy answered, kept in memory for the status page.

Each entry is a subset of the audit line: when, which connector, method, path without its
query, status, bytes, cache result and duration. Never the identity, the Pod, the token's
digest or the client's address: the status page is for seeing what the proxy does, not who
asked. The buffer is bounded, and so is every text in it, so a flood of odd requests costs
a fixed amount of memory.
"""

from __future__ import annotations

import collections
import dataclasses
import time

DEFAULT_SIZE = 50
_MAX_PATH = 240  # characters of a path kept; the rest is replaced by "…"
_MAX_METHOD = 16


@dataclasses.dataclass(frozen=True)
class RecentRequest:
    at: float  # seconds since the epoch, when the answer ended
    connector: str  # namespace/name as routed; it may name no Connector (known is False)
    known: bool
    method: str
    path: str  # without the query, which could carry anything
    status: int
    bytes_in: int
    bytes_out: int
    cache: str  # hit, revalidated, miss, refetch, bypass or empty
    duration_ms: float


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


class RecentRequests:
    """A ring of the last `size` requests, newest last."""

    def __init__(self, size: int = DEFAULT_SIZE) -> None:
        self._ring: collections.deque[RecentRequest] = collections.deque(maxlen=size)

    def add(
        self,
        *,
        connector: str,
        known: bool,
        method: str,
        path: str,
        status: int,
        bytes_in: int,
        bytes_out: int,
        cache: str,
        duration_ms: float,
    ) -> None:
        self._ring.append(
            RecentRequest(
                at=time.time(),
                connector=connector,
                known=known,
                method=_clip(method, _MAX_METHOD),
                path=_clip(path.partition("?")[0], _MAX_PATH),
                status=status,
                bytes_in=bytes_in,
                bytes_out=bytes_out,
                cache=cache,
                duration_ms=duration_ms,
            )
        )

    def newest_first(self) -> list[RecentRequest]:
        return list(reversed(self._ring))

    def __len__(self) -> int:
        return len(self._ring)
