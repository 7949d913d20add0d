"""One tenant cannot hurt another through the shared proxy.

Tenant A's connector points at a well-behaved registry; tenant C's connectors point at a
registry built to hurt (tests/support/hostile.py): compression bombs, huge and malformed
pages, stalls, headers and endpoints that would leak. Everything runs against one real
`connectors serve` process; each test asserts what a user would check: tenant A's answers
and latency, the proxy's peak memory, status codes and audit lines.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import socket
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from connectors.standalone.localregistry import free_port
from tests.support import hostile, wire
from tests.support.hostile import HostileRegistry
from tests.support.standalone import Standalone, connector_manifest, secret_manifest
from tests.support.waiting import eventually, settled

VICTIM_NS, ATTACKER_NS = "tenant-a", "tenant-c"
UPSTREAM_TIMEOUT = 8
MAX_CONNECTIONS = 200
# More registries of the attacker, on other loopback addresses: to a connection pool each
# is another host, as a tenant's several registries would be.
EXTRA_HOSTS = ("127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5")


@dataclass
class Tenants:
    server: Standalone
    victim: HostileRegistry  # asked by tenant A for benign pages only
    attacker: HostileRegistry
    metrics_url: str

    def get(
        self, namespace: str, name: str, path: str, headers: dict[str, str] | None = None
    ) -> wire.Reply:
        token = self.server.token(namespace, name)
        return wire.request(
            "GET",
            self.server.connector_url(namespace, name) + path,
            headers={**wire.basic(token), **(headers or {})},
            timeout=60,
        )

    def attack(self, project: str, name: str = "bad") -> wire.Reply:
        return self.get(ATTACKER_NS, name, f"/simple/{project}/")

    def victim_page(self) -> float:
        started = time.monotonic()
        reply = self.get(VICTIM_NS, "good", "/simple/fine/")
        assert reply.status == 200, reply
        return time.monotonic() - started

    def audit_lines(self) -> list[dict[str, Any]]:
        return self.server.audit_lines()

    def peak_rss_mib(self) -> float:
        status = Path(f"/proc/{self.server.pid}/status").read_text()
        line = next(x for x in status.splitlines() if x.startswith("VmHWM:"))
        return int(line.split()[1]) / 1024


@pytest.fixture(scope="module")
def tenants(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tenants]:
    with contextlib.ExitStack() as stack:
        victim = stack.enter_context(hostile.hostile_registry())
        attacker = stack.enter_context(hostile.hostile_registry())
        extras = [stack.enter_context(hostile.hostile_registry(host)) for host in EXTRA_HOSTS]
        server = Standalone(tmp_path_factory.mktemp("tenants"))
        secret = secret_manifest("registry-secret", hostile.USERNAME, hostile.PASSWORD)
        server.write(VICTIM_NS, "good.yaml", secret, connector_manifest("good", victim.url))
        server.write(
            ATTACKER_NS, "bad.yaml", secret, connector_manifest("bad", attacker.url),
            *(connector_manifest(f"bad-{i}", r.url) for i, r in enumerate(extras)),
        )  # fmt: skip
        metrics_port = free_port()
        server.start(
            "--upstream-timeout", str(UPSTREAM_TIMEOUT),
            "--max-client-connections", str(MAX_CONNECTIONS),
            "--metrics-listen", f"127.0.0.1:{metrics_port}",
        )  # fmt: skip
        try:
            server.wait_ready(VICTIM_NS, "good")
            server.wait_ready(ATTACKER_NS, "bad")
            yield Tenants(server, victim, attacker, f"http://127.0.0.1:{metrics_port}/metrics")
        finally:
            server.stop()
        log = server.log_file.read_text(errors="replace")
        assert hostile.PASSWORD not in log
        assert "Traceback" not in log


def while_attacked(
    tenants: Tenants, attack: Callable[[], wire.Reply], attackers: int = 4, rounds: int = 20
) -> tuple[list[float], list[wire.Reply]]:
    """Tenant A's page latencies, one request after another, while `attackers` threads
    each run `attack` once."""
    asked = len(tenants.attacker.seen())
    with concurrent.futures.ThreadPoolExecutor(attackers) as pool:
        attacks = [pool.submit(attack) for _ in range(attackers)]
        settled(
            lambda: sum("/simple/" in s.path for s in tenants.attacker.seen()[asked:]) >= attackers,
            20,
            "the attacks reaching the attacker's registry",
        )
        latencies = [tenants.victim_page() for _ in range(rounds)]
        replies = [a.result(timeout=120) for a in attacks]
    return latencies, replies


def undisturbed(tenants: Tenants, rounds: int = 20) -> float:
    return max(tenants.victim_page() for _ in range(rounds))


def test_a_compression_bomb_is_refused_at_its_decoded_size_and_others_barely_notice(
    tenants: Tenants,
):
    baseline = undisturbed(tenants)
    latencies, replies = while_attacked(tenants, lambda: tenants.attack("bomb"))
    # Each bomb is stopped at 64 MiB decoded, or refused at once while the tenant's byte
    # budget is held by its other bombs.
    assert {r.status for r in replies} <= {502, 503}
    assert any(b"larger than 67108864 bytes once decoded" in r.body for r in replies)
    assert max(latencies) < baseline * 2 + 0.25, (baseline, latencies)
    assert tenants.peak_rss_mib() < 400  # four bombs of 256 MiB each, never decoded whole


def test_huge_pages_under_the_bound_cost_the_attacker_not_the_other_tenants(tenants: Tenants):
    baseline = undisturbed(tenants)
    latencies, replies = while_attacked(tenants, lambda: tenants.attack("huge"))
    # Each page is rewritten whole, or refused for now while the tenant's byte budget
    # is held by its other pages; never a 500, never a stalled proxy.
    assert {r.status for r in replies} <= {200, 503}
    assert any(r.status == 200 for r in replies)
    for reply in replies:
        if reply.status == 200:
            assert reply.body.count(b"/packages/p-") == 400_000
        else:
            assert reply.header("Retry-After") == "1"
    assert max(latencies) < baseline * 2 + 0.25, (baseline, latencies)
    assert tenants.peak_rss_mib() < 500


def test_a_page_over_the_bound_is_a_502_that_says_so(tenants: Tenants):
    reply = tenants.attack("oversized")
    assert reply.status == 502
    assert b"larger than 67108864 bytes" in reply.body


def answers_at_once(registry: HostileRegistry) -> bool:
    try:
        with urllib.request.urlopen(registry.origin + "/echo", timeout=1) as reply:
            return bool(reply.status == 200)
    except OSError:
        return False


@pytest.mark.parametrize(
    ("project", "says"),
    [
        ("bad-gzip", b"compression is corrupt"),
        ("bad-link", b"link no URL parser accepts"),
        ("unterminated", b"a JSON string that never ends"),
    ],
)
def test_a_malformed_index_page_is_a_502_naming_what_was_wrong_with_its_audit_line(
    tenants: Tenants, project: str, says: bytes
):
    # The previous tests' huge pages may still be being pushed by the attacker's registry
    # (one Python process) or rewritten by the proxy on this 2-core machine: what is tested
    # here is the answer to a malformed page, not the first-byte timeout under that load,
    # so begin once both answer promptly again.
    settled(
        lambda: answers_at_once(tenants.attacker) and tenants.victim_page() < 1.0,
        60,
        "the attacker's registry and the proxy answering promptly",
    )
    reply = tenants.attack(project)
    assert reply.status == 502
    assert says in reply.body
    assert b"tenant-c/bad" in reply.body
    path = f"/namespaces/{ATTACKER_NS}/connectors/bad/simple/{project}/"

    def statuses() -> list[int]:  # the audit line follows the response
        return [x["status"] for x in tenants.audit_lines() if x["path"] == path]

    eventually(statuses, [502])


def test_deeply_nested_json_is_served_rewritten(tenants: Tenants):
    reply = tenants.get(
        ATTACKER_NS, "bad", "/simple/nested/",
        headers={"Accept": "application/vnd.pypi.simple.v1+json"},
    )  # fmt: skip
    assert reply.status == 200
    base = tenants.server.connector_url(ATTACKER_NS, "bad")
    assert f'"url":"{base}/packages/n-1.whl"'.encode() in reply.body


def test_stalling_registries_of_one_tenant_use_its_share_not_everyones(tenants: Tenants):
    baseline = undisturbed(tenants)
    names = ["bad", *(f"bad-{i}" for i in range(len(EXTRA_HOSTS)))]
    token_for = {name: tenants.server.token(ATTACKER_NS, name) for name in names}
    stalled: list[wire.Reply] = []

    def stall(index: int) -> wire.Reply:
        name = names[index % len(names)]
        url = tenants.server.connector_url(ATTACKER_NS, name) + "/simple/stall/"
        return wire.request("GET", url, headers=wire.basic(token_for[name]), timeout=60)

    # 150 stalls across 5 registries: more than aiohttp's default pool would have held
    # for everyone, fewer than the proxy's connection budget.
    asked = len(tenants.attacker.seen())
    with concurrent.futures.ThreadPoolExecutor(150) as pool:
        attacks = [pool.submit(stall, i) for i in range(150)]
        # About 30 of them go to this registry, most of them within the namespace's share.
        settled(
            lambda: sum(s.path.endswith("/stall/") for s in tenants.attacker.seen()[asked:]) >= 20,
            20,
            "the stalls reaching the attacker's registries",
        )
        latencies = [tenants.victim_page() for _ in range(20)]
        stalled = [a.result(timeout=60) for a in attacks]
    assert max(latencies) < baseline * 2 + 0.25, (baseline, latencies)
    # Each waits out the registry's stall (or its place in the namespace's queue) and is
    # told so; how a share is counted is proven in tests/unit/test_fairness.py.
    assert {r.status for r in stalled} <= {503, 504}


def test_unauthenticated_requests_leave_no_metric_series(tenants: Tenants):
    def scrape() -> str:
        return wire.request("GET", tenants.metrics_url).body.decode()

    before = scrape()
    for i in range(50):
        url = f"{tenants.server.url}/namespaces/made-up-{i}/connectors/x-{i}/simple/"
        assert wire.request("GET", url).status == 404
        url = f"{tenants.server.url}/namespaces/{VICTIM_NS}/connectors/good/simple/"
        assert wire.request(f"BREW{i}", url).status in (400, 401)
    after = scrape()
    assert "made-up" not in after and "BREW" not in after
    series = {line.split(" ")[0] for line in after.splitlines() if not line.startswith("#")}
    grown = series - {line.split(" ")[0] for line in before.splitlines()}
    assert all('connector="(none)"' in s or 'method="OTHER"' in s for s in grown), grown


def test_a_token_reaches_the_registry_host_only_through_links_the_index_served(
    tenants: Tenants,
):
    page = tenants.attack("outside")
    assert page.status == 200
    base = tenants.server.connector_url(ATTACKER_NS, "bad")
    link = page.body.decode().split('href="', 1)[1].split('"', 1)[0]
    assert link.startswith(base + "/_origin/") and link.endswith("/files/secret.whl")
    token = tenants.server.token(ATTACKER_NS, "bad", read_only=True)
    fetched = wire.request("GET", link, headers=wire.basic(token))
    assert (fetched.status, fetched.body) == (200, hostile.SECRET_WHEEL)
    seal = link.split("/_origin/", 1)[1].split("/", 1)[0]
    seen_before = len(tenants.attacker.seen())
    for path in ("/_origin/echo", f"/_origin/{seal}/echo", f"/_origin/{seal}/files/other.whl"):
        reply = wire.request("GET", base + path, headers=wire.basic(token))
        assert reply.status == 404, path
    assert all(s.path != "/echo" for s in tenants.attacker.seen()[seen_before:])


def test_headers_pass_by_allowlist_in_both_directions(tenants: Tenants):
    sneaky = {
        "X-HTTP-Method-Override": "DELETE",
        "X-Original-URL": "/admin",
        "X-Forwarded-For": "10.0.0.1",
        "X-Forwarded-Host": "evil.example",
        "Connection": "keep-alive, X-Secret-Hop",
        "X-Secret-Hop": "hop",
        "Cookie": "session=client",
        "If-None-Match": '"page-0"',
        "User-Agent": "pip/24.0",
    }
    seen_before = len(tenants.attacker.seen())
    reply = tenants.get(ATTACKER_NS, "bad", "/simple/headers/", headers=sneaky)
    assert reply.status == 200
    (request,) = [s for s in tenants.attacker.seen()[seen_before:] if s.path.endswith("/headers/")]
    received = {k.lower() for k in request.headers}
    for name in ("x-http-method-override", "x-original-url", "x-forwarded-for",
                 "x-forwarded-host", "x-secret-hop", "cookie"):  # fmt: skip
        assert name not in received, name
    assert request.headers["If-None-Match"] == '"page-0"'
    assert request.headers["User-Agent"] == "pip/24.0"
    back = {k.lower() for k in reply.headers}
    for name in ("set-cookie", "set-cookie2", "authentication-info", "x-powered-by",
                 "proxy-authenticate"):  # fmt: skip
        assert name not in back, name
    assert reply.header("ETag") == '"page-1"'


def test_every_routed_request_leaves_exactly_one_true_audit_line(tenants: Tenants):
    token = tenants.server.token(VICTIM_NS, "good")
    base = tenants.server.connector_url(VICTIM_NS, "good")
    cases = {
        "/simple/audit-page/": wire.basic(token),
        "/packages/audit-file.whl": wire.basic(token),
        "/simple/audit-no-token/": {},
        "/simple/audit-bad-token/": wire.basic("not-a-token"),
    }
    replies = {path: wire.request("GET", base + path, headers=h) for path, h in cases.items()}
    unknown = f"{tenants.server.url}/namespaces/{VICTIM_NS}/connectors/nobody/simple/"
    replies["unknown"] = wire.request("GET", unknown)

    eventually(lambda: any("/nobody/" in x["path"] for x in tenants.audit_lines()), True)
    lines = tenants.audit_lines()
    for path, reply in replies.items():
        wanted = unknown.split(tenants.server.url, 1)[1] if path == "unknown" else None
        mine = [
            x for x in lines
            if x["path"] == (wanted or f"/namespaces/{VICTIM_NS}/connectors/good{path}")
        ]  # fmt: skip
        assert len(mine) == 1, (path, mine)
        (line,) = mine
        assert line["status"] == reply.status
        assert line["bytes_out"] == len(reply.body), (path, line)
        assert line["client"] == "127.0.0.1"
        assert token not in json.dumps(line)
    assert replies["/simple/audit-page/"].status == 200
    assert replies["/packages/audit-file.whl"].status == 200
    tokened = [x for x in lines if x["path"].endswith(("/audit-page/", "/audit-file.whl"))]
    assert {x["token"] for x in tokened} != {""} and len({x["token"] for x in tokened}) == 1


def test_a_host_header_cannot_inflate_a_rewritten_page(tenants: Tenants):
    # Rewritten links are built from the client's base URL: a 16 KiB Host would make a
    # small page enormous, so the Host must look like a host.
    reply = tenants.get(VICTIM_NS, "good", "/simple/fine/", headers={"Host": "h" * 16_000})
    assert reply.status == 400


def rss_mib(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(x for x in status.splitlines() if x.startswith("VmRSS:")).split()[1]) / 1024


def test_clients_that_stop_reading_hold_no_memory_past_the_idle_timeout(tenants: Tenants):
    token = tenants.server.token(ATTACKER_NS, "bad")
    url = tenants.server.connector_url(ATTACKER_NS, "bad") + "/simple/huge/"
    before = rss_mib(tenants.server.pid)
    host, port = url.split("/")[2].split(":")
    with contextlib.ExitStack() as stack:
        readers = [
            stack.enter_context(socket.create_connection((host, int(port)))) for _ in range(4)
        ]
        for sock in readers:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            path = url.split(port, 1)[1]
            auth = wire.basic(token)["Authorization"]
            sock.sendall(
                f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: {auth}\r\n\r\n".encode()
            )
            sock.recv(100)  # then never read again
        # The pages stay counted while unsent; the proxy gives up on each reader after the
        # idle timeout and lets go of what it held.
        settled(
            lambda: rss_mib(tenants.server.pid) < before + 100,
            UPSTREAM_TIMEOUT + 10,
            "the unread pages' memory let go",
        )
    assert tenants.victim_page() < 1
