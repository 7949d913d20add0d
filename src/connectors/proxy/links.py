"""Map between the client's view of a connector and the registry's URLs, both ways.

The client sees one tree under the proxy base (`<scheme>://<host><base_path>`):
- `/_ext/<name>/...`  an address extension (e.g. a CDN for files), read-only (GET and
  HEAD). One the Connector's author named in `spec.addressExtensions` gets the connector's
  credentials, as Alauda documents; one that comes from the class's defaults
  (`ConnectorClass.spec.addressExtensions`) never does: only the Connector's author decides
  where its credentials go;
- `/_origin/<seal>/...` the connector's own host outside its address prefix (a registry
  that links to files elsewhere on the same host). Credentials go there, so only paths an
  index page of this connector linked to are reachable: the proxy seals each such link
  with an HMAC of the path (keyed per connector, from its credentials, so every replica
  derives the same key and a rotated Secret retires old seals) and refuses any other;
- any other path      under spec.address, after the class's path aliases (pypi maps
  `/simple/` to the registry's simplePath).
Upstream URLs outside all of these map to nothing and are left for the client to fetch
itself: the proxy never forwards to a host the connector does not name.

A link whose page advertises its sha256 may be handed out as `/_sha256/<hex>/<any of the
above>`: the proxy may then answer it from its cache of files, by that hash, after checking
the bytes it fetches against it. The prefix carries no authority (it is not sealed): a
wrong hash only makes the download fail. `<file>.metadata` (PEP 658, which clients derive
from the file's URL) keeps the prefix but not the file's hash.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import re
from urllib.parse import SplitResult, urlsplit, urlunsplit

from connectors.api import addresses

EXT_PREFIX = "/_ext/"
ORIGIN_PREFIX = "/_origin/"
SHA256_PREFIX = "/_sha256/"
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_METADATA_SUFFIX = ".metadata"
_SEAL_BYTES = 16


def origin_key(namespace: str, name: str, credentials: str) -> bytes:
    """The key that seals a connector's origin links; `credentials` is what the proxy
    sends upstream (empty for an anonymous registry)."""
    material = "\0".join(("connectors origin links v1", namespace, name, credentials))
    return hashlib.sha256(material.encode()).digest()


@dataclasses.dataclass(frozen=True)
class Upstream:
    """Where a client path leads: an absolute URL, and whether credentials may go there."""

    url: str
    credentialed: bool
    read_only: bool = False  # only GET and HEAD may go there (downloads, not uploads)
    sha256: str | None = None  # what the index page that linked here says the bytes hash to


@dataclasses.dataclass(frozen=True)
class Extension:
    """An address extension: its name, its URL, and whether credentials may go there."""

    name: str
    url: str
    credentialed: bool


@dataclasses.dataclass(frozen=True)
class LinkMap:
    address: str
    extensions: tuple[Extension, ...] = ()
    aliases: tuple[tuple[str, str], ...] = ()  # (client segment, upstream segment)
    origin_key: bytes = dataclasses.field(default=b"", repr=False)

    @property
    def _address(self) -> SplitResult:
        return urlsplit(self.address.rstrip("/"))

    def to_upstream(self, rest: str, query: str) -> Upstream | None:
        """The upstream URL for a client path (below the proxy base), or None if none."""
        if rest.startswith(SHA256_PREFIX):
            digest, _, tail = rest[len(SHA256_PREFIX) :].partition("/")
            inner = self._to_upstream("/" + tail, query) if _SHA256_HEX.fullmatch(digest) else None
            if inner is None:
                return None
            # A file's metadata (PEP 658) sits beside it and has a hash of its own.
            named = None if tail.endswith(_METADATA_SUFFIX) else digest
            return dataclasses.replace(inner, read_only=True, sha256=named)
        return self._to_upstream(rest, query)

    def _to_upstream(self, rest: str, query: str) -> Upstream | None:
        if rest.startswith(EXT_PREFIX):
            name, _, tail = rest[len(EXT_PREFIX) :].partition("/")
            extension = next((e for e in self.extensions if e.name == name), None)
            if extension is None:
                return None
            return Upstream(
                _join(extension.url, "/" + tail, query),
                credentialed=extension.credentialed,
                read_only=True,
            )
        address = self._address
        if rest.startswith(ORIGIN_PREFIX):
            seal, _, tail = rest[len(ORIGIN_PREFIX) :].partition("/")
            if not hmac.compare_digest(seal, self._seal("/" + tail, query)):
                return None
            origin = urlunsplit((address.scheme, address.netloc, "", "", ""))
            return Upstream(_join(origin, "/" + tail, query), credentialed=True, read_only=True)
        return Upstream(_join(self.address, self._alias_out(rest), query), credentialed=True)

    def to_client(
        self, upstream_url: str, client_base: str, sha256: str | None = None
    ) -> str | None:
        """Where the client should fetch `upstream_url` through the proxy, or None; with
        `sha256`, under the prefix that lets the proxy answer from its cache of files."""
        if sha256 is not None:
            return self.to_client(upstream_url, client_base + SHA256_PREFIX + sha256)
        parts = urlsplit(upstream_url)
        suffix = urlunsplit(("", "", "", parts.query, parts.fragment))
        address = self._address
        if addresses.same_origin(parts, address):
            prefix = address.path
            if parts.path == prefix or parts.path.startswith(prefix + "/"):
                rest = parts.path[len(prefix) :] or "/"
                return client_base + self._alias_in(rest) + suffix
            seal = self._seal(parts.path, parts.query)
            return client_base + ORIGIN_PREFIX + seal + parts.path + suffix
        for extension in self.extensions:
            ext = urlsplit(extension.url.rstrip("/"))
            if addresses.beneath(parts, ext):
                rest = parts.path[len(ext.path) :] or "/"
                return client_base + EXT_PREFIX + extension.name + rest + suffix
        return None

    def _seal(self, path: str, query: str) -> str:
        """Covers the path and the query: a sealed link leads to exactly one request."""
        message = f"{path}?{query}".encode()
        mac = hmac.new(self.origin_key, message, hashlib.sha256).digest()[:_SEAL_BYTES]
        return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()

    def _alias_out(self, rest: str) -> str:
        for client, upstream in self.aliases:
            if rest == f"/{client}" or rest.startswith(f"/{client}/"):
                return (
                    "/" + upstream + rest[len(client) + 1 :]
                    if upstream
                    else rest[len(client) + 1 :] or "/"
                )
        return rest

    def _alias_in(self, rest: str) -> str:
        for client, upstream in self.aliases:
            if upstream and (rest == f"/{upstream}" or rest.startswith(f"/{upstream}/")):
                return f"/{client}" + rest[len(upstream) + 1 :]
        return rest


def _join(base: str, path: str, query: str) -> str:
    base_parts = urlsplit(base.rstrip("/"))
    return urlunsplit((base_parts.scheme, base_parts.netloc, base_parts.path + path, query, ""))
