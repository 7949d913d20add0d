"""What `connectors get` and `connectors describe` print, from the standalone status
document, in kubectl's shapes: the table (and `-A`, `-o wide`), `-o name`, `-o json|yaml`
as Connector objects, and `describe` with every condition's reason and message.

The rows hold what the status board records (class, address, status, first seen): never a
Secret's content.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import yaml

from connectors.api import timestamps
from connectors.api.conditions import ConditionType
from connectors.api.errors import NotFoundError
from connectors.api.resources import API_VERSION
from connectors.standalone.state import StatusDocument, StatusRow

Row = StatusRow
FORMATS = ("wide", "name", "json", "yaml")
_GROUP_KIND = "connector.connectors.alauda.io"


def get_output(
    document: StatusDocument, *, namespace: str | None, name: str | None, output: str | None
) -> str:
    """What `connectors get connectors [NAME] [-n NS | -A] [-o FORMAT]` prints."""
    rows = select(document, namespace, name)
    if output in ("json", "yaml"):
        return dumped(as_objects(rows, single=name is not None), output)
    if output == "name":
        return names(rows)
    if not rows:
        return nothing_found(namespace)
    return table(rows, all_namespaces=namespace is None, wide=output == "wide")


def select(document: StatusDocument, namespace: str | None, name: str | None) -> list[Row]:
    """The rows of `namespace` (None: every namespace), or the one named `name`."""
    rows = [
        row
        for row in document["connectors"]
        if (namespace is None or row["namespace"] == namespace)
        and (name is None or row["name"] == name)
    ]
    if name is not None and not rows:
        where = f"{namespace}/{name}" if namespace is not None else name
        raise NotFoundError(f'connector "{where}" not found')
    return rows


def table(rows: list[Row], *, all_namespaces: bool, wide: bool, now: datetime | None = None) -> str:
    now = now or timestamps.now()
    header = ["NAME", "CLASS", "ADDRESS", "READY", "REASON", "AGE"]
    if wide:
        header += ["PROXY", "MESSAGE"]
    if all_namespaces:
        header = ["NAMESPACE", *header]
    lines = [header]
    for row in rows:
        ready = _ready(row)
        cells = [
            row["name"],
            row["connectorClassName"],
            row["address"],
            ready.get("status", "Unknown"),
            ready.get("reason", ""),
            human_age((now - _first_seen(row)).total_seconds()),
        ]
        if wide:
            cells += [_proxy_url(row), ready.get("message", "")]
        lines.append([row["namespace"], *cells] if all_namespaces else cells)
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text = ["   ".join(c.ljust(widths[i]) for i, c in enumerate(line)).rstrip() for line in lines]
    return "\n".join(text) + "\n"


def nothing_found(namespace: str | None) -> str:
    return "No resources found" + (f" in {namespace} namespace" if namespace else "") + ".\n"


def names(rows: list[Row]) -> str:
    return "".join(f"{_GROUP_KIND}/{row['name']}\n" for row in rows)


def as_objects(rows: list[Row], *, single: bool) -> Any:
    """Connector objects as `kubectl get -o json` prints them: one, or a List."""
    objects = [
        {
            "apiVersion": API_VERSION,
            "kind": "Connector",
            "metadata": {
                "name": row["name"],
                "namespace": row["namespace"],
                "creationTimestamp": row["firstSeen"],
            },
            "spec": {"connectorClassName": row["connectorClassName"], "address": row["address"]},
            "status": row["status"],
        }
        for row in rows
    ]
    if single:
        return objects[0]
    return {"apiVersion": "v1", "kind": "List", "items": objects}


def dumped(document: Any, output: str) -> str:
    if output == "json":
        return json.dumps(document, indent=4) + "\n"
    return str(yaml.safe_dump(document, sort_keys=False))


def describe(row: Row, problems: list[str], now: datetime | None = None) -> str:
    """Everything known about one connector, conditions with reasons and messages first."""
    now = now or timestamps.now()
    where = f"{row['namespace']}/{row['name']}"
    lines = [
        f"Name:         {row['name']}",
        f"Namespace:    {row['namespace']}",
        f"Class:        {row['connectorClassName']}",
        f"Address:      {row['address']}",
        f"Proxy:        {_proxy_url(row) or '<none>'}",
        f"Age:          {human_age((now - _first_seen(row)).total_seconds())}",
        "Conditions:",
    ]
    conditions = row["status"].get("conditions", [])
    cells = [["Type", "Status", "Reason", "Message"]] + [
        [c.get("type", ""), c.get("status", ""), c.get("reason", ""), c.get("message", "")]
        for c in conditions
    ]
    widths = [max(len(r[i]) for r in cells) for i in range(3)]
    for r in cells:
        lines.append(
            ("  " + "  ".join(r[i].ljust(widths[i]) for i in range(3)) + "  " + r[3]).rstrip()
        )
    mine = [p for p in problems if where in p or f"/{row['namespace']}/" in p]
    lines.append("Problems:" + ("     <none>" if not mine else ""))
    lines += [f"  {p}" for p in mine]
    return "\n".join(lines) + "\n"


def human_age(seconds: float) -> str:
    """Ages as kubectl shows them: 10s, 5m, 3h, 2d."""
    seconds = max(0, int(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size * (2 if unit != "m" else 1):
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _ready(row: Row) -> dict[str, str]:
    conditions = row["status"].get("conditions", [])
    return next((c for c in conditions if c.get("type") == ConditionType.READY), {})


def _first_seen(row: Row) -> datetime:
    return timestamps.parse(row["firstSeen"])


def _proxy_url(row: Row) -> str:
    proxy = row["status"].get("proxy") or {}
    return str((proxy.get("httpAddress") or {}).get("url", ""))
