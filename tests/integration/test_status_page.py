"""The status page on the admin listener, read by a real headless Chromium: connectors with
their conditions, recent requests, cache figures, and never a credential. A real pypiserver
behind a real `connectors serve`."""

from __future__ import annotations

import base64
import shutil
import struct
import subprocess
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

import pytest

from connectors.standalone import localregistry
from connectors.standalone.localregistry import LocalRegistry
from tests.conftest import require
from tests.support import leaks, wire
from tests.support.standalone import Standalone, connector_manifest, secret_manifest
from tests.support.wheels import make_wheel

NS = "team-a"
QUERY_SECRET = "q-s3cret-in-a-query"


class Page(HTMLParser):
    """The DOM as Chromium serialised it: its text, and every table row as cell texts."""

    def __init__(self, dom: str) -> None:
        super().__init__()
        self.chunks: list[str] = []
        self.rows: list[list[str]] = []
        self._row: list[str] | None = None
        self._cell: list[str] | None = None
        self.feed(dom)
        self.text = " ".join(" ".join(self.chunks).split())

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "tr":
            self._row = []
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._row is not None and self._cell is not None:
            self._row.append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self.rows.append(self._row)
            self._row = None

    def handle_data(self, data: str) -> None:
        self.chunks.append(data)
        if self._cell is not None:
            self._cell.append(data)

    def row(self, *cells: str) -> list[str]:
        """The one row whose first cells are `cells`."""
        found = [r for r in self.rows if r[: len(cells)] == list(cells)]
        assert len(found) == 1, f"rows starting {cells}: {found} in {self.rows}"
        return found[0]


