"""Where a connector is reached, and so the audience its tokens carry: one rule, here.

In a cluster a connector's address is its own Service, `c-<name>` in its namespace; that
host-form URL is also the audience of every token minted for it, whichever form clients
use (a class with Alauda's path resolver reaches it through the shared Service and the
path form). The operator, the proxy and the CSI driver all derive it from the connector's
name with `cluster_url`; none reads it back from a status, which only reports it. A
standalone server has no cluster DNS: its connectors are the path form under its own URL.
"""

from __future__ import annotations

DEFAULT_CLUSTER_DOMAIN = "cluster.local"


def path_form(namespace: str, name: str) -> str:
    """The path prefix that names a connector on any proxy address."""
    return f"/namespaces/{namespace}/connectors/{name}"


def cluster_url(
    namespace: str, name: str, *, domain: str = DEFAULT_CLUSTER_DOMAIN, scheme: str = "http"
) -> str:
    """A connector's address inside a cluster (its Service `c-<name>`): also the audience
    its tokens must carry."""
    return f"{scheme}://c-{name}.{namespace}.svc.{domain}"


def standalone_url(server_url: str, namespace: str, name: str) -> str:
    """The address (and token audience) of a connector served by a standalone server."""
    return server_url.rstrip("/") + path_form(namespace, name)
