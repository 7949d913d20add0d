"""Standalone control-plane faults under traffic: keys rotated and retired, a Secret deleted
and recreated, the server restarted mid-upload. Nothing is let through wrongly, and no
upload is reported successful that the registry lacks."""

from __future__ import annotations

import http.client
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import jwt
import pytest

from connectors.standalone import localregistry
from connectors.standalone.localregistry import LocalRegistry
from tests.reliability.test_client_faults import BOUNDARY, upload_body
from tests.support import wire
from tests.support.standalone import CONNECTORS, Standalone, connector_manifest, serving
from tests.support.waiting import eventually, settled
from tests.support.wheels import make_wheel


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[Standalone, LocalRegistry]]:
    listen = f"127.0.0.1:{localregistry.free_port()}"  # kept across a restart
    with (
        localregistry.pypiserver(tmp_path / "registry", hash_scheme="apr_md5_crypt") as registry,
        serving(tmp_path / "server", registry.url, registry.username, registry.password,
                "--listen", listen) as server,
    ):  # fmt: skip
        yield server, registry


def status(server: Standalone, token: str) -> int:
    url = server.connector_url("default", "mirror") + "/simple/"
    return wire.request("GET", url, headers=wire.basic(token)).status


def rotate(server: Standalone, *extra: str) -> str:
    result = subprocess.run(
        [CONNECTORS, "keys", "rotate", *extra, "--config-dir", str(server.config_dir),
         "--state-dir", str(server.state_dir)],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    return result.stdout


def test_rotated_keys_keep_old_tokens_working_until_retired(
    setup: tuple[Standalone, LocalRegistry],
):
    server, _ = setup
    first = server.token("default", "mirror")
    assert "retired" not in rotate(server)
    second = server.token("default", "mirror")
    assert jwt.get_unverified_header(first)["kid"] != jwt.get_unverified_header(second)["kid"]
    assert status(server, first) == status(server, second) == 200
    out = rotate(server, "--retire-now")
    assert out.count("retired key") == 2
    third = server.token("default", "mirror")
    assert status(server, third) == 200
    # Within the reload second plus the decision cache's 10 s, the old keys' tokens stop.
    eventually(lambda: status(server, first), 401)
    eventually(lambda: status(server, second), 401)


def test_a_secret_deleted_and_recreated_under_traffic_is_503_then_200_never_anything_else(
    setup: tuple[Standalone, LocalRegistry],
):
    server, _ = setup
    token = server.token("default", "mirror")
    seen: list[int] = []
    stop = threading.Event()

    def traffic() -> None:
        while not stop.is_set():
            seen.append(status(server, token))
            time.sleep(0.05)

    worker = threading.Thread(target=traffic)
    worker.start()
    try:
        settled(lambda: seen.count(200) >= 5, 20, "traffic flowing before the outage")
        secret_file = server.config_dir / "default" / "secret.yaml"
        saved = secret_file.read_text()
        secret_file.unlink()
        eventually(lambda: seen[-1] if seen else 0, 503)
        secret_file.write_text(saved)
        eventually(lambda: seen[-1] if seen else 0, 200)
        back = len(seen)
        settled(lambda: len(seen) >= back + 5, 20, "traffic flowing after the outage")
    finally:
        stop.set()
        worker.join()
    assert set(seen) == {200, 503}
    first_503, last_503 = seen.index(503), len(seen) - 1 - seen[::-1].index(503)
    assert all(s == 503 for s in seen[first_503 : last_503 + 1])  # one outage, then back


def test_a_restart_mid_uploads_never_reports_an_upload_the_registry_lacks(
    setup: tuple[Standalone, LocalRegistry], tmp_path: Path
):
    server, registry = setup
    token = server.token("default", "mirror")
    url = server.connector_url("default", "mirror") + "/"
    outcomes: dict[str, int | str] = {}
    stop = threading.Event()

    def uploads() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            wheel = make_wheel(tmp_path / "w", f"restart-{n}", "1.0.0", payload=b"\x03" * 500_000)
            headers = {**wire.basic(token),
                       "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}  # fmt: skip
            try:
                reply = wire.request(
                    "POST", url, headers=headers, body=upload_body(wheel), timeout=10
                )
                outcomes[wheel.name] = reply.status
            except (OSError, http.client.HTTPException) as exc:
                outcomes[wheel.name] = exc.__class__.__name__
                time.sleep(0.1)

    worker = threading.Thread(target=uploads)
    worker.start()

    def accepted() -> int:
        return sum(outcome == 200 for outcome in list(outcomes.values()))

    try:
        settled(lambda: accepted() >= 2, 30, "uploads accepted before the restart")
        server.stop()
        time.sleep(0.5)  # down for a moment, as a restart is
        before_restart = accepted()
        server.start("--listen", server.url.removeprefix("http://"))
        settled(lambda: accepted() > before_restart, 30, "an upload accepted after the restart")
    finally:
        stop.set()
        worker.join()
    succeeded = [name for name, outcome in outcomes.items() if outcome == 200]
    assert succeeded, outcomes
    assert any(outcome != 200 for outcome in outcomes.values()), "the restart was not felt"
    missing = [name for name in succeeded if not (registry.packages / name).is_file()]
    assert missing == []


def readyz(server: Standalone) -> wire.Reply:
    return wire.request("GET", server.url + "/readyz")


def test_retire_now_refuses_a_token_whose_decision_is_cached_within_the_reload_second(
    setup: tuple[Standalone, LocalRegistry],
):
    server, _ = setup
    old = server.token("default", "mirror")
    assert status(server, old) == 200  # the decision is cached now, for up to 10 s
    rotate(server, "--retire-now")
    took = eventually(lambda: status(server, old), 401, seconds=15)
    assert took < 3, f"a retired key's token was still accepted {took:.1f}s after retiring"


def test_a_stray_file_among_the_keys_stops_neither_retire_now_nor_manifest_reloads(
    setup: tuple[Standalone, LocalRegistry],
):
    server, registry = setup
    old = server.token("default", "mirror")
    assert status(server, old) == 200
    (server.state_dir / "keys" / "backup.pem").write_text("not a key\n")
    (server.state_dir / "keys" / "a-directory.pem").mkdir()
    eventually(lambda: "a-directory.pem is not a signing key" in server.log_file.read_text(), True)
    assert "retired key" in rotate(server, "--retire-now")
    eventually(lambda: status(server, old), 401, seconds=5)
    assert status(server, server.token("default", "mirror")) == 200
    server.write("default", "later.yaml", connector_manifest("later", registry.url))
    server.wait_ready("default", "later", timeout=10)
    assert readyz(server).status == 200


def test_a_server_left_without_signing_keys_says_so_in_readyz_until_one_is_made(
    setup: tuple[Standalone, LocalRegistry],
):
    server, _ = setup
    token = server.token("default", "mirror")
    for key in (server.state_dir / "keys").glob("*.pem"):
        key.unlink()
    eventually(lambda: readyz(server).status, 503, seconds=15)
    body = readyz(server).body.decode()
    assert "signing-key reload failing" in body, body
    assert "no signing key left" in server.log_file.read_text()
    assert status(server, token) == 401
    rotate(server)
    eventually(lambda: readyz(server).status, 200, seconds=15)
    assert status(server, server.token("default", "mirror")) == 200


def test_a_reconcile_pass_that_keeps_failing_shows_in_readyz_until_it_recovers(
    setup: tuple[Standalone, LocalRegistry],
):
    server, _ = setup
    status_file = server.place.state.status_file
    status_file.unlink()
    status_file.mkdir()  # status.json can no longer be replaced: every pass fails
    (status_file / "in-the-way").touch()
    eventually(lambda: readyz(server).status, 503, seconds=15)
    body = readyz(server).body.decode()
    assert "reconcile failing" in body and "status.json" not in body, body
    assert "status.json" in server.log_file.read_text()
    assert "Traceback" not in server.log_file.read_text()
    (status_file / "in-the-way").unlink()
    status_file.rmdir()
    eventually(lambda: readyz(server).status, 200, seconds=15)
    assert server.ready("default", "mirror").get("status") == "True"
