"""Standalone mode's store: a directory of YAML manifests, reloaded when files change.

Layout: YAML files at the top level land in namespace `default`; files in a subdirectory
land in the namespace named by that directory (as `kubectl apply -n DIR`), unless a
document names its own namespace. A bad document is reported and skipped; every valid
resource, in that file and others, is still served. A file holding a Secret that other
users of the machine can read (or write) is served but reported: it holds a registry's
credentials.
"""

from __future__ import annotations

import logging
import stat
from collections.abc import Iterable
from pathlib import Path

from connectors.api import manifests
from connectors.api.errors import ManifestError
from connectors.api.resources import DEFAULT_NAMESPACE, Connector, ConnectorClass, Secret
from connectors.store.base import Snapshot

log = logging.getLogger(__name__)

_SUFFIXES = {".yaml", ".yml"}


def manifest_files(directory: Path) -> list[Path]:
    """YAML files directly in `directory` and in its namespace subdirectories."""
    if not directory.is_dir():
        return []
    found = []
    for path in sorted(directory.rglob("*")):
        relative = path.relative_to(directory)
        if any(part.startswith(".") for part in relative.parts) or len(relative.parts) > 2:
            continue
        if path.suffix in _SUFFIXES and path.is_file():
            found.append(path)
    return found


def namespace_for(directory: Path, path: Path) -> str:
    relative = path.relative_to(directory)
    return relative.parts[0] if len(relative.parts) == 2 else DEFAULT_NAMESPACE


class FileStore:
    """Resources from `directory`; `reload()` re-reads it when any file changed.

    `base_classes` are present unless a file defines a class of the same name (standalone
    passes the built-in classes here).
    """

    def __init__(self, directory: Path, base_classes: Iterable[ConnectorClass] = ()) -> None:
        self.directory = directory
        self.base_classes = tuple(base_classes)
        self._signature: tuple[tuple[str, int, int], ...] | None = None
        self._snapshot = Snapshot()
        self.reload()

    def snapshot(self) -> Snapshot:
        return self._snapshot

    def _current_signature(self) -> tuple[tuple[str, int, int], ...]:
        signature = []
        for path in manifest_files(self.directory):
            try:
                stat = path.stat()
            except OSError:
                continue
            signature.append((str(path), stat.st_mtime_ns, stat.st_size))
        return tuple(signature)

    def reload(self) -> bool:
        """Re-read the directory if anything changed; True when the snapshot was replaced."""
        signature = self._current_signature()
        if signature == self._signature:
            return False
        self._signature = signature
        self._snapshot = load_directory(self.directory, self.base_classes)
        for problem in self._snapshot.problems:
            log.error("skipped a manifest: %s", problem)
        for warning in self._snapshot.warnings:
            log.warning("%s", warning)
        return True


def load_directory(directory: Path, base_classes: Iterable[ConnectorClass] = ()) -> Snapshot:
    connectors: dict[tuple[str, str], Connector] = {}
    classes: dict[str, ConnectorClass] = {c.name: c for c in base_classes}
    secrets: dict[tuple[str, str], Secret] = {}
    problems: list[ManifestError] = []
    warnings: list[str] = []
    seen: dict[tuple[str, str, str], str] = {}
    for path in manifest_files(directory):
        source = str(path)
        namespace = namespace_for(directory, path)
        try:
            text = path.read_text(encoding="utf-8")
            documents = list(manifests.load_documents(text, source=source))
        except ManifestError as exc:
            problems.append(exc)
            continue
        except (OSError, UnicodeDecodeError) as exc:
            problems.append(ManifestError(f"cannot read: {exc.__class__.__name__}", source=source))
            continue
        for position, document in documents:
            try:
                resource = manifests.parse(document, namespace=namespace)
            except ManifestError as exc:
                problems.append(exc.located(source=source, document=position))
                continue
            if resource is None:
                continue
            identity = _identity(resource)
            if identity in seen:
                problems.append(
                    ManifestError(
                        f"{identity[0]} {identity[1]}/{identity[2]} is already defined in "
                        f"{seen[identity]}; this copy is ignored",
                        source=source,
                        document=position,
                    )
                )
                continue
            seen[identity] = f"{source} document {position}"
            if isinstance(resource, Connector):
                connectors[resource.key] = resource
            elif isinstance(resource, ConnectorClass):
                classes[resource.name] = resource
            else:
                secrets[resource.key] = resource
                warnings.extend(_exposure(path, resource))
    return Snapshot(
        connectors=connectors,
        classes=classes,
        secrets=secrets,
        problems=tuple(problems),
        warnings=tuple(dict.fromkeys(warnings)),
    )


def _exposure(path: Path, secret: Secret) -> list[str]:
    """A warning if users other than the file's owner can read or change `path`."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return []
    if not mode & 0o066:
        return []
    return [
        f"{path} holds Secret {secret.namespace}/{secret.metadata.name} and is readable or "
        f"writable by group or others (mode {mode:04o}): run `chmod 600 {path}`"
    ]


def _identity(resource: manifests.Resource) -> tuple[str, str, str]:
    if isinstance(resource, ConnectorClass):
        return ("ConnectorClass", "", resource.name)
    kind = "Connector" if isinstance(resource, Connector) else "Secret"
    return (kind, resource.namespace, resource.metadata.name)
