"""Every error `connectors` raises on purpose, in one tree.

    ConnectorsError
    ├── ManifestError            a resource document is malformed (file, document, field)
    ├── NotFoundError            a named resource does not exist
    ├── TokenError               a proxy token cannot be accepted (bad, expired, foreign)
    ├── PermissionDenied         a valid identity may not do what it asked
    ├── AuthUnavailable          the token authority cannot be reached (fail closed)
    ├── TemplateError            a configuration template failed to render
    ├── RegistryDataError        a registry's answer cannot be used (malformed, too large)
    │   ├── RegistryRefused      it refused the connector's own credentials
    │   ├── RegistryTruncated    it ended a body before its declared length
    │   └── DigestMismatch       a file's bytes are not the sha256 its index advertised
    ├── Overloaded               a tenant's share of the shared proxy is in use: retry later
    ├── StateError               local state (keys, server address, kubeconfig) is missing or bad
    ├── UsageError               a command-line setting cannot be used (size, HOST:PORT, endpoint)
    ├── ApiError                 the Kubernetes API server refused a request (status, reason)
    ├── ApiUnavailable           the Kubernetes API server cannot be reached now
    ├── VolumeError              a CSI volume cannot be served as asked (answered with a gRPC code)
    │   ├── csi.volume.InvalidVolume     its attributes (also a ValueError)
    │   ├── csi.files.UnsafeFilename     a rendered file name outside the volume (also a ValueError)
    │   ├── csi.memoryfs.MountError      its tmpfs (also an OSError)
    │   └── csi.publisher.PublishError   anything else, with the gRPC code to answer
    ├── operator.main.LeadershipLost  another replica took the lease: this one exits
    └── proxy.splice.RelayBroken  a relayed body broke off: the client's connection is closed

Third-party exceptions are translated into these at the boundary (`raise ... from exc`), so
callers handle one family. Messages say what happened and what to do, and never carry a
credential or a token.
"""

from __future__ import annotations


class ConnectorsError(Exception):
    """Base of every deliberate error in connectors."""


class ManifestError(ConnectorsError):
    """A resource document is malformed; the message names where and which field."""

    def __init__(
        self, problem: str, *, source: str = "", document: int | None = None, field: str = ""
    ) -> None:
        self.problem = problem
        self.source = source
        self.document = document
        self.field = field
        super().__init__(self._render())

    def _render(self) -> str:
        where = []
        if self.source:
            where.append(self.source)
        if self.document is not None:
            where.append(f"document {self.document}")
        if self.field:
            where.append(f"field {self.field}")
        prefix = ", ".join(where)
        return f"{prefix}: {self.problem}" if prefix else self.problem

    def located(self, *, source: str, document: int | None) -> ManifestError:
        """The same problem, with the file and document it came from."""
        return ManifestError(self.problem, source=source, document=document, field=self.field)


class NotFoundError(ConnectorsError):
    """A named resource does not exist."""


class TokenError(ConnectorsError):
    """A token was presented that cannot be accepted."""


class TemplateError(ConnectorsError):
    """A configuration template could not be rendered."""


class RegistryDataError(ConnectorsError):
    """A registry sent something the proxy cannot use: a malformed or oversized index page,
    an encoding it cannot undo. The registry's failure, so clients get 502."""


class RegistryRefused(RegistryDataError):
    """The registry answered 401 to the connector's own credentials: the client's token was
    fine, so the client is not challenged."""


class RegistryTruncated(RegistryDataError):
    """The registry's body ended before its declared length, before any of it was sent."""


class DigestMismatch(RegistryDataError):
    """A file's bytes do not hash to the sha256 its index page advertised."""


class Overloaded(ConnectorsError):
    """A connector or namespace has used its share of the shared proxy (registry
    connections, bytes held for index pages); clients get 503 with Retry-After."""


class StateError(ConnectorsError):
    """Standalone state is missing or unusable."""


class PermissionDenied(ConnectorsError):
    """A valid identity asked for something it is not allowed to do."""


class AuthUnavailable(ConnectorsError):
    """Whoever decides on tokens cannot be asked right now; fail closed, retry later."""


class ApiError(ConnectorsError):
    """The Kubernetes API server answered a request with an error status."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        self.status = status
        self.reason = reason
        super().__init__(f"{message} (HTTP {status} {reason})" if message else f"HTTP {status}")


class ApiUnavailable(ConnectorsError):
    """The Kubernetes API server cannot be reached now; retry later."""


class UsageError(ConnectorsError):
    """A command-line setting cannot be used; the message names it and its form."""


class VolumeError(ConnectorsError):
    """A CSI volume cannot be served as asked; subclasses live with the driver (grpc stays
    there), and each reaches kubelet as a gRPC status with this message."""
