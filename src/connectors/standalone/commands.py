"""What the standalone CLI commands do, apart from parsing arguments and printing.

Each command finds the running server through the state directory; `get connectors` also
works with no server running (it probes once itself and says the proxy is not running).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path

from connectors.api import addresses
from connectors.api.errors import NotFoundError, TemplateError
from connectors.api.resources import Connector
from connectors.auth import tokens
from connectors.auth.keys import KeyRing
from connectors.classes.builtin import builtin_classes
from connectors.reconcile import probes
from connectors.reconcile.reconciler import ReconcileSettings
from connectors.rendering import render
from connectors.standalone.server import reconcile_snapshot
from connectors.standalone.state import StateDir, StatusDocument
from connectors.standalone.statusboard import StatusBoard
from connectors.store.base import Snapshot
from connectors.store.filestore import FileStore


@dataclasses.dataclass(frozen=True)
class Place:
    """Where a standalone installation keeps its manifests and its state."""

    config_dir: Path
    state_dir: Path

    @property
    def state(self) -> StateDir:
        return StateDir(self.state_dir)

    def snapshot(self) -> Snapshot:
        return FileStore(self.config_dir, builtin_classes()).snapshot()

    def connector(self, namespace: str, name: str) -> Connector:
        snapshot = self.snapshot()
        connector = snapshot.connectors.get((namespace, name))
        if connector is None:
            raise NotFoundError(
                f"connector {name} not found in namespace {namespace} under "
                f"{self.config_dir}: check the name and -n"
            )
        return connector


def issue_token(
    place: Place,
    namespace: str,
    names: Sequence[str],
    *,
    ttl_seconds: int,
    scopes: tuple[str, ...] = tokens.ALL_SCOPES,
) -> str:
    """A token for the named connectors: one audience each, as the CSI driver mints one
    token for every connector of a volume (so one `.netrc` entry serves them all)."""
    members = [place.connector(namespace, name) for name in dict.fromkeys(names)]
    server_url = place.state.require_server_url()
    return tokens.issue(
        KeyRing(place.state.keys),
        audience=[addresses.standalone_url(server_url, namespace, m.name) for m in members],
        subject="standalone:" + ",".join(render.username_for(m) for m in members),
        ttl_seconds=ttl_seconds,
        scopes=scopes,
    )


def rotate_keys(place: Place, *, retire_now: bool) -> tuple[str, list[str]]:
    """A new signing key; retire older keys whose tokens have all expired, or every older
    key at once. A running server notices within a second."""
    ring = KeyRing.open(place.state.keys)
    new = ring.rotate()
    retired = (
        ring.retire_all_but_signer()
        if retire_now
        else ring.retire_expired(tokens.MAX_TTL_SECONDS + tokens.LEEWAY_SECONDS)
    )
    return new.kid, retired


def render_files(
    place: Place,
    namespace: str,
    names: Sequence[str],
    configurations: list[str],
    *,
    ttl_seconds: int,
) -> dict[str, str]:
    """Every file of the named configurations, each connector with a fresh token: the first
    connector is the default one, the others are added as the CSI driver adds the other
    connectors of one volume (extra indexes, more `.pypirc` sections, one `.netrc`)."""
    names = list(dict.fromkeys(names))  # a name given twice is one connector
    members = [place.connector(namespace, name) for name in names]
    snapshot = place.snapshot()
    class_name = members[0].spec.connector_class_name
    cls = snapshot.classes.get(class_name)
    if cls is None:
        raise NotFoundError(f"ConnectorClass {class_name} not found")
    for other in members[1:]:
        if other.spec.connector_class_name != class_name:
            raise TemplateError(
                f"connector {namespace}/{other.name} is of class "
                f"{other.spec.connector_class_name}, not {class_name}: render it separately"
            )
    server_url = place.state.require_server_url()
    token = issue_token(place, namespace, names, ttl_seconds=ttl_seconds)
    contexts = [
        render.RenderContext(addresses.standalone_url(server_url, namespace, member.name), token)
        for member in members
    ]
    others = list(zip(members[1:], contexts[1:], strict=True))
    files: dict[str, str] = {}
    for configuration in configurations:
        files.update(
            render.render_configuration(members[0], cls, configuration, contexts[0], others=others)
        )
    return files


def readiness_warning(place: Place, namespace: str, name: str) -> str | None:
    """Why the files just rendered for a connector will not work yet, or None if it is
    Ready: rendering never waits for the registry, so the user hears it here."""
    document = place.state.read_status()
    row = next(
        (
            r
            for r in (document["connectors"] if document else [])
            if (r["namespace"], r["name"]) == (namespace, name)
        ),
        None,
    )
    where = f"connector {namespace}/{name}"
    if row is None:
        return f"{where} has not been checked yet: `connectors get connectors` shows when it is"
    ready = next((c for c in row["status"].get("conditions", []) if c["type"] == "Ready"), None)
    if ready is None or ready.get("status") == "True":
        return None
    return (
        f"{where} is not Ready ({ready.get('reason', 'Unknown')}: {ready.get('message', '')}); "
        "the files are written, but clients will fail until it is"
    )


def write_files(directory: Path, files: dict[str, str]) -> list[Path]:
    """Write files readable by their owner only: each holds a token."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for filename, content in files.items():
        path = directory / filename
        tmp = path.with_name(f".{filename}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(content)
        tmp.replace(path)
        written.append(path)
    return written


async def current_status(place: Place) -> StatusDocument:
    """status.json from the running server, or one fresh pass made here if none runs."""
    state = place.state
    if state.server_url() is not None:
        document = state.read_status()
        if document is not None:
            return document
    snapshot = place.snapshot()
    board = StatusBoard(state)
    async with probes.probe_session() as session:
        await reconcile_snapshot(
            snapshot, board, session, state.server_url(), ReconcileSettings(probe_timeout_seconds=5)
        )
    return state.read_status() or StatusDocument(connectors=[], problems=[])
