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
  the same connector that names its hash was confirmed by the registry within
  `fresh_seconds` (`currency.py`). Otherwise the registry is asked about the file itself
  (conditionally, with the validators it gave when the file was fetched), once for all
  requests waiting on it.
- **Bounds.** Committed files take at most three quarters of `max_bytes`, least recently
  used first out, and only a verified fill evicts anything; files being filled reserve
  their size from the last quarter, so the disk never holds more than `max_bytes` and a
  fill with a wrong hash costs nobody their entries. A file larger than that quarter is
  never kept. What pages named is bounded per namespace and in all (`currency`), so one
  tenant's pages cannot make everyone else's files stale.
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
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from connectors.proxy import currency

log = logging.getLogger(__name__)

_LAYOUT = "v1"  # a directory per layout version: a later one never misreads this one
_TEMPORARY = "filling"
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_SCOPE_HEX = re.compile(r"[0-9a-f]{32}")

Key = currency.Key


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


@dataclasses.dataclass(frozen=True)
class CacheFigures:
    bytes: int
    files: int
    max_bytes: int


class Fill:
    """One request's fetch of a file, hashed as it streams to the first client and, when
    `keeps`, written into the cache under a temporary name. Requests for the same entry
    wait for it (`ended`) instead of fetching again."""

    def __init__(self, cache: FileCache, key: Key) -> None:
        self.cache = cache
        self.key = key
        self.path: Path | None = None
        self.reserved = 0  # bytes of the fill reserve held for it
        self.size = 0
        self.ended = asyncio.Event()
        self.confirmed = False  # the registry confirmed the entry's bytes: waiters may use it
        self.validators: dict[str, str] = {}  # the registry's, for revalidating the entry
        self._hash = hashlib.sha256()
        self._file: BinaryIO | None = None

    def begin(self, expected_size: int | None, validators: dict[str, str]) -> None:
        """The registry is sending the file: keep it too if the cache will take it."""
        self.validators = validators
        path = self.cache._open_fill(self, expected_size)
        if path is not None:
            try:
                self._file = path.open("wb")
                self.path = path
            except OSError as exc:
                log.warning("not caching a file: %s", exc)
                self._discard()

    @property
    def keeps(self) -> bool:
        return self._file is not None

    def write(self, chunk: bytes | bytearray | memoryview) -> None:
        """Never raises: a full or failing disk only means this file is not kept."""
        self.size += len(chunk)
        self._hash.update(chunk)
        if self._file is None:
            return
        try:
            if self.size > self.reserved and not self.cache._reserve(self, self.size):
                raise OSError("no room in the cache's reserve for files being filled")
            self._file.write(chunk)
        except OSError as exc:
            log.warning("not caching a file: %s", exc)
            self._discard()

    def digest(self) -> str:
        return self._hash.hexdigest()

    def finish(self) -> bool:
        """End the fetch: whether the bytes hash to the key. If they do and the file is
        kept, it becomes an entry, and waiters are told they may use it."""
        matches = self.digest() == self.key[1]
        if matches and self._file is not None:
            try:
                self._file.close()
                self.cache._commit(self)
            except OSError as exc:
                log.warning("not caching a file: %s", exc)
        self._discard()  # whatever was not committed
        entry = self.cache.lookup(self.key)
        if matches and entry is not None:
            self.confirmed = True
            entry.validators = self.validators or entry.validators
        self._end()
        return matches

    def revalidated(self) -> None:
        """The registry said the cached entry is still its file (304)."""
        self.confirmed = True
        self._end()

    def abandon(self) -> None:
        self._discard()
        self._end()

    def _discard(self) -> None:
        self.cache._release(self)
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()
            self._file = None
        if self.path is not None:
            with contextlib.suppress(OSError):
                self.path.unlink()
            self.path = None

    def _end(self) -> None:
        if not self.ended.is_set():
            self.cache._ended(self)
            self.ended.set()


@dataclasses.dataclass
class _Entry:
    size: int
    verified: bool  # hashed since this process started (or filled by it)
    validators: dict[str, str]  # request headers that revalidate it with the registry


class FileCache:
    def __init__(
        self, settings: CacheSettings, clock: Callable[[], float] = time.monotonic
    ) -> None:
        assert settings.directory is not None
        self.root = settings.directory / _LAYOUT
        self.max_bytes = settings.max_bytes
        self.fill_reserve = settings.max_bytes // 4
        self.max_file_bytes = self.fill_reserve
        self.committed_limit = settings.max_bytes - self.fill_reserve
        self._now = clock
        self._entries: OrderedDict[Key, _Entry] = OrderedDict()
        self._bytes = 0
        self._reserved = 0
        self._fills: dict[Key, Fill] = {}
        # Which entries may be served without asking the registry.
        self.currency = currency.Currency(settings.fresh_seconds, clock)
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
            self._entries[key] = _Entry(size, verified=False, validators={})
            self._bytes += size
        self._make_room(0)

    def path(self, key: Key) -> Path:
        return self.root / key[0] / key[1]

    def figures(self) -> CacheFigures:
        return CacheFigures(self._bytes + self._reserved, len(self._entries), self.max_bytes)

    # --- reading --------------------------------------------------------------------------

    def lookup(self, key: Key) -> _Entry | None:
        """A committed entry, marked used; None if there is none."""
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
        return entry

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

    # --- filling --------------------------------------------------------------------------

    def filling(self, key: Key) -> Fill | None:
        """The fetch under way for `key`, if any."""
        return self._fills.get(key)

    def start_flight(self, key: Key) -> Fill | None:
        """Register this request's fetch of `key`, before it is sent, so that requests for
        the same entry wait for it; None if another is under way."""
        if key in self._fills:
            return None
        fill = self._fills[key] = Fill(self, key)
        return fill

    def _open_fill(self, fill: Fill, expected_size: int | None) -> Path | None:
        """A temporary file for `fill` if the cache will keep it: no entry yet, and its
        expected size fits the fill reserve (an unknown size reserves as it grows)."""
        reserve = expected_size or 0
        if (
            self._fills.get(fill.key) is not fill  # a check beside another request's fill
            or fill.key in self._entries
            or reserve > self.max_file_bytes
            or self._reserved + reserve > self.fill_reserve
        ):
            return None
        self._reserved += reserve
        fill.reserved = reserve
        return self.root / _TEMPORARY / secrets.token_hex(8)

    def _reserve(self, fill: Fill, size: int) -> bool:
        more = size - fill.reserved
        if size > self.max_file_bytes or self._reserved + more > self.fill_reserve:
            return False
        self._reserved += more
        fill.reserved = size
        return True

    def _commit(self, fill: Fill) -> None:
        assert fill.path is not None
        self._make_room(fill.size)
        if self._bytes + fill.size > self.committed_limit:
            raise OSError("no room left in the cache")
        final = self.path(fill.key)
        final.parent.mkdir(exist_ok=True)
        os.replace(fill.path, final)
        fill.path = None
        self._release(fill)
        self._entries[fill.key] = _Entry(fill.size, verified=True, validators=fill.validators)
        self._bytes += fill.size

    def _release(self, fill: Fill) -> None:
        self._reserved -= fill.reserved
        fill.reserved = 0

    def _ended(self, fill: Fill) -> None:
        self._release(fill)
        if self._fills.get(fill.key) is fill:
            del self._fills[fill.key]

    def _make_room(self, size: int) -> None:
        """Evict least recently used entries until `size` more bytes fit."""
        while self._entries and self._bytes + size > self.committed_limit:
            key, _ = next(iter(self._entries.items()))
            self.forget(key)


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
