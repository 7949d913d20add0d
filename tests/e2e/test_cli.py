"""The command-line contract of DESIGN.md, run as a user runs it."""

from __future__ import annotations

import json
import socket
import stat
import subprocess
from pathlib import Path

import pytest
import yaml

from connectors.standalone import localregistry
from connectors.standalone.localregistry import LocalRegistry
from tests.support import wire
from tests.support.standalone import (
    CONNECTORS,
    Standalone,
    connector_manifest,
    secret_manifest,
    serving,
)


def cli(*args: str, place: Standalone) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            CONNECTORS,
            *args,
            "--config-dir",
            str(place.config_dir),
            "--state-dir",
            str(place.state_dir),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture(scope="module")
def served(standalone: Standalone, pypi_registry: LocalRegistry) -> Standalone:
    standalone.write(
        "default",
        "c.yaml",
        secret_manifest("registry-secret", pypi_registry.username, pypi_registry.password),
        connector_manifest("mirror", pypi_registry.url),
    )
    standalone.wait_ready("default", "mirror")
    return standalone


def test_token_command_prints_a_token_the_proxy_accepts(served: Standalone):
    result = cli("token", "mirror", "--ttl", "10m", place=served)
    assert result.returncode == 0, result.stderr
    token = result.stdout.strip()
    reply = wire.request(
        "GET", served.connector_url("default", "mirror") + "/simple/", headers=wire.basic(token)
    )
    assert reply.status == 200


def test_token_lifetime_outside_the_bounds_is_refused_clearly(served: Standalone):
    result = cli("token", "mirror", "--ttl", "48h", place=served)
    assert result.returncode == 1
    assert result.stderr.startswith("error: token lifetime 172800s is outside")
    assert "Traceback" not in result.stderr


def test_a_lifetime_that_is_no_duration_is_one_line(served: Standalone):
    result = cli("token", "mirror", "--ttl", "half an hour", place=served)
    assert result.returncode == 1
    assert result.stderr.startswith("error: cannot read duration 'half an hour'")
    assert "Traceback" not in result.stderr


def test_render_writes_owner_only_files(served: Standalone, tmp_path: Path):
    result = cli(
        "render", "mirror", "-c", "pipconf", "-c", "pypirc", "-o", str(tmp_path), place=served
    )
    assert result.returncode == 0, result.stderr
    written = sorted(Path(p).name for p in result.stdout.split())
    assert written == [".pypirc", "pip.conf"]
    for name in written:
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600


def test_render_of_an_unknown_configuration_names_the_known_ones(served: Standalone):
    result = cli("render", "mirror", "-c", "gradle", place=served)
    assert result.returncode == 1
    assert (
        "has no configuration 'gradle' (it has: pipconf, pypirc, uvtoml, poetry, pdm, hatch, netrc)"
        in result.stderr
    )


def test_token_and_render_for_several_connectors_give_one_token_each_accepts(
    served: Standalone, pypi_registry: LocalRegistry
):
    ns = "several"  # a namespace of its own: the other tests list "default"
    served.write(
        ns,
        "c.yaml",
        secret_manifest("registry-secret", pypi_registry.username, pypi_registry.password),
        connector_manifest("one", pypi_registry.url),
        connector_manifest("two", pypi_registry.url),
    )
    served.wait_ready(ns, "one")
    served.wait_ready(ns, "two")
    result = cli("token", "one", "two", "-n", ns, place=served)
    assert result.returncode == 0, result.stderr
    token = result.stdout.strip()
    for name in ("one", "two"):
        url = served.connector_url(ns, name) + "/simple/"
        assert wire.request("GET", url, headers=wire.basic(token)).status == 200
    rendered = cli("render", "one", "two", "-n", ns, "-c", "netrc", "-c", "pipconf", place=served)
    assert rendered.returncode == 0, rendered.stderr
    assert rendered.stdout.count("machine 127.0.0.1") == 1
    assert "/connectors/two/simple/" in rendered.stdout  # the extra index
    missing = cli("render", "one", "ghost", "-n", ns, "-c", "netrc", place=served)
    assert missing.returncode == 1
    assert missing.stderr.startswith(f"error: connector ghost not found in namespace {ns}")
    assert len(missing.stderr.strip().splitlines()) == 1


def test_unknown_connector_is_a_clear_error(served: Standalone):
    result = cli("token", "ghost", "-n", "default", place=served)
    assert result.returncode == 1
    assert "connector ghost not found in namespace default" in result.stderr


def test_get_without_a_running_server_probes_and_says_the_proxy_is_down(
    pypi_registry: LocalRegistry, tmp_path: Path
):
    idle = Standalone(tmp_path)
    idle.write(
        "default",
        "c.yaml",
        secret_manifest("registry-secret", pypi_registry.username, pypi_registry.password),
        connector_manifest("idle", pypi_registry.url),
    )
    result = cli("get", "connectors", place=idle)
    assert result.returncode == 0, result.stderr
    row = result.stdout.splitlines()[1].split()
    assert row[:5] == ["idle", "pypi", pypi_registry.url, "False", "ProxyServiceNotFound"]
    assert idle.leaked_places() == []


def test_token_without_a_running_server_says_to_start_one(
    tmp_path: Path, pypi_registry: LocalRegistry
):
    idle = Standalone(tmp_path)
    idle.write("default", "c.yaml", connector_manifest("idle", pypi_registry.url))
    result = cli("token", "idle", place=idle)
    assert result.returncode == 1
    assert "no standalone server is running" in result.stderr
    assert "start `connectors serve`" in result.stderr


