"""`connectors demo`: the seed quick start's story, steps 2 to 4, on this machine.

A real registry with a password, the seed's Secret and Connector, a real twine upload and
a real pip install through the proxy, and proof that the password never reached the client.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import sys
import tempfile
import textwrap
from pathlib import Path

from connectors.api.errors import ConnectorsError
from connectors.auth import tokens
from connectors.standalone import commands, listing, localregistry
from connectors.standalone.server import ServeSettings, StandaloneServer

NAMESPACE = "connectors-pypi-demo"
CONNECTOR = "pypi-connector"
STEPS = 7

# The seed's step 2 as its reader copies it, the registry's address and credentials filled in.
SEED_MANIFEST = """\
kind: Secret
apiVersion: v1
metadata:
  name: pypi-registry-secret
type: kubernetes.io/basic-auth
stringData:
  username: {username} # Replace with your PyPI registry username
  password: {password} # Replace with your PyPI registry password
---
apiVersion: connectors.alauda.io/v1alpha1
kind: Connector
metadata:
  name: pypi-connector
spec:
  connectorClassName: pypi
  address: {address} # Replace with your PyPI repository address, we will deploy package to this repository.
  auth:
    name: basicAuth
    secretRef:
      name: pypi-registry-secret
"""  # noqa: E501 (the seed's own comment)

SAMPLE_PYPROJECT = """\
[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "sampleproject"
version = "4.0.0"
description = "A sample project, published and installed through a connectors proxy"
requires-python = ">=3.9"
"""


class _Captured(logging.Handler):
    """Keeps every log line the server writes, so the demo can show none holds a secret."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


def step(number: int, text: str) -> None:
    print(f"\n==> [{number}/{STEPS}] {text}", flush=True)


def run() -> int:
    captured = _Captured()
    root = logging.getLogger()
    root.handlers = [captured]
    root.setLevel(logging.INFO)
    with tempfile.TemporaryDirectory(prefix="connectors-demo-") as tmp:
        return asyncio.run(_story(Path(tmp), captured))


async def _story(work: Path, captured: _Captured) -> int:
    step(1, "Starting a private registry (pypiserver, password required for everything)")
    with localregistry.pypiserver(work / "registry") as registry:
        print(f"    registry: {registry.url}  user: {registry.username}  password: (secret)")
        config_dir = work / "connectors.d"
        manifest = SEED_MANIFEST.format(
            username=registry.username, password=registry.password, address=registry.url
        )
        (config_dir / NAMESPACE).mkdir(parents=True)
        (config_dir / NAMESPACE / "pypi-connector.yaml").write_text(manifest)

        step(2, "Creating the seed's Secret and Connector; starting connectors")
        place = commands.Place(config_dir=config_dir, state_dir=work / "state")
        options = ServeSettings(config_dir=config_dir, state_dir=place.state_dir, port=0)
        async with StandaloneServer(options) as server:
            await server.wait_reconciled()
            status = await commands.current_status(place)
            table = listing.get_output(status, namespace=NAMESPACE, name=None, output=None)
            print(f"    $ connectors get connectors -n {NAMESPACE}")
            print(textwrap.indent(table, "    "), end="")
            outputs = await _client_side(work, place)
        seen = {
            "connectors get output": table,
            **outputs,
            "status.json": place.state.status_file.read_text(),
            "server log": "\n".join(captured.lines),
        }
    step(7, "Checking where the registry password went")
    return _report_leaks(registry, seen)


async def _client_side(work: Path, place: commands.Place) -> dict[str, str]:
    step(3, "Building a small project (python -m build)")
    project = work / "sampleproject"
    (project / "src" / "sampleproject").mkdir(parents=True)
    (project / "pyproject.toml").write_text(SAMPLE_PYPROJECT)
    (project / "src" / "sampleproject" / "__init__.py").write_text(
        '"""Published through connectors."""\n\ndef main() -> None:\n    print("hello")\n'
    )
    build = await _run([sys.executable, "-m", "build", "--no-isolation", str(project)])

    step(4, "Uploading with twine through the proxy, using the rendered .pypirc")
    client = work / "client"
    files = commands.render_files(
        place, NAMESPACE, [CONNECTOR], ["pypirc", "pipconf"], ttl_seconds=tokens.DEFAULT_TTL_SECONDS
    )
    commands.write_files(client, files)
    dists = sorted(str(p) for p in (project / "dist").iterdir())
    upload = await _run(
        [
            sys.executable,
            "-m",
            "twine",
            "upload",
            "--non-interactive",
            "--disable-progress-bar",  # its output is printed afterwards, not watched live
            "--config-file",
            str(client / ".pypirc"),
            "--repository",
            "connectors-pypi",
            *dists,
        ]
    )

    step(5, "Installing with pip through the proxy, using the rendered pip.conf")
    install = await _run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--upgrade",
            "sampleproject",
            "--no-deps",
            "--no-cache-dir",
            "--disable-pip-version-check",
            "--target",
            str(work / "site"),
        ],
        env={"PIP_CONFIG_FILE": str(client / "pip.conf")},
    )

    step(6, "The files a workload gets (what the CSI driver mounts in a cluster)")
    for name, content in files.items():
        print(f"    --- {name}")
        print(textwrap.indent(content, "    "), end="")
    return {
        "build output": build,
        "twine output": upload,
        "pip output": install,
        **{f"rendered {name}": content for name, content in files.items()},
    }


def client_environment() -> dict[str, str]:
    """This process's environment without the package clients' settings of the machine, so
    the clients use only the rendered files (a machine-wide find-links could bypass the
    proxy)."""
    clients = ("PIP_", "UV_", "TWINE_", "POETRY_", "PDM_", "HATCH_")
    return {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(clients) and key not in ("NO_COLOR", "NETRC")
    } | {"NO_COLOR": "1"}


async def _run(argv: list[str], env: dict[str, str] | None = None) -> str:
    shown = " ".join(Path(a).name if os.sep in a else a for a in argv[1:])
    print(f"    $ python {shown}", flush=True)
    process = await asyncio.create_subprocess_exec(
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**client_environment(), **(env or {})},
    )
    output, _ = await process.communicate()
    text = output.decode(errors="replace")
    tail = [line for line in text.splitlines() if line.strip()][-6:]
    print(textwrap.indent("\n".join(tail), "    "), flush=True)
    if process.returncode != 0:
        print(text, file=sys.stderr)
        raise ConnectorsError(f"demo step failed: {shown} exited with {process.returncode}")
    return text


def _report_leaks(registry: localregistry.LocalRegistry, seen: dict[str, str]) -> int:
    basic = base64.b64encode(f"{registry.username}:{registry.password}".encode()).decode()
    leaks = [where for where, text in seen.items() if registry.password in text or basic in text]
    if leaks:
        print(f"    LEAK: the registry password appears in: {', '.join(leaks)}")
        return 1
    print(
        f"    The registry password appears in none of the {len(seen)} places a client or "
        "operator sees:"
    )
    for where in seen:
        print(f"      - {where}")
    print(
        "\nDone: uploaded and installed through connectors without the client ever "
        "holding the registry's credentials."
    )
    return 0
