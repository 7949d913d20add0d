"""The cache of package files, end to end: a real pypiserver behind a real nginx that logs
every request the proxy makes of it, a real `connectors serve`, real pip and twine.

Each test publishes projects of its own, so that what one caches cannot make another pass.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import signal
import socket
import threading
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest

from connectors.standalone.localregistry import LocalRegistry, pypiserver
from tests.support import clients, wire
from tests.support.standalone import CONNECTORS, Standalone, connector_manifest, secret_manifest
from tests.support.waiting import settled
from tests.support.watched import Watched, static_registry, watched
from tests.support.wheels import make_wheel, sha256_of

NS = "cache"
KIB = 1024


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalRegistry, Watched]]:
    work = tmp_path_factory.mktemp("cached-registry")
    with (
        pypiserver(work / "pypi", hash_scheme="apr_md5_crypt") as pypi,
        watched(pypi.url, work / "nginx") as front,
    ):
        yield pypi, front


def start_server(workdir: Path, registry: LocalRegistry, front: Watched, *extra: str) -> Standalone:
    server = Standalone(workdir)
    server.write(
        NS,
        "connectors.yaml",
        secret_manifest("registry-secret", registry.username, registry.password),
        connector_manifest("cached", front.url),
        connector_manifest("neighbour", front.url),
    )
    server.start(*extra)
    server.wait_ready(NS, "cached")
    server.wait_ready(NS, "neighbour")
    return server


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, registry: tuple[LocalRegistry, Watched]
) -> Iterator[Standalone]:
    running = start_server(tmp_path_factory.mktemp("cache-server"), *registry)
    yield running
    running.stop()


def publish(registry: LocalRegistry, name: str, version: str, size: int) -> Path:
    """A wheel of about `size` bytes of incompressible payload, in the registry's folder."""
    return make_wheel(registry.packages, name, version, payload=os.urandom(size))


def replace(registry: LocalRegistry, wheel: Path, size: int) -> Path:
    """The same file name with other bytes, as a registry that allows overwrites has it."""
    name, version = wheel.name.split("-")[:2]
    wheel.unlink()
    return publish(registry, name.replace("_", "-"), version, size)


def link(server: Standalone, project: str, filename: str, connector: str = "cached") -> str:
    """The file's URL as the proxy's index page gives it (also confirming the page)."""
    page = get(server, f"{server.connector_url(NS, connector)}/simple/{project}/", connector)
    assert page.status == 200, page.body
    for part in page.body.decode().split('href="')[1:]:
        url = part.split('"', 1)[0].split("#", 1)[0]
        if url.endswith("/" + filename):
            return url
    raise AssertionError(f"{filename} is not on the page: {page.body!r}")


def get(
    server: Standalone,
    url: str,
    connector: str = "cached",
    method: str = "GET",
    headers: dict[str, str] | None = None,
) -> wire.Reply:
    token = server.token(NS, connector)
    return wire.request(method, url, headers={**wire.basic(token), **(headers or {})})


def cached_names(server: Standalone) -> set[str]:
    root = server.state_dir / "cache" / "v1"
    return {p.name for p in root.glob("*/*") if p.parent.name != "filling"}


def pip_install(server: Standalone, workdir: Path, *projects: str) -> Path:
    server.render(NS, "cached", "pipconf", into=workdir)
    target = workdir / f"target-{time.monotonic_ns()}"
    result = clients.pip_install(workdir / "pip.conf", *projects, target=target)
    assert result.returncode == 0, clients.explain(result)
    return target


def test_a_repeat_install_fetches_each_index_page_again_but_no_file(
    server: Standalone, registry: tuple[LocalRegistry, Watched], tmp_path: Path
):
    pypi, front = registry
    small = publish(pypi, "repeat-small", "1.0", 20 * KIB)  # sent whole
    large = publish(pypi, "repeat-large", "1.0", 600 * KIB)  # streamed
    first = pip_install(server, tmp_path, "repeat-small", "repeat-large")
    second = pip_install(server, tmp_path, "repeat-small", "repeat-large")
    for wheel in (small, large):
        assert front.count("GET", "/packages/" + wheel.name) == 1, wheel.name
    assert front.count("GET", "/simple/repeat-large/") == 2  # no time-to-live
    payload = "repeat_large/payload.bin"
    assert (first / payload).read_bytes() == (second / payload).read_bytes()
    assert {sha256_of(small), sha256_of(large)} <= cached_names(server)


