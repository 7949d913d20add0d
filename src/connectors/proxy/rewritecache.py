"""Rewritten index pages, kept for reuse: many clients ask for the same pages, and
rewriting a page's links costs far more than hashing it.

The key is what the rewrite depends on: the connector (its link map), the page's URL, the
base the client used, the content type, and a digest of the registry's body. A page that
changed upstream has another digest, so nothing stale is ever served; entries go oldest
first once the cache holds `max_bytes`.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable

Key = tuple[Hashable, str, str, str, bytes]


class RewriteCache:
    def __init__(self, max_bytes: int = 32 * 1024 * 1024) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[Key, bytes] = OrderedDict()
        self._bytes = 0
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(
        link_map: Hashable, page_url: str, client_base: str, content_type: str, digest: bytes
    ) -> Key:
        """`link_map` is the connector's (frozen, so equal maps rewrite equally); `digest`
        is a collision-resistant digest of the registry's decoded body (the caller hashes
        it while reading, in slices)."""
        return (link_map, page_url, client_base, content_type, digest)

    def get(self, key: Key) -> bytes | None:
        found = self._entries.get(key)
        if found is None:
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return found

    def put(self, key: Key, rewritten: bytes | bytearray) -> None:
        if len(rewritten) > self.max_bytes // 4:
            return  # one huge page must not evict everything else
        rewritten = bytes(rewritten)  # the caller's buffer may change; an entry must not
        previous = self._entries.pop(key, None)
        if previous is not None:
            self._bytes -= len(previous)
        self._entries[key] = rewritten
        self._bytes += len(rewritten)
        while self._bytes > self.max_bytes:
            _, evicted = self._entries.popitem(last=False)
            self._bytes -= len(evicted)
