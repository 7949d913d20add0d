"""A standalone server's state directory and config directory are handled with care: one
server per state directory, Secret files others can read are reported, and a Connector
whose address carries credentials is refused without repeating them, while the rest serve.
Real `connectors serve` processes, real files."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from connectors.standalone.localregistry import LocalRegistry
from tests.support import leaks, wire
from tests.support.standalone import (
    CONNECTORS,
    Standalone,
    connector_manifest,
    secret_manifest,
    serving,
)
from tests.support.waiting import eventually

ADDRESS_PASSWORD = "Addr3ssPassw0rd-in-a-url"


def serve_again(server: Standalone) -> subprocess.CompletedProcess[str]:
    """A second `connectors serve` on the first one's directories, run to its end."""
    return subprocess.run(
        [CONNECTORS, "serve", "--config-dir", str(server.config_dir),
         "--state-dir", str(server.state_dir), "--listen", "127.0.0.1:0"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip


def state_files(server: Standalone) -> dict[str, tuple[int, bytes]]:
    return {
        str(p.relative_to(server.state_dir)): (p.stat().st_mtime_ns, p.read_bytes())
        for p in sorted(server.state_dir.rglob("*"))
        if p.is_file()
    }


def test_a_second_server_on_the_same_state_dir_refuses_to_start_and_leaves_the_first_alone(
    workdir: Path, pypi_registry: LocalRegistry
):
    with serving(
        workdir, pypi_registry.url, pypi_registry.username, pypi_registry.password
    ) as first:
        token = first.token("default", "mirror")
        url = first.connector_url("default", "mirror") + "/simple/"
        before = {k: v for k, v in state_files(first).items() if k != "status.json"}
        second = serve_again(first)
        assert second.returncode == 1
        assert second.stderr.strip().splitlines()[-1] == (
            f"error: another `connectors serve` (pid {first.pid}, serving {first.url}) already "
            f"uses the state directory {first.state_dir}: stop it first, or give this server "
            "its own --state-dir"
        )
        after = {k: v for k, v in state_files(first).items() if k != "status.json"}
        assert after == before  # server.json, keys and the lock untouched
        assert json.loads(first.place.state.server_file.read_text())["pid"] == first.pid
        assert wire.request("GET", url, headers=wire.basic(token)).status == 200
        assert first.get_connectors("default").splitlines()[1].split()[3] == "True"
    # The first stopped: the directory is free again.
    again = Standalone(workdir)
    again.start()
    try:
        assert again.place.state.server_url() == again.url
    finally:
        again.stop()


def test_a_secret_file_others_can_read_is_reported_by_serve_and_by_get(
    workdir: Path, pypi_registry: LocalRegistry
):
    server = Standalone(workdir)
    exposed = server.write(
        "default",
        "secret.yaml",
        secret_manifest("registry-secret", pypi_registry.username, pypi_registry.password),
    )
    os.chmod(exposed, 0o644)
    private = server.write(
        "private", "secret.yaml", secret_manifest("registry-secret", "someone", "Priv4tePass")
    )
    os.chmod(private, 0o600)
    server.write("default", "connector.yaml", connector_manifest("mirror", pypi_registry.url))
    warning = (
        f"{exposed} holds Secret default/registry-secret and is readable or writable by "
        f"group or others (mode 0644): run `chmod 600 {exposed}`"
    )
    server.start()
    try:
        server.wait_ready("default", "mirror")  # reported, still served
        eventually(lambda: warning in server.log_file.read_text(), True)
        assert str(private) not in server.log_file.read_text()
        got = subprocess.run(
            [CONNECTORS, "get", "connectors", "--config-dir", str(server.config_dir),
             "--state-dir", str(server.state_dir)],
            capture_output=True, text=True, timeout=30, check=True,
        )  # fmt: skip
        leaks.record("connectors get connectors", got.stdout + got.stderr)
        assert f"warning: {warning}" in got.stderr.splitlines()
        os.chmod(exposed, 0o600)
        os.utime(exposed)  # a chmod alone changes no mtime; touch it so the reload sees it
        eventually(lambda: warning in json.dumps(server.place.state.read_status()), False)
    finally:
        server.stop()
    assert server.leaked_places() == []


def test_a_connector_whose_address_carries_credentials_is_refused_and_the_others_serve(
    workdir: Path, pypi_registry: LocalRegistry
):
    leaks.PASSWORDS.add(ADDRESS_PASSWORD)
    with serving(
        workdir, pypi_registry.url, pypi_registry.username, pypi_registry.password
    ) as server:
        host = pypi_registry.url.removeprefix("http://")
        path = server.write(
            "default",
            "leaky.yaml",
            connector_manifest("leaky", f"http://mirror-user:{ADDRESS_PASSWORD}@{host}"),
            connector_manifest("fine", pypi_registry.url),
        )
        server.wait_ready("default", "fine")
        assert server.status_row("default", "leaky") is None
        problems = server.problems()
        assert problems == [
            f"{path}, document 1, field spec.address: must not carry credentials "
            "(user:password@): put them in the Secret named by spec.auth.secretRef; this "
            "Connector is not served until then"
        ]
        token = server.token("default", "mirror")
        for name, want in (("mirror", 200), ("leaky", 404)):
            url = server.connector_url("default", name) + "/simple/"
            assert wire.request("GET", url, headers=wire.basic(token)).status == want
        table = server.get_connectors("default")
        assert [row.split()[0] for row in table.splitlines()[1:]] == ["fine", "mirror"]
    log = server.log_file.read_text()
    assert "must not carry credentials" in log
    assert ADDRESS_PASSWORD not in log and "mirror-user" not in log
    assert ADDRESS_PASSWORD not in server.place.state.status_file.read_text()
