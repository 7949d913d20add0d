"""Package files kept on local disk by connector and sha256, bounded in bytes.

What makes a cached file safe to serve:
- **Scope.** Entries live under a scope derived from the connector's namespace, name,
  address and the credentials the proxy sends (`scope_of`): two connectors on one registry
  never share an entry, and a rotated Secret or a new address starts an empty scope (the
  old one ages out).
- **Integrity.** A file is written under a temporary name while it streams, hashed as it
  goes, and renamed to its sha256 only when the hash matches the one its index page
  advertised. A fill that fails, is cut short, or is killed with the process leaves only a
  temporary file, and `open` removes those. An entry found on disk at start is hashed again
  before it is first served (power loss can leave a renamed file without its bytes, and
  fsync on every fill would cost more than hashing on first use).
- **Currency.** An entry is served without asking the registry only while an index page of
  the same connector that names its hash was confirmed by the registry (fetched, or
  revalidated) within `fresh_seconds`. Otherwise the proxy fetches the file again: a file
  the registry no longer lists is not served from here, and a replica that did not serve
  the page does not guess. `Naming` records which page named what, so confirming a page
  again costs nothing per link.

Least recently used entries go first once the total would pass `max_bytes`; a file larger
than a quarter of it is never cached, so one file cannot empty the cache. Concurrent
misses for one entry cause one fill: the others wait for it and then read the entry.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import logging
import os
import re
import secrets
import shutil
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

log = logging.getLogger(__name__)

_LAYOUT = "v1"  # a directory per layout version: a later one never misreads this one
_TEMPORARY = "filling"
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_SCOPE_HEX = re.compile(r"[0-9a-f]{32}")
# How many hashes the proxy remembers as named by a page, across connectors (about 200
# bytes each), and by one page (its last links: registries list the newest releases last);
# past either the oldest are forgotten, and their files are fetched again.
_MAX_NAMED = 100_000
MAX_NAMED_PER_PAGE = 10_000

Key = tuple[str, str]  # (scope, sha256 hex)


def scope_of(namespace: str, name: str, address: str, credentials: str) -> str:
    """The cache scope of a connector; `credentials` is what the proxy sends upstream."""
    material = "\0".join(("connectors file cache v1", namespace, name, address, credentials))
    return hashlib.sha256(material.encode()).hexdigest()[:32]


@dataclasses.dataclass(frozen=True)
class CacheSettings:
    directory: Path | None = None  # None: no cache
    max_bytes: int = 2 * 1024**3
    fresh_seconds: float = 300.0

    @property
    def enabled(self) -> bool:
        return self.directory is not None and self.max_bytes > 0


class Naming:
    """The hashes one index page named, and when the registry last confirmed that page."""

    __slots__ = ("confirmed_at",)

    def __init__(self, now: float) -> None:
        self.confirmed_at = now

    def confirm(self, now: float) -> None:
        self.confirmed_at = now


@dataclasses.dataclass
class _Entry:
    size: int
    verified: bool  # hashed since this process started (or filled by it)


@dataclasses.dataclass(frozen=True)
class CacheFigures:
    bytes: int
    files: int
    max_bytes: int


class Fill:
    """One file hashed as it streams to the first client and, unless only checked,
    written into the cache under a temporary name."""

    def __init__(self, cache: FileCache | None, key: Key, path: Path | None) -> None:
        self.cache = cache
        self.key = key
        self.path = path
        self.size = 0
        self.failed = False  # the disk refused: the bytes are still checked, not kept
        self.ended = False
        self._hash = hashlib.sha256()
        self._file = path.open("wb") if path is not None else None

    @classmethod
    def checker(cls, key: Key) -> Fill:
        """Hashes only: for a file already cached, or one the cache will not take."""
        return cls(None, key, None)

    def write(self, chunk: bytes | bytearray | memoryview) -> None:
        """Never raises: a full or failing disk only means this file is not cached."""
        self.size += len(chunk)
        self._hash.update(chunk)
        if self._file is None or self.failed:
            return
        try:
            if self.cache is not None and self.size > self.cache.max_file_bytes:
                raise OSError("larger than a cached file may be")
            self._file.write(chunk)
        except OSError as exc:
            log.warning("not caching a file: %s", exc)
            self.failed = True

    def digest(self) -> str:
        return self._hash.hexdigest()

    def commit(self) -> bool:
        """Whether the bytes hash to the key; if they do, and the disk took them, they
        become an entry."""
        matches = self.digest() == self.key[1]
        if not matches or self.failed or self._file is None or self.cache is None:
            self.abandon()
            return matches
        try:
            self._file.close()
            self.cache._commit(self)
        except OSError as exc:
            log.warning("not caching a file: %s", exc)
            self.abandon()
        self.ended = True
        return True

    def abandon(self) -> None:
        self.ended = True
        if self._file is None or self.path is None or self.cache is None:
            return
        with contextlib.suppress(OSError):
            self._file.close()
        with contextlib.suppress(OSError):
            self.path.unlink()
        self.cache._ended(self.key)


class FileCache:
    def __init__(
        self, settings: CacheSettings, clock: Callable[[], float] = time.monotonic
    ) -> None:
        assert settings.directory is not None
        self.root = settings.directory / _LAYOUT
        self.max_bytes = settings.max_bytes
        self.max_file_bytes = settings.max_bytes // 4
        self.fresh_seconds = settings.fresh_seconds
        self._now = clock
        self._entries: OrderedDict[Key, _Entry] = OrderedDict()
        self._bytes = 0
        self._filling: dict[Key, asyncio.Event] = {}
        # Keyed by the scope's and the hash's bytes, made in one burst when a page is
        # rewritten: compact, and never interleaved with the rewrite's passing objects,
        # which a hostile page makes by the hundred thousand.
        self._named: OrderedDict[bytes, Naming] = OrderedDict()
        self._open()

    # --- the disk -------------------------------------------------------------------------

    def _open(self) -> None:
        """Adopt what a previous process committed; remove what it left half written."""
        shutil.rmtree(self.root / _TEMPORARY, ignore_errors=True)
        (self.root / _TEMPORARY).mkdir(parents=True, exist_ok=True)
        found: list[tuple[float, Key, int]] = []
        for scope_dir in self.root.iterdir():
            if scope_dir.name == _TEMPORARY:
                continue
            if not (scope_dir.is_dir() and _SCOPE_HEX.fullmatch(scope_dir.name)):
                _remove(scope_dir)
                continue
            for blob in scope_dir.iterdir():
                if not _SHA256_HEX.fullmatch(blob.name):
                    _remove(blob)
                    continue
                stat = blob.stat()
                found.append((stat.st_mtime, (scope_dir.name, blob.name), stat.st_size))
        for _, key, size in sorted(found):
            self._entries[key] = _Entry(size, verified=False)
            self._bytes += size
        self._make_room(0)

    def path(self, key: Key) -> Path:
        return self.root / key[0] / key[1]

    def figures(self) -> CacheFigures:
        return CacheFigures(self._bytes, len(self._entries), self.max_bytes)

    # --- reading --------------------------------------------------------------------------

    def lookup(self, key: Key) -> int | None:
        """The size of a committed entry, marking it used; None if there is none."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        self._entries.move_to_end(key)
        return entry.size

    async def verified(self, key: Key) -> bool:
        """Whether the entry's bytes still hash to its key; an entry that does not (or has
        gone from the disk) is dropped."""
        entry = self._entries.get(key)
        if entry is None:
            return False
        if entry.verified:
            return True
        try:
            digest = await asyncio.to_thread(_sha256_of, self.path(key))
        except OSError:
            digest = ""
        if digest != key[1]:
            log.warning("dropping a cached file whose bytes no longer match its hash")
            self.forget(key)
            return False
        entry.verified = True
        return True

    def forget(self, key: Key) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self._bytes -= entry.size
            with contextlib.suppress(OSError):
                self.path(key).unlink()

    # --- currency -------------------------------------------------------------------------

    def named(self, scope: str, hashes: Iterable[str], naming: Naming) -> None:
        """Record that a page, confirmed as `naming` says, names these hashes (only the
        last MAX_NAMED_PER_PAGE count)."""
        prefix = bytes.fromhex(scope)
        for sha256 in list(hashes)[-MAX_NAMED_PER_PAGE:]:
            key = prefix + bytes.fromhex(sha256)
            self._named[key] = naming
            self._named.move_to_end(key)
        while len(self._named) > _MAX_NAMED:
            self._named.popitem(last=False)

    def is_current(self, key: Key) -> bool:
        naming = self._named.get(bytes.fromhex(key[0]) + bytes.fromhex(key[1]))
        return naming is not None and self._now() - naming.confirmed_at <= self.fresh_seconds

    def now(self) -> float:
        return self._now()

    # --- filling --------------------------------------------------------------------------

    def filling(self, key: Key) -> asyncio.Event | None:
        """The event set when the fill under way for `key` ends, or None."""
        return self._filling.get(key)

    def start_fill(self, key: Key, expected_size: int | None) -> Fill | None:
        """A fill for `key`, or None if the file will not be cached (too large, no room
        the cache can make, a fill already under way, or a disk that refuses)."""
        if key in self._filling or key in self._entries:
            return None
        if expected_size is not None and (
            expected_size > self.max_file_bytes or not self._make_room(expected_size)
        ):
            return None
        path = self.root / _TEMPORARY / secrets.token_hex(8)
        try:
            fill = Fill(self, key, path)
        except OSError as exc:
            log.warning("not caching a file: %s", exc)
            return None
        self._filling[key] = asyncio.Event()
        return fill

    def _commit(self, fill: Fill) -> None:
        assert fill.path is not None
        if not self._make_room(fill.size):
            raise OSError("no room left in the cache")
        final = self.path(fill.key)
        final.parent.mkdir(exist_ok=True)
        os.replace(fill.path, final)
        self._entries[fill.key] = _Entry(fill.size, verified=True)
        self._bytes += fill.size
        self._ended(fill.key)

    def _ended(self, key: Key) -> None:
        event = self._filling.pop(key, None)
        if event is not None:
            event.set()

    def _make_room(self, size: int) -> bool:
        """Evict least recently used entries until `size` more bytes fit."""
        while self._entries and self._bytes + size > self.max_bytes:
            key, _ = next(iter(self._entries.items()))
            self.forget(key)
        return self._bytes + size <= self.max_bytes


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1024 * 1024), b""):
            digest.update(block)
    return digest.hexdigest()


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            path.unlink()


# --- for `connectors cache`, with or without a server running ----------------------------


def survey(directory: Path) -> CacheFigures:
    """What the cache under `directory` holds now (max_bytes unknown here: 0)."""
    total = files = 0
    root = directory / _LAYOUT
    for blob in _blobs(root):
        with contextlib.suppress(OSError):
            total += blob.stat().st_size
            files += 1
    return CacheFigures(total, files, 0)


def clear(directory: Path) -> int:
    """Remove every cached file; a running proxy notices each as it next looks. Returns
    how many were removed."""
    removed = 0
    for blob in _blobs(directory / _LAYOUT):
        with contextlib.suppress(OSError):
            blob.unlink()
            removed += 1
    return removed


def _blobs(root: Path) -> Iterator[Path]:
    if not root.is_dir():
        return
    for scope_dir in root.iterdir():
        if scope_dir.name != _TEMPORARY and scope_dir.is_dir():
            yield from (b for b in scope_dir.iterdir() if _SHA256_HEX.fullmatch(b.name))
