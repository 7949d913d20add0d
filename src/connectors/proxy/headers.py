"""Which headers cross the proxy, each way: pure policy, no I/O.

A request to a registry carries only what a package client needs it to see, plus the
connector's credentials where the destination is the connector's own; an answer carries
only what a client needs back, with a redirect's target moved onto the proxy when the
connector covers it. `forwarding.py` applies these to real exchanges.
"""

from __future__ import annotations

from collections.abc import Mapping

import yarl

from connectors.api import addresses
from connectors.api.errors import RegistryDataError
from connectors.proxy.links import LinkMap
from connectors.registry.access import BasicCredentials

# End-to-end request headers a package client (pip, uv, twine, poetry...) needs the
# registry to see. Everything else (the client's Authorization and cookies, hop-by-hop
# headers, method overrides, forwarding claims) stays at the proxy.
REQUEST_HEADERS = frozenset(
    {
        "accept",
        "accept-language",
        "cache-control",
        "content-type",
        "if-match",
        "if-modified-since",
        "if-none-match",
        "if-range",
        "if-unmodified-since",
        "pragma",
        "range",
        "user-agent",
    }
)
# What a client needs back from the registry. Content-Length is the proxy's own.
RESPONSE_HEADERS = frozenset(
    {
        "accept-ranges",
        "age",
        "cache-control",
        "content-disposition",
        "content-encoding",
        "content-language",
        "content-range",
        "content-type",
        "date",
        "etag",
        "expires",
        "last-modified",
        "location",
        "retry-after",
        "vary",
        "x-pypi-last-serial",
    }
)


def validators(registry: Mapping[str, str]) -> dict[str, str]:
    """The request headers that ask the registry whether the answer it sent with these
    headers is still current (empty when it sent no `ETag` or `Last-Modified`)."""
    found: dict[str, str] = {}
    if etag := registry.get("ETag"):
        found["If-None-Match"] = etag
    if modified := registry.get("Last-Modified"):
        found["If-Modified-Since"] = modified
    return found


def to_registry(
    client: Mapping[str, str],
    *,
    credentials: BasicCredentials | None,
    validators: Mapping[str, str],
) -> dict[str, str]:
    """The headers of a request to the registry: the client's allowed ones, the proxy's
    own validators of a page it holds, identity encoding, and `credentials` (None where
    the destination is not the connector's own)."""
    headers = {k: v for k, v in client.items() if k.lower() in REQUEST_HEADERS}
    headers.update(validators)
    # Index pages must be readable to be rewritten; files are not compressed in transit
    # by registries anyway, so asking for identity costs nothing.
    headers["Accept-Encoding"] = "identity"
    if credentials is not None:
        headers["Authorization"] = credentials.authorization()
    return headers


def to_client(
    registry: Mapping[str, str], answered_url: str, link_map: LinkMap, client_base: str
) -> tuple[dict[str, str], str | None]:
    """The registry's headers a client may see, and the origin of a redirect that leaves
    the hosts the connector covers (None if none): that redirect is passed on without any
    userinfo (a mirror's password in a fallback URL is the registry's to keep), and the
    audit line names where it leads, since the client will go there around the proxy."""
    headers: dict[str, str] = {}
    off_host: str | None = None
    for key, value in registry.items():
        lower = key.lower()
        if lower not in RESPONSE_HEADERS:
            continue
        if lower != "location":
            headers[key] = value
            continue
        try:
            absolute = str(yarl.URL(answered_url).join(yarl.URL(value)))
        except ValueError as exc:
            raise RegistryDataError("the registry redirected to an unreadable URL") from exc
        on_proxy = link_map.to_client(absolute, client_base)
        if on_proxy is None:
            off_host = addresses.origin(absolute)
            on_proxy = addresses.without_userinfo(absolute)
        headers[key] = on_proxy
    return headers, off_host
