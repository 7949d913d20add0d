"""The caches on their own: the cache of files (integrity, bounds, currency, one fill at a
time, what a restart finds) and the page cache (bounds). The proxy's use of both is proven
end to end in tests/integration/test_file_cache.py."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import pytest

from connectors.proxy import filecache
from connectors.proxy.filecache import CacheSettings, FileCache
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
    fill = cache.start_flight(key)
    assert fill is not None
    fill.begin(len(content), {})
    for start in range(0, len(content), 1000):
        fill.write(content[start : start + 1000])
    return fill.finish()


def blobs(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def test_a_file_is_kept_under_its_hash_only_when_its_bytes_match(tmp_path: Path):
    cache = cache_in(tmp_path)
    good = b"a wheel" * 100
    assert filled(cache, good)
    key = (SCOPE, hashlib.sha256(good).hexdigest())
    entry = cache.lookup(key)
    assert entry is not None and entry.size == len(good)
    assert cache.path(key).read_bytes() == good

    bad = b"not what the index said" * 10
    claimed = hashlib.sha256(b"something else").hexdigest()
    assert not filled(cache, bad, claimed=claimed)
    assert cache.lookup((SCOPE, claimed)) is None
    assert blobs(tmp_path) == [cache.path(key)]  # no temporary file left behind


def test_the_cache_evicts_the_least_recently_used_and_stays_under_its_bound(tmp_path: Path):
    cache = cache_in(tmp_path, max_bytes=48 * KIB)  # 36 KiB for files, 12 KiB being filled
    contents = [bytes([n]) * (9 * KIB) for n in range(8)]
    keys = [(SCOPE, hashlib.sha256(c).hexdigest()) for c in contents]
    for n, content in enumerate(contents):
        assert filled(cache, content)
        cache.lookup(keys[0])  # the first stays in use
        on_disk = sum(p.stat().st_size for p in blobs(tmp_path))
        assert on_disk <= 36 * KIB, f"after {n + 1} files"
    assert cache.lookup(keys[0]) is not None
    assert cache.lookup(keys[1]) is None  # the oldest unused went first
    assert cache.lookup(keys[-1]) is not None
    assert cache.figures().bytes == sum(p.stat().st_size for p in blobs(tmp_path))


def test_a_file_larger_than_a_quarter_of_the_cache_is_not_kept(tmp_path: Path):
    cache = cache_in(tmp_path, max_bytes=40 * KIB)
    big = b"x" * (11 * KIB)
    key = (SCOPE, hashlib.sha256(big).hexdigest())
    for announced in (len(big), None):  # with a length, and without one
        fill = cache.start_flight(key)
        assert fill is not None
        fill.begin(announced, {})
        fill.write(big)
        assert fill.finish()  # the bytes were right: the client may have them
        assert blobs(tmp_path) == []
        assert cache.figures().bytes == 0


def test_a_fill_with_the_wrong_bytes_evicts_nothing_and_fills_share_a_quarter(tmp_path: Path):
    cache = cache_in(tmp_path, max_bytes=40 * KIB)
    kept = [bytes([n]) * (9 * KIB) for n in range(3)]
    for content in kept:
        assert filled(cache, content)
    bogus = cache.start_flight((SCOPE, "0" * 64))
    assert bogus is not None
    bogus.begin(9 * KIB, {})
    assert bogus.keeps
    second = cache.start_flight((SCOPE, "1" * 64))
    assert second is not None
    second.begin(9 * KIB, {})
    assert not second.keeps  # the reserve for files being filled (10 KiB) is taken
    on_disk = sum(p.stat().st_size for p in blobs(tmp_path))
    assert on_disk + 9 * KIB <= 40 * KIB
    bogus.write(b"z" * (9 * KIB))
    assert not bogus.finish()
    second.abandon()
    assert all(cache.lookup((SCOPE, hashlib.sha256(c).hexdigest())) for c in kept)
    assert cache.figures().bytes == 27 * KIB


def test_a_restart_removes_half_written_files_and_rechecks_what_it_finds(tmp_path: Path):
    cache = cache_in(tmp_path)
    good, other = b"kept" * 500, b"also kept" * 500
    assert filled(cache, good)
    assert filled(cache, other)
    half = cache.start_flight((SCOPE, hashlib.sha256(b"never finished").hexdigest()))
    assert half is not None
    half.begin(100, {})
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
    page = "https://registry.example/simple/a/"
    assert not cache.currency.is_current("ns", key)
    cache.currency.named(
        "ns", SCOPE, [key[1]], cache.currency.page_naming(SCOPE, page, changed=True)
    )
    assert cache.currency.is_current("ns", key)
    assert not cache.currency.is_current("ns", ("ab" * 16, key[1]))  # another scope
    assert not cache.currency.is_current("other", key)
    clock.now += 61
    assert not cache.currency.is_current("ns", key)
    cache.currency.page_naming(SCOPE, page, changed=False)  # the registry confirmed the page again
    assert cache.currency.is_current("ns", key)
    cache.currency.page_naming(SCOPE, page, changed=True)  # the page changed: what it named is not
    assert not cache.currency.is_current("ns", key)
    cache.currency.named(
        "ns", SCOPE, [key[1]], cache.currency.page_naming(SCOPE, page, changed=False)
    )
    assert cache.currency.is_current("ns", key)
    cache.currency.page_gone(SCOPE, page)  # the registry answered 404 for the page
    assert not cache.currency.is_current("ns", key)


def test_one_namespace_naming_many_files_does_not_make_anothers_stale(tmp_path: Path):
    cache = cache_in(tmp_path)
    mine = (SCOPE, "ab" * 32)
    cache.currency.named(
        "victim", SCOPE, [mine[1]], cache.currency.page_naming(SCOPE, "p", changed=True)
    )
    attacker = filecache.scope_of("attacker", "c", "https://evil.example", "")
    for page in range(30):  # 300,000 names, past every bound
        hashes = [hashlib.sha256(f"{page}/{n}".encode()).hexdigest() for n in range(10_000)]
        cache.currency.named(
            "attacker",
            attacker,
            hashes,
            cache.currency.page_naming(attacker, f"{page}", changed=True),
        )
    assert cache.currency.is_current("victim", mine)


def test_one_fill_at_a_time_and_waiters_are_woken_when_it_ends(tmp_path: Path):
    async def scenario() -> None:
        cache = cache_in(tmp_path)
        content = b"shared" * 100
        key = (SCOPE, hashlib.sha256(content).hexdigest())
        fill = cache.start_flight(key)
        assert fill is not None
        assert cache.start_flight(key) is None
        assert cache.filling(key) is fill and not fill.ended.is_set()
        fill.begin(len(content), {})
        fill.write(content)
        assert fill.finish()
        assert fill.ended.is_set() and fill.confirmed and cache.filling(key) is None
        again = cache.start_flight(key)  # a refetch of an entry: checked, never rewritten
        assert again is not None
        again.begin(len(content), {})
        assert not again.keeps

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
        validators={},
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