def test_serve_can_expose_metrics_on_a_port_of_its_own(
    pypi_registry: LocalRegistry, tmp_path: Path
):
    port = localregistry.free_port()
    with serving(tmp_path, pypi_registry.url, pypi_registry.username, pypi_registry.password,
                 "--metrics-listen", f"127.0.0.1:{port}") as server:  # fmt: skip
        token = server.token("default", "mirror")
        reply = wire.request("GET", server.connector_url("default", "mirror") + "/simple/",
                             headers=wire.basic(token))  # fmt: skip
        assert reply.status == 200
        metrics = wire.request("GET", f"http://127.0.0.1:{port}/metrics").body.decode()
    counted = [
        line for line in metrics.splitlines() if line.startswith("connectors_requests_total{")
    ]
    assert any('connector="default/mirror"' in line and 'code="200"' in line for line in counted)


@pytest.mark.parametrize("flag", ["--listen", "--metrics-listen"])
def test_a_port_in_use_is_one_line_that_says_what_to_do(flag: str, tmp_path: Path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [CONNECTORS, "serve", "--config-dir", str(tmp_path / "config"),
             "--state-dir", str(tmp_path / "state"), "--listen", "127.0.0.1:0",
             flag, f"127.0.0.1:{port}"],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    (line,) = [x for x in result.stderr.splitlines() if x.startswith("error:")]
    assert f"cannot listen on 127.0.0.1:{port}" in line and "address already in use" in line
    assert flag in line


def test_render_for_a_connector_that_is_not_ready_says_so(tmp_path: Path):
    server = Standalone(tmp_path)
    unreachable = f"http://127.0.0.1:{localregistry.free_port()}"
    server.write("default", "c.yaml", connector_manifest("down", unreachable, secret=None))
    server.start()
    try:
        server.wait_ready("default", "down", status="False")
        result = cli("render", "down", "-c", "pipconf", "-o", str(tmp_path / "out"), place=server)
    finally:
        server.stop()
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out" / "pip.conf").exists()
    (warning,) = [x for x in result.stderr.splitlines() if x.startswith("warning:")]
    assert "connector default/down is not Ready (ConnectionFailed" in warning


def test_get_shows_one_connector_every_namespace_and_kubectls_formats(
    served: Standalone, pypi_registry: LocalRegistry
):
    served.write("other-ns", "c.yaml",
                 secret_manifest("registry-secret", pypi_registry.username, pypi_registry.password),
                 connector_manifest("elsewhere", pypi_registry.url))  # fmt: skip
    served.wait_ready("other-ns", "elsewhere")

    one = cli("get", "connector", "mirror", place=served)
    assert one.returncode == 0, one.stderr
    assert [line.split()[0] for line in one.stdout.splitlines()] == ["NAME", "mirror"]

    every = cli("get", "connectors", "-A", place=served)
    lines = every.stdout.splitlines()
    assert lines[0].split()[:2] == ["NAMESPACE", "NAME"]
    assert {tuple(x.split()[:2]) for x in lines[1:]} >= {("default", "mirror"),
                                                        ("other-ns", "elsewhere")}  # fmt: skip

    wide = cli("get", "connector", "mirror", "-o", "wide", place=served)
    assert wide.stdout.splitlines()[0].split()[-2:] == ["PROXY", "MESSAGE"]
    assert served.connector_url("default", "mirror") in wide.stdout

    named = cli("get", "connectors", "-n", "other-ns", "-o", "name", place=served)
    assert named.stdout == "connector.connectors.alauda.io/elsewhere\n"

    as_json = json.loads(cli("get", "connector", "mirror", "-o", "json", place=served).stdout)
    assert (as_json["kind"], as_json["metadata"]["name"]) == ("Connector", "mirror")
    ready = next(c for c in as_json["status"]["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "True"
    as_yaml = yaml.safe_load(cli("get", "connectors", "-o", "yaml", place=served).stdout)
    assert as_yaml["kind"] == "List"
    assert [item["metadata"]["name"] for item in as_yaml["items"]] == ["mirror"]
    assert pypi_registry.password not in json.dumps(as_yaml) + json.dumps(as_json)


def test_describe_shows_every_condition_with_its_reason_and_message(served: Standalone):
    result = cli("describe", "connector", "mirror", place=served)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "Name:         mirror" in out and "Namespace:    default" in out
    assert f"Proxy:        {served.connector_url('default', 'mirror')}" in out
    condition_lines = out.split("Conditions:\n", 1)[1].split("Problems:", 1)[0].splitlines()
    assert condition_lines[0].split() == ["Type", "Status", "Reason", "Message"]
    types = {line.split()[0] for line in condition_lines[1:]}
    assert {"Ready", "SecretReady", "LivenessReady", "AuthReady"} <= types


def test_get_and_describe_of_a_missing_connector_exit_1_in_one_line(served: Standalone):
    for command in (("get", "connector", "ghost"), ("describe", "connector", "ghost")):
        result = cli(*command, place=served)
        assert result.returncode == 1, command
        assert result.stderr.strip() == 'error: connector "default/ghost" not found'


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (
            ["csi", "--endpoint", "tcp://0.0.0.0:9", "--node-id", "n"],
            "--endpoint 'tcp://0.0.0.0:9' must be unix:///path/to/socket",
        ),
        (
            ["csi", "--endpoint", "unix:///tmp/x.sock", "--node-id", ""],
            "--node-id (or $NODE_NAME) is required",
        ),
        (["proxy", "--listen", "nowhere"], "'nowhere' is not HOST:PORT"),
        (["serve", "--cache-size", "lots"], "'lots' is not a size"),
    ],
)
def test_a_bad_setting_is_one_line_naming_it_never_a_traceback(argv: list[str], says: str):
    result = subprocess.run(
        [CONNECTORS, *argv], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 1, result.stderr
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert result.stderr.startswith("error: ") and says in result.stderr