def chromium(*args: str, workdir: Path) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("chromium")
    require(binary is not None, "chromium is not installed (apt-get install chromium)")
    assert binary is not None
    return subprocess.run(
        [binary, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
         f"--user-data-dir={workdir / 'chromium-profile'}", *args],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip


class Setup:
    def __init__(self, server: Standalone, registry: LocalRegistry, admin: str) -> None:
        self.server, self.registry, self.admin = server, registry, admin
        self.token = server.token(NS, "mirror")

    def get(self, path: str, *, token: str | None = None) -> wire.Reply:
        headers = wire.basic(token) if token is not None else {}
        return wire.request("GET", self.server.connector_url(NS, "mirror") + path, headers=headers)


@pytest.fixture(scope="module")
def setup(
    tmp_path_factory: pytest.TempPathFactory, pypi_registry: LocalRegistry
) -> Iterator[Setup]:
    server = Standalone(tmp_path_factory.mktemp("status-page"))
    server.write(
        NS,
        "connectors.yaml",
        secret_manifest("registry-secret", pypi_registry.username, pypi_registry.password),
        connector_manifest("mirror", pypi_registry.url),
        connector_manifest("orphan", pypi_registry.url, secret="no-such-secret"),
    )
    port = localregistry.free_port()
    server.start("--metrics-listen", f"127.0.0.1:{port}")
    try:
        server.wait_ready(NS, "mirror")
        server.wait_ready(NS, "orphan", status="False", reason="SecretNotFound")
        yield Setup(server, pypi_registry, f"http://127.0.0.1:{port}")
    finally:
        server.stop()
    leaked = server.leaked_places()
    assert not leaked, f"a registry password reached: {leaked}"


@pytest.fixture(scope="module")
def traffic(setup: Setup) -> dict[str, int]:
    """An install's requests (index page, then the file twice: fetched, then from the
    cache) and refused ones; the status each got."""
    make_wheel(setup.registry.packages, "statusdemo", "1.0", payload=b"x" * 4096)
    page = setup.get("/simple/statusdemo/", token=setup.token)
    assert page.status == 200, page.body
    href = page.body.decode().split('href="', 1)[1].split('"', 1)[0].split("#", 1)[0]
    assert "/_sha256/" in href, href
    first = wire.request("GET", href, headers=wire.basic(setup.token))
    again = wire.request("GET", href, headers=wire.basic(setup.token))
    return {
        "page": page.status,
        "fetched": first.status,
        "from cache": again.status,
        "no token": setup.get("/simple/statusdemo/").status,
        "bad token": setup.get(f"/simple/?key={QUERY_SECRET}", token="not-a-token").status,
        "markup": wire.request(
            "GET",
            setup.server.url,
            target=f"/namespaces/{NS}/connectors/mirror/simple/<i>marked</i>/",
        ).status,
    }


def test_the_admin_listener_shows_connectors_conditions_requests_and_caches_in_a_browser(
    setup: Setup, traffic: dict[str, int], tmp_path: Path
):
    assert traffic == {"page": 200, "fetched": 200, "from cache": 200, "no token": 401,
                       "bad token": 401, "markup": 401}  # fmt: skip
    dom = chromium("--dump-dom", setup.admin + "/", workdir=tmp_path).stdout
    leaks.record("status page DOM", dom)
    page = Page(dom)

    orphan = setup.server.ready(NS, "orphan")
    assert f"{NS}/mirror Ready" in page.text
    assert f"{NS}/orphan not Ready" in page.text
    assert f"SecretNotFound: {orphan['message']}" in page.text  # the headline of the box
    assert page.row("Ready", "False", "SecretNotFound", orphan["message"])
    assert page.row("SecretReady", "False", "SecretNotFound", orphan["message"])
    held = "True ConnectorClassReady · SecretReady · LivenessReady · AuthReady"
    assert page.text.count(held) == 1  # the mirror's conditions that hold, named on one line
    assert "ProxyServiceReady · Ready" in page.text

    index = f"/namespaces/{NS}/connectors/mirror/simple/statusdemo/"
    # Newest first: the markup in a path, the bad token, the missing one.
    requests = [r[1:5] for r in page.rows if len(r) == 9 and r[0] != "Time (UTC)"]
    assert requests[:3] == [
        [f"{NS}/mirror", "GET", f"/namespaces/{NS}/connectors/mirror/simple/<i>marked</i>/",
         "401"],
        [f"{NS}/mirror", "GET", f"/namespaces/{NS}/connectors/mirror/simple/", "401"],
        [f"{NS}/mirror", "GET", index, "401"],
    ]  # fmt: skip
    files = [r for r in page.rows if len(r) == 9 and "/_sha256/" in r[3]]
    assert [(r[4], r[7]) for r in files] == [("200", "hit"), ("200", "miss")]
    assert [r[4] for r in page.rows if len(r) == 9 and r[3] == index] == ["401", "200"]

    assert page.row("Cache of files")[1].startswith("1 file, ")
    assert page.row("File requests by result")[1].startswith("hit 1 · revalidated 0 · miss 1")
    assert page.row("Index pages")[1] == "reused 0 · rewritten 1"

    # Escaped: the path's markup is text in the browser, not an element.
    assert "<i>marked</i>" not in dom and "&lt;i&gt;marked&lt;/i&gt;" in dom
    password = setup.registry.password
    basic = base64.b64encode(f"{setup.registry.username}:{password}".encode()).decode()
    for secret in (password, basic, setup.token, QUERY_SECRET, "not-a-token"):
        assert secret not in dom


def test_the_page_is_sent_with_headers_that_forbid_scripts_framing_and_caching(setup: Setup):
    reply = wire.request("GET", setup.admin + "/status")
    assert reply.status == 200
    assert reply.header("Content-Type") == "text/html; charset=utf-8"
    policy = reply.header("Content-Security-Policy") or ""
    assert policy.startswith("default-src 'none'; style-src 'unsafe-inline'")
    assert "frame-ancestors 'none'" in policy
    assert reply.header("X-Content-Type-Options") == "nosniff"
    assert reply.header("Cache-Control") == "no-store"
    assert b"<script" not in reply.body


def test_the_client_port_does_not_serve_the_status_page(setup: Setup):
    for path in ("/", "/status"):
        reply = wire.request("GET", setup.server.url + path)
        assert reply.status == 404
        assert b"connectors status" not in reply.body and b"<html" not in reply.body
    assert wire.request("GET", setup.admin + "/").status == 200  # what the check guards


def test_the_admin_port_answers_no_name_a_web_page_could_rebind_to_it(setup: Setup):
    # A page on attacker.example can point that name at 127.0.0.1 and have a browser ask
    # this port; the request then carries the attacker's name, and gets nothing.
    for path in ("/", "/metrics"):
        for host in ("attacker.example", "attacker.example:9090", "127.0.0.1.nip.io"):
            reply = wire.request("GET", setup.admin + path, headers={"Host": host})
            assert reply.status == 421, (host, reply.status)
            assert reply.body == b"this port answers only to an address or localhost\n"
        for host in (
            "127.0.0.1",
            "localhost:9090",
            "[::1]",
            "connectors-proxy.connectors-system.svc",
        ):
            assert wire.request("GET", setup.admin + path, headers={"Host": host}).status == 200


def test_a_screenshot_of_the_page_is_a_png_of_the_window(setup: Setup, tmp_path: Path):
    shot = tmp_path / "status.png"
    chromium(f"--screenshot={shot}", "--window-size=1280,900", setup.admin + "/",
             workdir=tmp_path)  # fmt: skip
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])  # the IHDR chunk
    assert (width, height) == (1280, 900)
    assert len(data) > 10_000  # a page, not a blank window
