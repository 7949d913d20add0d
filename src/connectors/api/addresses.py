"""Where a connector is reached, and so the audience its tokens carry: one rule, here.

In a cluster a connector's address is its own Service, `c-<name>` in its namespace; that
host-form URL is also the audience of every token minted for it, whichever form clients
use (a class with Alauda's path resolver reaches it through the shared Service and the
path form). The operator, the proxy and the CSI driver all derive it from the connector's
name with `cluster_url`; none reads it back from a status, which only reports it. A
standalone server has no cluster DNS: its connectors are the path form under its own URL.
"""

from __future__ import annotations

from urllib.parse import SplitResult, urlsplit, urlunsplit

DEFAULT_CLUSTER_DOMAIN = "cluster.local"
# A connector's own Service is this prefix and its name; the proxy routes by it.
SERVICE_PREFIX = "c-"


def path_form(namespace: str, name: str) -> str:
    """The path prefix that names a connector on any proxy address."""
    return f"/namespaces/{namespace}/connectors/{name}"


def service_name(name: str) -> str:
    """The name of a connector's own Service in its namespace."""
    return SERVICE_PREFIX + name


def service_host(namespace: str, service: str, domain: str = DEFAULT_CLUSTER_DOMAIN) -> str:
    """A Service's fully qualified name in cluster DNS."""
    return f"{service}.{namespace}.svc.{domain}"


def cluster_url(
    namespace: str, name: str, *, domain: str = DEFAULT_CLUSTER_DOMAIN, scheme: str = "http"
) -> str:
    """A connector's address inside a cluster (its Service `c-<name>`): also the audience
    its tokens must carry."""
    return f"{scheme}://{service_host(namespace, service_name(name), domain)}"


def standalone_url(server_url: str, namespace: str, name: str) -> str:
    """The address (and token audience) of a connector served by a standalone server."""
    return server_url.rstrip("/") + path_form(namespace, name)


def shown(url: str) -> str:
    """A URL as a status, a log or a page may quote it: scheme, host, port and path, never
    the userinfo, query or fragment that an address or a registry's link may carry."""
    parts = urlsplit(url)
    return origin(url) + parts.path


def origin(url: str) -> str:
    """scheme://host[:port] of a URL, without any userinfo."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host
    try:
        port = f":{parts.port}" if parts.port is not None else ""
    except ValueError:  # a port that is not a number: name the host alone
        port = ""
    return f"{parts.scheme}://{host}{port}"


def same_origin(url: SplitResult, other: SplitResult) -> bool:
    """Whether two URLs are on one scheme and authority, compared as written (userinfo and
    an explicit port included), so that credentials never follow a link that differs."""
    return (url.scheme.lower(), url.netloc.lower()) == (other.scheme.lower(), other.netloc.lower())


def beneath(url: SplitResult, base: SplitResult) -> bool:
    """Whether `url` is `base` or below it: the same origin, and `base`'s path or a path
    under it (`/repo` covers `/repo/x`, never `/repository`)."""
    prefix = base.path
    return same_origin(url, base) and (url.path == prefix or url.path.startswith(prefix + "/"))


def without_userinfo(url: str) -> str:
    """The URL whole but for any `user:password@` in it."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=origin(url).partition("://")[2]))