def test_another_connector_to_the_same_registry_never_gets_the_cached_file(
    server: Standalone, registry: tuple[LocalRegistry, Watched]
):
    pypi, front = registry
    wheel = publish(pypi, "shared-registry", "1.0", 300 * KIB)
    mine = link(server, "shared-registry", wheel.name)
    assert get(server, mine).status == 200
    assert get(server, mine).status == 200
    assert front.count("GET", "/packages/" + wheel.name) == 1

    theirs = link(server, "shared-registry", wheel.name, connector="neighbour")
    reply = get(server, theirs, connector="neighbour")
    assert reply.status == 200 and reply.body == wheel.read_bytes()
    assert front.count("GET", "/packages/" + wheel.name) == 2  # fetched for its own scope
    # And the first connector's token does not open the second's URL at all.
    assert get(server, theirs, connector="cached").status == 401


def test_head_and_ranges_are_answered_from_the_cache(
    server: Standalone, registry: tuple[LocalRegistry, Watched]
):
    pypi, front = registry
    wheel = publish(pypi, "ranged", "1.0", 400 * KIB)
    content = wheel.read_bytes()
    url = link(server, "ranged", wheel.name)
    assert get(server, url).body == content

    head = get(server, url, method="HEAD")
    assert (head.status, head.header("Content-Length"), head.body) == (200, str(len(content)), b"")
    part = get(server, url, headers={"Range": "bytes=100-199"})
    assert (part.status, part.body) == (206, content[100:200])
    assert part.header("Content-Range") == f"bytes 100-199/{len(content)}"
    tail = get(server, url, headers={"Range": "bytes=-10"})
    assert (tail.status, tail.body) == (206, content[-10:])
    beyond = get(server, url, headers={"Range": f"bytes={len(content)}-"})
    assert beyond.status == 416
    assert front.count("GET", "/packages/" + wheel.name) == 1
    assert front.count("HEAD", "/packages/" + wheel.name) == 0


def test_a_file_changed_on_the_registry_is_not_served_stale(
    server: Standalone, registry: tuple[LocalRegistry, Watched], tmp_path: Path
):
    pypi, front = registry
    wheel = publish(pypi, "changing", "1.0", 300 * KIB)
    before = pip_install(server, tmp_path, "changing")
    changed = replace(pypi, wheel, 310 * KIB)
    after = pip_install(server, tmp_path, "changing")
    payload = "changing/payload.bin"
    assert (after / payload).read_bytes() != (before / payload).read_bytes()
    assert (after / payload).stat().st_size == 310 * KIB
    assert front.count("GET", "/packages/" + changed.name) == 2


@pytest.mark.parametrize("size", [20 * KIB, 600 * KIB], ids=["whole", "streamed"])
def test_a_file_that_does_not_match_its_advertised_hash_is_neither_kept_nor_served_whole(
    server: Standalone, registry: tuple[LocalRegistry, Watched], size: int
):
    pypi, _ = registry
    project = f"mismatch-{size}"
    wheel = publish(pypi, project, "1.0", size)
    advertised = sha256_of(wheel)
    stale_link = link(server, project, wheel.name)
    # The registry changes the file between the index page and the download.
    changed = replace(pypi, wheel, size)
    try:
        reply = get(server, stale_link)
    except (http.client.IncompleteRead, ConnectionResetError):
        pass  # the connection was reset before the end: the client knows it is not whole
    else:
        assert reply.status == 502, reply.status
        assert b"sha256" in reply.body
    assert advertised not in cached_names(server)
    assert sha256_of(changed) not in cached_names(server)
    # The page now names the new bytes, which are fetched, checked and kept.
    fresh = get(server, link(server, project, changed.name))
    assert fresh.status == 200 and fresh.body == changed.read_bytes()
    assert sha256_of(changed) in cached_names(server)


