"""Standalone mode's record of each Connector's status, shared with other processes.

In a cluster, status lives on the Connector object; here it lives in memory and in the
state directory's status.json, which `connectors get connectors` reads.
"""

from __future__ import annotations

import logging
from datetime import datetime

from connectors.api import timestamps
from connectors.api.conditions import ConditionType
from connectors.api.resources import Connector, ConnectorStatus
from connectors.standalone.state import StateDir, StatusDocument, StatusRow
from connectors.store.base import Snapshot

log = logging.getLogger(__name__)


class StatusBoard:
    def __init__(self, state: StateDir) -> None:
        self.state = state
        self.statuses: dict[tuple[str, str], ConnectorStatus] = {}
        self.first_seen: dict[tuple[str, str], datetime] = {}

    def record(self, connector: Connector, status: ConnectorStatus) -> None:
        key = connector.key
        self.first_seen.setdefault(key, timestamps.now())
        before = self.statuses.get(key)
        self.statuses[key] = status
        _log_ready_change(connector, before, status)

    def forget_missing(self, snapshot: Snapshot) -> None:
        for key in list(self.statuses):
            if key not in snapshot.connectors:
                del self.statuses[key]
                self.first_seen.pop(key, None)

    def publish(self, snapshot: Snapshot) -> None:
        rows = []
        for key, connector in sorted(snapshot.connectors.items()):
            status = self.statuses.get(key)
            if status is None:
                continue
            rows.append(
                StatusRow(
                    namespace=connector.namespace,
                    name=connector.name,
                    connectorClassName=connector.spec.connector_class_name,
                    address=connector.spec.address,
                    firstSeen=timestamps.format_time(self.first_seen[key]),
                    status=status.to_dict(),
                )
            )
        self.state.write_status(
            StatusDocument(
                connectors=rows,
                problems=[str(p) for p in snapshot.problems] + list(snapshot.warnings),
            )
        )


def _log_ready_change(
    connector: Connector, before: ConnectorStatus | None, after: ConnectorStatus
) -> None:
    new = after.condition(ConditionType.READY)
    old = before.condition(ConditionType.READY) if before else None
    if new is None or (old is not None and old.same_state(new)):
        return
    where = f"{connector.namespace}/{connector.name}"
    if new.is_true:
        log.info("connector %s is Ready", where)
    else:
        log.warning("connector %s is not Ready (%s): %s", where, new.reason, new.message)
