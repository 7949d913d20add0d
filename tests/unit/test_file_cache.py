"""The caches on their own: the cache of files (integrity, bounds, currency, one fill at a
time, what a restart finds) and the page cache (bounds). The proxy's use of both is proven
end to end in tests/integration/test_file_cache.py."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import pytest

from connectors.proxy import filecache
from connectors.proxy.filecache import CacheSettings, FileCache, Naming
from connectors.proxy.pages import Page, PageCache

SCOPE = filecache.scope_of("ns", "c", "https://registry.example", "Basic eA==")
KIB = 1024


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def cache_in(root: Path, max_bytes: int = 64 * KIB, clock: Clock | None = None) -> FileCache:
    settings = CacheSettings(directory=root, max_bytes=max_bytes, fresh_seconds=60)
    return FileCache(settings, clock or Clock())


def filled(cache: FileCache, content: bytes, *, claimed: str | None = None) -> bool:
    """Fill an entry the way the proxy does; True if the bytes matched the claimed hash."""
    key = (SCOPE, claimed or hashlib.sha256(content).hexdigest())
    fill = cache.start_fill(key, len(content))
    assert fill is not None
    for start in range(0, len(content), 1000):
        fill.write(content[start : start + 1000])
    return fill.commit()


def blobs(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def test_a_file_is_kept_under_its_hash_only_when_its_bytes_match(tmp_path: Path):
    cache = cache_in(tmp_path)
    good = b"a wheel" * 100
    assert filled(cache, good)
    key = (SCOPE, hashlib.sha256(good).hexdigest())
    assert cache.lookup(key) == len(good)
    assert cache.path(key).read_bytes() == good

    bad = b"not what the index said" * 10
    claimed = hashlib.sha256(b"something else").hexdigest()
    assert not filled(cache, bad, claimed=claimed)
    assert cache.lookup((SCOPE, claimed)) is None
    assert blobs(tmp_path) == [cache.path(key)]  # no temporary file left behind


def test_the_cache_evicts_the_least_recently_used_and_stays_under_its_bound(tmp_path: Path):
    cache = cache_in(tmp_path, max_bytes=40 * KIB)
    contents = [bytes([n]) * (9 * KIB) for n in range(8)]
    keys = [(SCOPE, hashlib.sha256(c).hexdigest()) for c in contents]
    for n, content in enumerate(contents):
        assert filled(cache, content)
        cache.lookup(keys[0])  # the first stays in use
        on_disk = sum(p.stat().st_size for p in blobs(tmp_path))
        assert on_disk <= 40 * KIB, f"after {n + 1} files"
    assert cache.lookup(keys[0]) is not None
    assert cache.lookup(keys[1]) is None  # the oldest unused went first
    assert cache.lookup(keys[-1]) is not None
    assert cache.figures().bytes == sum(p.stat().st_size for p in blobs(tmp_path))


def test_a_file_larger_than_a_quarter_of_the_cache_is_not_kept(tmp_path: Path):
    cache = cache_in(tmp_path, max_bytes=40 * KIB)
    big = b"x" * (11 * KIB)
    assert cache.start_fill((SCOPE, hashlib.sha256(big).hexdigest()), len(big)) is None
    fill = cache.start_fill((SCOPE, hashlib.sha256(big).hexdigest()), None)  # no length given
    assert fill is not None
    fill.write(big)
    assert fill.commit()  # the bytes were right: the client may have them
    assert blobs(tmp_path) == []


def test_a_restart_removes_half_written_files_and_rechecks_what_it_finds(tmp_path: Path):
    cache = cache_in(tmp_path)
    good, other = b"kept" * 500, b"also kept" * 500
    assert filled(cache, good)
    assert filled(cache, other)
    half = cache.start_fill((SCOPE, hashlib.sha256(b"never finished").hexdigest()), 100)
    assert half is not None
    half.write(b"never")  # the process dies here: no commit, no abandon
    good_key = (SCOPE, hashlib.sha256(good).hexdigest())
    other_key = (SCOPE, hashlib.sha256(other).hexdigest())
    cache.path(other_key).write_bytes(b"damaged by a power cut")

    again = cache_in(tmp_path)
    assert half.path is not None and not half.path.exists()
    assert {p.name for p in blobs(tmp_path)} == {good_key[1], other_key[1]}
    assert asyncio.run(again.verified(good_key))
    assert not asyncio.run(again.verified(other_key))
    assert again.lookup(other_key) is None
    assert {p.name for p in blobs(tmp_path)} == {good_key[1]}


def test_an_entry_is_current_only_while_a_confirmed_page_names_it(tmp_path: Path):
    clock = Clock()
    cache = cache_in(tmp_path, clock=clock)
    key = (SCOPE, "ab" * 32)
    assert not cache.is_current(key)
    naming = Naming(clock.now)
    cache.named(SCOPE, [key[1]], naming)
    assert cache.is_current(key)
    assert not cache.is_current(("ab" * 16, key[1]))
    clock.now += 61
    assert not cache.is_current(key)
    naming.confirm(clock.now)  # the registry confirmed the page again
    assert cache.is_current(key)


def test_one_fill_at_a_time_and_waiters_are_woken_when_it_ends(tmp_path: Path):
    async def scenario() -> None:
        cache = cache_in(tmp_path)
        content = b"shared" * 100
        key = (SCOPE, hashlib.sha256(content).hexdigest())
        fill = cache.start_fill(key, len(content))
        assert fill is not None
        assert cache.start_fill(key, len(content)) is None
        ended = cache.filling(key)
        assert ended is not None and not ended.is_set()
        fill.write(content)
        assert fill.commit()
        assert ended.is_set() and cache.filling(key) is None
        assert cache.start_fill(key, len(content)) is None  # already an entry

    asyncio.run(scenario())


@pytest.mark.parametrize("secret", ["Basic eA==", "Basic eQ=="])
def test_scopes_differ_by_connector_address_and_credentials(secret: str):
    base = filecache.scope_of("ns", "c", "https://registry.example", "Basic eA==")
    others = {
        filecache.scope_of("ns", "d", "https://registry.example", "Basic eA=="),
        filecache.scope_of("other", "c", "https://registry.example", "Basic eA=="),
        filecache.scope_of("ns", "c", "https://mirror.example", "Basic eA=="),
    }
    assert base not in others
    same = filecache.scope_of("ns", "c", "https://registry.example", secret)
    assert (same == base) == (secret == "Basic eA==")


def test_clearing_removes_every_file_and_the_survey_says_so(tmp_path: Path):
    cache = cache_in(tmp_path)
    for n in range(3):
        assert filled(cache, bytes([n]) * 1000)
    assert filecache.survey(tmp_path).files == 3
    assert filecache.survey(tmp_path).bytes == 3000
    assert filecache.clear(tmp_path) == 3
    assert filecache.survey(tmp_path).files == 0


def _page(size: int) -> Page:
    return Page(
        digest=b"d", content_type="text/html", headers={}, body=b"x" * size,
        validators={}, naming=Naming(0.0),
    )  # fmt: skip


def test_the_page_cache_keeps_the_recently_used_under_its_bound_and_no_giant():
    pages = PageCache(max_bytes=100 * KIB)
    keys = [
        PageCache.key("link-map", f"https://r/simple/p{n}/", "http://proxy", "") for n in range(6)
    ]
    for key in keys:
        pages.put(key, _page(20 * KIB))
        pages.get(keys[0])  # the first stays in use
    assert pages.get(keys[0]) is not None
    assert pages.get(keys[1]) is None  # the oldest unused went first
    assert pages.get(keys[-1]) is not None
    giant = PageCache.key("link-map", "https://r/simple/giant/", "http://proxy", "")
    pages.put(giant, _page(26 * KIB))  # over a quarter of the bound
    assert pages.get(giant) is None
    assert pages.get(keys[-1]) is not None  # and it evicted nothing
    other_accept = PageCache.key("link-map", keys[-1][1], "http://proxy", "application/json")
    assert pages.get(other_accept) is None  # each Accept has its own answer