def test_an_upload_through_the_proxy_is_on_the_next_index_page(
    server: Standalone, registry: tuple[LocalRegistry, Watched], tmp_path: Path
):
    pypi, _ = registry
    publish(pypi, "uploaded-later", "1.0", KIB)
    page_url = f"{server.connector_url(NS, 'cached')}/simple/uploaded-later/"
    assert b"uploaded_later-2.0" not in get(server, page_url).body
    newer = make_wheel(tmp_path / "dist", "uploaded-later", "2.0", payload=b"two")
    server.render(NS, "cached", "pypirc", into=tmp_path)
    result = clients.twine_upload(tmp_path / ".pypirc", newer)
    assert result.returncode == 0, clients.explain(result)
    assert newer.name.encode() in get(server, page_url).body


def test_concurrent_requests_for_one_file_cause_one_fetch(
    server: Standalone, registry: tuple[LocalRegistry, Watched]
):
    pypi, front = registry
    wheel = publish(pypi, "slow-crowd", "1.0", 512 * KIB)  # about 2 s through the watcher
    url = link(server, "slow-crowd", wheel.name)
    replies: list[wire.Reply] = []

    def fetch() -> None:
        replies.append(get(server, url))

    threads = [threading.Thread(target=fetch) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert [r.status for r in replies] == [200] * 6
    assert all(r.body == wheel.read_bytes() for r in replies)
    assert front.count("GET", "/packages/" + wheel.name) == 1


def test_a_proxy_killed_mid_fill_leaves_no_entry_and_the_next_fill_is_whole(
    tmp_path: Path, registry: tuple[LocalRegistry, Watched]
):
    pypi, _ = registry
    wheel = publish(pypi, "slow-killed", "1.0", 1024 * KIB)  # about 4 s through the watcher
    server = start_server(tmp_path / "server", pypi, registry[1])
    filling = server.state_dir / "cache" / "v1" / "filling"
    try:
        url = link(server, "slow-killed", wheel.name)
        downloader = threading.Thread(target=_fetch_ignoring_errors, args=(server, url))
        downloader.start()
        settled(
            lambda: any(p.stat().st_size > 0 for p in filling.iterdir()), 20, "the fill started"
        )
        assert server.process is not None
        os.kill(server.pid, signal.SIGKILL)
        server.process.wait(timeout=10)
        server.process = None
        downloader.join(timeout=30)
        assert list(filling.iterdir()), "the kill left its half-written file, as a crash would"

        server.start()
        assert list(filling.iterdir()) == []
        assert sha256_of(wheel) not in cached_names(server)
        reply = get(server, link(server, "slow-killed", wheel.name))
        assert reply.status == 200 and reply.body == wheel.read_bytes()
        assert sha256_of(wheel) in cached_names(server)
    finally:
        server.stop()


def _fetch_ignoring_errors(server: Standalone, url: str) -> None:
    with contextlib.suppress(OSError, http.client.HTTPException):
        get(server, url)  # the proxy is killed under it


def test_a_full_cache_evicts_stays_under_its_bound_and_can_be_cleared(
    tmp_path: Path, registry: tuple[LocalRegistry, Watched]
):
    pypi, front = registry
    server = start_server(tmp_path / "server", pypi, front, "--cache-size", "2MiB")
    try:
        wheels = [publish(pypi, f"evicted-{n}", "1.0", 400 * KIB) for n in range(7)]
        for wheel in wheels:
            project = wheel.name.split("-")[0].replace("_", "-")
            assert get(server, link(server, project, wheel.name)).status == 200
            cache = server.state_dir / "cache"
            on_disk = sum(p.stat().st_size for p in cache.rglob("*") if p.is_file())
            assert on_disk <= 2 * 1024 * KIB
        shown = _cache_command(server)
        assert "files" in shown and float(shown.split(", ")[1].split()[0]) <= 2.0

        first, last = wheels[0], wheels[-1]
        assert get(server, link(server, "evicted-0", first.name)).status == 200
        assert get(server, link(server, "evicted-6", last.name)).status == 200
        assert front.count("GET", "/packages/" + first.name) == 2  # evicted, fetched again
        assert front.count("GET", "/packages/" + last.name) == 1

        assert "removed" in _cache_command(server, "clear")
        assert cached_names(server) == set()
        assert get(server, link(server, "evicted-6", last.name)).body == last.read_bytes()
        assert front.count("GET", "/packages/" + last.name) == 2
    finally:
        server.stop()


def _cache_command(server: Standalone, *action: str) -> str:
    result = clients.run(
        [CONNECTORS, "cache", *action, "--state-dir", str(server.state_dir)], timeout=30
    )
    assert result.returncode == 0, clients.explain(result)
    return result.stdout


def test_cache_size_zero_turns_the_cache_off(
    tmp_path: Path, registry: tuple[LocalRegistry, Watched]
):
    pypi, front = registry
    server = start_server(tmp_path / "server", pypi, front, "--cache-size", "0")
    try:
        wheel = publish(pypi, "uncached", "1.0", 300 * KIB)
        url = link(server, "uncached", wheel.name)
        assert "/_sha256/" not in url
        assert get(server, url).status == 200
        assert get(server, url).status == 200
        assert front.count("GET", "/packages/" + wheel.name) == 2
        assert not (server.state_dir / "cache").exists()
    finally:
        server.stop()


def test_index_pages_are_revalidated_with_the_registrys_validators(tmp_path: Path):
    """nginx as the registry sends ETag and Last-Modified; the proxy asks conditionally and
    answers a 304 from memory, and a changed page is fetched whole."""
    root = tmp_path / "tree"
    wheel = make_wheel(root / "packages", "validated", "1.0", payload=b"v1")
    page = root / "simple" / "validated" / "index.html"
    page.parent.mkdir(parents=True)

    def write_page(*wheels: Path) -> None:
        links = "".join(
            f'<a href="../../packages/{w.name}#sha256={sha256_of(w)}">{w.name}</a>\n'
            for w in wheels
        )
        page.write_text(f"<html><body>\n{links}</body></html>\n")

    write_page(wheel)
    with static_registry(root, tmp_path / "nginx") as registry:
        server = Standalone(tmp_path / "server")
        server.write(NS, "connector.yaml", connector_manifest("static", registry.url, secret=None))
        server.start()
        try:
            server.wait_ready(NS, "static")
            url = f"{server.connector_url(NS, 'static')}/simple/validated/"
            first, second = get(server, url, "static"), get(server, url, "static")
            assert (first.status, second.status) == (200, 200)
            assert first.body == second.body and wheel.name.encode() in first.body
            statuses = [
                r.status for r in registry.requests() if r.path.startswith("/simple/validated/")
            ]
            assert statuses == [200, 304]

            newer = make_wheel(root / "packages", "validated", "2.0", payload=b"v2")
            write_page(wheel, newer)
            a_later_second(page)
            third = get(server, url, "static")
            assert newer.name.encode() in third.body
            statuses = [
                r.status for r in registry.requests() if r.path.startswith("/simple/validated/")
            ]
            assert statuses == [200, 304, 200]
        finally:
            server.stop()


# --- a registry that is nginx serving files, so that a test can make it lie --------------


def a_later_second(page: Path) -> None:
    """Date a rewritten page two seconds on: Last-Modified (and nginx's ETag) has
    one-second steps, and a page changed within the same second would be answered 304."""
    stat = page.stat()
    os.utime(page, (stat.st_atime, stat.st_mtime + 2))


def write_index(root: Path, project: str, links: dict[str, str]) -> None:
    """The project's PEP 503 page: file name -> the sha256 it advertises."""
    page = root / "simple" / project / "index.html"
    page.parent.mkdir(parents=True, exist_ok=True)
    anchors = "".join(
        f'<a href="../../packages/{name}#sha256={digest}">{name}</a>\n'
        for name, digest in links.items()
    )
    page.write_text(f"<html><body>\n{anchors}</body></html>\n")


@pytest.fixture
def static(tmp_path: Path) -> Iterator[tuple[Path, Watched, Standalone]]:
    """nginx serving a tree as an anonymous registry, and a server with a connector to it
    whose cached entries are current for 0 seconds unless a test says otherwise."""
    root = tmp_path / "tree"
    (root / "packages").mkdir(parents=True)
    (root / "simple").mkdir()
    (root / "simple" / "index.html").write_text("<html><body></body></html>\n")
    with static_registry(root, tmp_path / "nginx") as registry:
        server = Standalone(tmp_path / "server")
        server.write(NS, "connector.yaml", connector_manifest("static", registry.url, secret=None))
        server.start()
        try:
            server.wait_ready(NS, "static")
            yield root, registry, server
        finally:
            server.stop()


def test_a_file_that_lies_about_being_a_page_or_is_asked_for_in_part_is_still_checked(
    static: tuple[Path, Watched, Standalone],
):
    root, _, server = static
    advertised = os.urandom(300 * KIB)
    served = os.urandom(300 * KIB)
    # The registry serves other bytes than its page advertises, as text/html (which the
    # proxy would otherwise read as an index page).
    name = "lying-1.0.tar.gz.html"
    (root / "packages" / name).write_bytes(served)
    write_index(root, "lying", {name: hashlib.sha256(advertised).hexdigest()})
    url = link(server, "lying", name, connector="static")
    for headers in ({}, {"Range": "bytes=0-"}, {"If-None-Match": '"anything"'}):
        try:
            reply = get(server, url, connector="static", headers=headers)
        except (http.client.IncompleteRead, ConnectionResetError):
            continue  # reset before the end: not whole
        assert reply.status == 502, (headers, reply.status)
        assert reply.body != served
    assert cached_names(server) == set()


def test_a_file_a_changed_page_no_longer_names_is_not_served_from_the_cache(
    static: tuple[Path, Watched, Standalone],
):
    root, registry, server = static
    old, new = os.urandom(300 * KIB), os.urandom(300 * KIB)
    (root / "packages" / "gone-1.0.tar.gz").write_bytes(old)
    write_index(root, "gone", {"gone-1.0.tar.gz": hashlib.sha256(old).hexdigest()})
    old_link = link(server, "gone", "gone-1.0.tar.gz", connector="static")
    assert get(server, old_link, connector="static").body == old  # now cached, and current
    # The registry withdraws it and publishes another file; the page is read again.
    (root / "packages" / "gone-1.0.tar.gz").unlink()
    (root / "packages" / "gone-1.1.tar.gz").write_bytes(new)
    write_index(root, "gone", {"gone-1.1.tar.gz": hashlib.sha256(new).hexdigest()})
    a_later_second(root / "simple" / "gone" / "index.html")
    link(server, "gone", "gone-1.1.tar.gz", connector="static")
    stale = get(server, old_link, connector="static")
    assert stale.status == 404  # the registry's answer, not the cached bytes
    assert registry.count("GET", "/packages/gone-1.0.tar.gz") == 2


def test_an_entry_that_is_not_current_is_revalidated_and_served_from_disk(
    tmp_path: Path, static: tuple[Path, Watched, Standalone]
):
    root, registry, server = static
    content = os.urandom(300 * KIB)
    (root / "packages" / "locked-1.0.tar.gz").write_bytes(content)
    write_index(root, "locked", {"locked-1.0.tar.gz": hashlib.sha256(content).hexdigest()})
    url = link(server, "locked", "locked-1.0.tar.gz", connector="static")
    server.stop()  # as a lock file's client would: no index page is read from here on
    server.start("--cache-fresh-seconds", "0")
    url = server.connector_url(NS, "static") + url.split("/connectors/static", 1)[1]
    for _ in range(3):
        reply = get(server, url, connector="static")
        assert reply.status == 200 and reply.body == content
    statuses = [r.status for r in registry.requests() if r.path == "/packages/locked-1.0.tar.gz"]
    assert statuses == [200, 304, 304]  # fetched once, then only confirmed


def test_a_first_client_that_stops_reading_holds_up_no_one_else(
    static: tuple[Path, Watched, Standalone],
):
    root, _, server = static
    content = os.urandom(32 * 1024 * KIB)  # more than the sockets between them can hold
    (root / "packages" / "stuck-1.0.tar.gz").write_bytes(content)
    write_index(root, "stuck", {"stuck-1.0.tar.gz": hashlib.sha256(content).hexdigest()})
    url = link(server, "stuck", "stuck-1.0.tar.gz", connector="static")
    parts = urllib.parse.urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    stuck = socket.create_connection((parts.hostname, parts.port))
    try:
        stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        authorization = wire.basic(server.token(NS, "static"))["Authorization"]
        stuck.sendall(
            f"GET {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
            f"Authorization: {authorization}\r\n\r\n".encode()
        )
        stuck.recv(100)  # and then nothing more: the fetch it started stops with it
        # Waits while that fetch progresses, then fetches for itself, well before the
        # first client's idle timeout (60 s) would end it; the HTTP client gives up at 30 s.
        reply = get(server, url, connector="static")
        assert reply.status == 200 and reply.body == content
    finally:
        stuck.close()
