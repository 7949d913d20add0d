"""Where resources come from: one read interface for the YAML directory and the API server.

Reads are synchronous against an in-memory snapshot that the store keeps current (by
reloading files or by watching the API server), so the proxy's per-request lookups never
do I/O.
"""

from __future__ import annotations

import dataclasses
from typing import Protocol

from connectors.api.errors import ManifestError
from connectors.api.resources import Connector, ConnectorClass, Secret


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """Every resource the store knows, at one moment, plus the documents it had to skip."""

    connectors: dict[tuple[str, str], Connector] = dataclasses.field(default_factory=dict)
    classes: dict[str, ConnectorClass] = dataclasses.field(default_factory=dict)
    secrets: dict[tuple[str, str], Secret] = dataclasses.field(default_factory=dict)
    problems: tuple[ManifestError, ...] = ()
    warnings: tuple[str, ...] = ()  # served anyway, but a user should fix it

    def __repr__(self) -> str:
        return (
            f"Snapshot(connectors={len(self.connectors)}, classes={len(self.classes)}, "
            f"secrets={len(self.secrets)}, problems={len(self.problems)})"
        )


class Store(Protocol):
    def snapshot(self) -> Snapshot:
        """The current view of all resources; cheap, never blocks on I/O."""
        ...
