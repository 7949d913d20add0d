"""Which connector a request is for, from its Host header or its path.

Two forms reach the same connector:
- Host `c-<name>.<namespace>`, optionally followed by `.svc` or `.svc.<cluster domain>`, and
  a port: what the per-connector Service gives clients inside a cluster;
- path `/namespaces/<namespace>/connectors/<name>/...`: works anywhere, the standalone
  default.
"""

from __future__ import annotations

import dataclasses
import re

from connectors.api import addresses

_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_HOST = re.compile(
    rf"^{re.escape(addresses.SERVICE_PREFIX)}(?P<name>{_LABEL})\.(?P<ns>{_LABEL})(\.svc(\.[a-z0-9.-]+)?)?\.?(:\d{{1,5}})?$"
)
# The path form read back: addresses.path_form with a pattern in each place.
_PATH = re.compile(
    "^" + addresses.path_form(f"(?P<ns>{_LABEL})", f"(?P<name>{_LABEL})") + "(?P<rest>/.*)?$"
)


@dataclasses.dataclass(frozen=True)
class Route:
    namespace: str
    name: str
    base_path: str  # the client-visible prefix before the registry's own path
    rest: str  # the path after the prefix, always starting with "/"


def route(host: str | None, path: str) -> Route | None:
    """The connector a request addresses, or None when it names none."""
    match = _PATH.match(path)
    if match:
        base = addresses.path_form(match["ns"], match["name"])
        return Route(match["ns"], match["name"], base, match["rest"] or "/")
    match = _HOST.match((host or "").lower())
    if match:
        return Route(match["ns"], match["name"], "", path)
    return None
