"""The standalone server's state directory: signing keys, its address, connector status.

Commands such as `connectors token` and `connectors get connectors` run as separate
processes; they find the running server through these files. Every file is written
atomically (write, then rename), so a reader never sees half of one.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, TypedDict, TypeGuard

from connectors.api.errors import StateError

DEFAULT_CONFIG_DIR = Path("connectors.d")
CACHE_DIRNAME = "cache"  # under the state directory: the cache of package files
STATE_DIR_NAME = ".state"


def default_state_dir(config_dir: Path) -> Path:
    return config_dir / STATE_DIR_NAME


@dataclasses.dataclass(frozen=True)
class StateDir:
    root: Path

    @property
    def keys(self) -> Path:
        return self.root / "keys"

    @property
    def server_file(self) -> Path:
        return self.root / "server.json"

    @property
    def status_file(self) -> Path:
        return self.root / "status.json"

    @property
    def lock_file(self) -> Path:
        return self.root / "server.lock"

    def write_server(self, url: str) -> None:
        write_json(self.server_file, {"url": url, "pid": os.getpid()})

    def clear_server(self) -> None:
        self.server_file.unlink(missing_ok=True)

    def server_url(self) -> str | None:
        """The running server's base URL, or None when no server is running."""
        record = self.server_record()
        return record[0] if record else None

    def server_record(self) -> tuple[str, int | None] | None:
        """The running server's (base URL, pid), or None when no server is running."""
        data = read_json(self.server_file)
        if not isinstance(data, dict) or not isinstance(data.get("url"), str):
            return None
        pid = data.get("pid")
        if isinstance(pid, int) and not _alive(pid):
            return None
        return str(data["url"]), pid if isinstance(pid, int) else None

    def require_server_url(self) -> str:
        url = self.server_url()
        if url is None:
            raise StateError(
                f"no standalone server is running for state directory {self.root}: "
                "start `connectors serve` with the same --config-dir/--state-dir"
            )
        return url

    def write_status(self, document: StatusDocument) -> None:
        write_json(self.status_file, document)

    def read_status(self) -> StatusDocument | None:
        """The last published status, or None when there is none (or it is not one)."""
        data = read_json(self.status_file)
        if not isinstance(data, dict):
            return None
        rows, problems = data.get("connectors"), data.get("problems")
        if not isinstance(rows, list) or not isinstance(problems, list):
            return None
        return StatusDocument(
            connectors=[row for row in rows if _is_row(row)],
            problems=[str(p) for p in problems],
        )


class StatusRow(TypedDict):
    """One connector in `status.json`, as `connectors get` and `describe` read it."""

    namespace: str
    name: str
    connectorClassName: str
    address: str
    firstSeen: str  # when this server first saw it (a Kubernetes Time)
    status: dict[str, Any]  # its ConnectorStatus, as the API would write it


class StatusDocument(TypedDict):
    """`STATE_DIR/status.json`: every connector's status, and the manifests' problems."""

    connectors: list[StatusRow]
    problems: list[str]


def _is_row(row: object) -> TypeGuard[StatusRow]:
    text_fields = ("namespace", "name", "connectorClassName", "address", "firstSeen")
    return (
        isinstance(row, dict)
        and all(isinstance(row.get(field), str) for field in text_fields)
        and isinstance(row.get("status"), dict)
    )


def write_json(path: Path, document: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(document, indent=1, sort_keys=True), encoding="utf-8")
    tmp.replace(path)


def read_json(path: Path) -> object:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise StateError(f"cannot read {path}: {exc.__class__.__name__}") from exc


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
