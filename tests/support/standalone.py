"""Run `connectors serve` as a real process and drive it as a user would.

Tokens and rendered files come from the same functions the `token` and `render` commands
call; status comes from the state directory that `get connectors` reads.
"""

from __future__ import annotations

import contextlib
import json
import resource
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from connectors.api import addresses
from connectors.auth import tokens
from connectors.standalone import commands
from connectors.standalone.state import StatusRow
from tests.support import leaks
from tests.support.waiting import settled, started

CONNECTORS = str(Path(sys.executable).parent / "connectors")


def connector_manifest(
    name: str,
    address: str,
    *,
    secret: str | None = "registry-secret",
    class_name: str = "pypi",
    params: dict[str, str] | None = None,
    extensions: dict[str, str] | None = None,
) -> str:
    spec: dict[str, Any] = {"connectorClassName": class_name, "address": address}
    if secret is not None:
        spec["auth"] = {"name": "basicAuth", "secretRef": {"name": secret}}
    if params:
        spec["params"] = [{"name": k, "value": v} for k, v in params.items()]
    if extensions:
        spec["addressExtensions"] = [{"name": k, "value": v} for k, v in extensions.items()]
    document = {
        "apiVersion": "connectors.alauda.io/v1alpha1",
        "kind": "Connector",
        "metadata": {"name": name},
        "spec": spec,
    }
    return json.dumps(document)  # JSON is YAML, and leaves no doubt about quoting


def secret_manifest(name: str, username: str, password: str) -> str:
    leaks.PASSWORDS.add(password)
    leaks.USERNAMES.add(username)
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name},
            "type": "kubernetes.io/basic-auth",
            "stringData": {"username": username, "password": password},
        }
    )


class Standalone:
    """One `connectors serve` process with its own config and state directories."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.config_dir = workdir / "connectors.d"
        self.state_dir = workdir / "state"
        self.log_file = workdir / "serve.log"
        self.config_dir.mkdir(parents=True, exist_ok=True)
        self.place = commands.Place(config_dir=self.config_dir, state_dir=self.state_dir)
        self.process: subprocess.Popen[bytes] | None = None
        self.url = ""

    def write(self, namespace: str, filename: str, *documents: str) -> Path:
        directory = self.config_dir / namespace
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / filename
        path.touch(mode=0o600)  # as a careful user would: manifests may hold Secrets
        path.write_text("\n---\n".join(documents) + "\n")
        return path

    def start(self, *extra: str, open_files: int | None = None) -> None:
        """Start the server; `open_files` lowers its file-descriptor limit (RLIMIT_NOFILE)."""

        def limit() -> None:
            if open_files is not None:
                resource.setrlimit(resource.RLIMIT_NOFILE, (open_files, open_files))

        with self.log_file.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    CONNECTORS,
                    "serve",
                    "--config-dir",
                    str(self.config_dir),
                    "--state-dir",
                    str(self.state_dir),
                    "--listen",
                    "127.0.0.1:0",
                    "--reconcile-interval",
                    "1",
                    *extra,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=limit,  # noqa: PLW1509 (a test harness, no threads to fear)
            )
        self.url = started(
            self.process, self.place.state.server_url, 30, "connectors serve", self.log_file
        )

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=15)
            self.process = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def connector_url(self, namespace: str, name: str) -> str:
        return addresses.standalone_url(self.url, namespace, name)

    def token(
        self, namespace: str, name: str, *, ttl_seconds: int = 1800, read_only: bool = False
    ) -> str:
        scopes = (tokens.SCOPE_DOWNLOAD,) if read_only else tokens.ALL_SCOPES
        return commands.issue_token(
            self.place, namespace, [name], ttl_seconds=ttl_seconds, scopes=scopes
        )

    def render(
        self,
        namespace: str,
        name: str,
        *configurations: str,
        into: Path | None = None,
        also: tuple[str, ...] = (),
    ) -> dict[str, str]:
        """The files of `configurations` for connector `name` and the connectors `also`."""
        files = commands.render_files(
            self.place, namespace, [name, *also], list(configurations), ttl_seconds=1800
        )
        for filename, content in files.items():
            leaks.record(f"rendered {filename}", content)
        if into is not None:
            commands.write_files(into, files)
        return files

    def problems(self) -> list[str]:
        """The manifest problems the server last published."""
        document = self.place.state.read_status()
        return document["problems"] if document else []

    def audit_lines(self) -> list[dict[str, Any]]:
        """Every audit line the server has logged so far, decoded."""
        marker = "connectors.audit: "
        text = self.log_file.read_text(errors="replace")
        return [json.loads(x.split(marker, 1)[1]) for x in text.splitlines() if marker in x]

    def status_row(self, namespace: str, name: str) -> StatusRow | None:
        document = self.place.state.read_status()
        return next(
            (
                r
                for r in (document["connectors"] if document else [])
                if (r["namespace"], r["name"]) == (namespace, name)
            ),
            None,
        )

    def ready(self, namespace: str, name: str) -> dict[str, str]:
        row = self.status_row(namespace, name)
        conditions = row["status"]["conditions"] if row else []
        return next((c for c in conditions if c["type"] == "Ready"), {})

    def wait_ready(
        self,
        namespace: str,
        name: str,
        *,
        status: str = "True",
        reason: str = "",
        timeout: float = 30,
    ) -> dict[str, str]:
        """Wait until Ready has `status` (and `reason`, when given); return the condition."""

        def reached() -> dict[str, str]:
            ready = self.ready(namespace, name)
            if ready.get("status") == status and (not reason or ready.get("reason") == reason):
                return ready
            raise AssertionError(f"Ready is {ready}")

        return settled(reached, timeout, f"{namespace}/{name} Ready {status} {reason}")

    def get_connectors(self, namespace: str) -> str:
        result = subprocess.run(
            [
                CONNECTORS,
                "get",
                "connectors",
                "-n",
                namespace,
                "--config-dir",
                str(self.config_dir),
                "--state-dir",
                str(self.state_dir),
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        leaks.record("connectors get connectors", result.stdout + result.stderr)
        return result.stdout

    def leaked_places(self) -> list[str]:
        """Where any Secret password of this server showed up in what users could see."""
        places = list(leaks.SEEN)
        if self.log_file.exists():
            places.append(("serve log", self.log_file.read_bytes()))
        if self.place.state.status_file.exists():
            places.append(("status.json", self.place.state.status_file.read_bytes()))
        return leaks.find_leaks(leaks.secrets_under(self.config_dir), places)


@contextlib.contextmanager
def serving(
    workdir: Path, address: str, username: str, password: str, *start: str, name: str = "mirror"
) -> Iterator[Standalone]:
    """`connectors serve` with one Connector `name` to `address`, Ready. The Secret and the
    Connector are in separate files (secret.yaml, connector.yaml) so a test can remove one."""
    server = Standalone(workdir)
    server.write("default", "secret.yaml", secret_manifest("registry-secret", username, password))
    server.write("default", "connector.yaml", connector_manifest(name, address))
    server.start(*start)
    try:
        server.wait_ready("default", name)
        yield server
    finally:
        server.stop()
