"""Which cached files are current: the hashes index pages named, and when the registry
last confirmed each page.

A cached file is served without asking the registry only while a page of the same
connector that names its hash was confirmed (fetched, or revalidated) within
`fresh_seconds`; a page that changes or disappears retires what it named at once. The names
are remembered per namespace (`_MAX_NAMED_PER_NAMESPACE`, and in all `_MAX_NAMED`, the
largest namespace giving way first), so one tenant's pages cannot make everyone else's
files stale.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Iterable

# How many hashes the proxy remembers as named by pages (about 200 bytes each): in all, per
# namespace, and per page (its last links: registries list the newest releases last). Past
# these the oldest are forgotten, and their files are revalidated with the registry.
_MAX_NAMED = 200_000
_MAX_NAMED_PER_NAMESPACE = 50_000
_NAMED_TRIM = 1_000  # names dropped at once from the largest namespace when all are full
MAX_NAMED_PER_PAGE = 10_000
_MAX_PAGES = 50_000  # pages whose naming is remembered

Key = tuple[str, str]  # (scope, sha256 hex): the cache of files' key for an entry


class Naming:
    """The hashes one index page named, and when the registry last confirmed that page."""

    __slots__ = ("confirmed_at",)

    def __init__(self, now: float) -> None:
        self.confirmed_at = now

    def confirm(self, now: float) -> None:
        self.confirmed_at = now

    def retire(self) -> None:
        """The page changed or went: nothing it named is current any more."""
        self.confirmed_at = -math.inf


class Currency:
    """What pages named, per namespace, and whether a cached file is current for one."""

    def __init__(self, fresh_seconds: float, clock: Callable[[], float]) -> None:
        self.fresh_seconds = fresh_seconds
        self._now = clock
        # Per namespace, by the scope's and the hash's bytes: compact, and made in one
        # burst when a page is rewritten, never interleaved with the rewrite's passing
        # objects, which a hostile page makes by the hundred thousand.
        self._named: dict[str, OrderedDict[bytes, Naming]] = {}
        self._named_count = 0
        self._pages: OrderedDict[tuple[str, str], Naming] = OrderedDict()

    def page_naming(self, scope: str, page_url: str, *, changed: bool) -> Naming:
        """The naming of one registry page, confirmed now. A page whose content `changed`
        retires what its previous version named and starts a new naming."""
        key = (scope, page_url)
        naming = self._pages.get(key)
        if naming is not None and changed:
            naming.retire()
            naming = None
        if naming is None:
            naming = self._pages[key] = Naming(self._now())
        else:
            naming.confirm(self._now())
        self._pages.move_to_end(key)
        while len(self._pages) > _MAX_PAGES:
            self._pages.popitem(last=False)[1].retire()
        return naming

    def page_gone(self, scope: str, page_url: str) -> None:
        """The registry no longer has this page: nothing it named is current."""
        naming = self._pages.pop((scope, page_url), None)
        if naming is not None:
            naming.retire()

    def named(self, namespace: str, scope: str, hashes: Iterable[str], naming: Naming) -> None:
        """Record that a page, confirmed as `naming` says, names these hashes (only the
        last MAX_NAMED_PER_PAGE count)."""
        prefix = bytes.fromhex(scope)
        mine = self._named.setdefault(namespace, OrderedDict())
        for sha256 in list(hashes)[-MAX_NAMED_PER_PAGE:]:
            key = prefix + bytes.fromhex(sha256)
            if mine.setdefault(key, naming) is not naming:
                mine[key] = naming
            else:
                self._named_count += 1
            mine.move_to_end(key)
        self._named_count -= _trim(mine, _MAX_NAMED_PER_NAMESPACE)
        while self._named_count > _MAX_NAMED:
            largest = max(self._named.values(), key=len)
            self._named_count -= _trim(largest, len(largest) - _NAMED_TRIM)

    def is_current(self, namespace: str, key: Key) -> bool:
        mine = self._named.get(namespace)
        if mine is None:
            return False
        naming = mine.get(bytes.fromhex(key[0]) + bytes.fromhex(key[1]))
        return naming is not None and self._now() - naming.confirmed_at <= self.fresh_seconds


def _trim(named: OrderedDict[bytes, Naming], keep: int) -> int:
    """Drop the oldest names past `keep`; how many went."""
    dropped = 0
    while len(named) > max(keep, 0):
        named.popitem(last=False)
        dropped += 1
    return dropped
