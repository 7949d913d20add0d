"""Condition types and reasons of a Connector's status, as the published CRDs name them."""

from __future__ import annotations

import dataclasses
import enum
from datetime import datetime

from connectors.api import timestamps
from connectors.api.codec import wire


class ConditionType(enum.StrEnum):
    CONNECTOR_CLASS_READY = "ConnectorClassReady"
    SECRET_READY = "SecretReady"
    LIVENESS_READY = "LivenessReady"
    AUTH_READY = "AuthReady"
    PROXY_SERVICE_READY = "ProxyServiceReady"
    CA_CERT_READY = "CACertReady"
    LINKS_COVERED = "LinksCovered"
    READY = "Ready"


class Reason(enum.StrEnum):
    CONNECTOR_CLASS_NOT_FOUND = "ConnectorClassNotFound"
    SECRET_NOT_FOUND = "SecretNotFound"
    SECRET_INVALID = "SecretInvalid"
    SECRET_OPTIONAL = "SecretOptional"
    CONNECTION_FAILED = "ConnectionFailed"
    NON_LIVENESS_PROBE = "NonLivenessProbe"
    AUTHENTICATION_FAILED = "AuthenticationFailed"
    NON_AUTH_PROBE = "NonAuthProbe"
    PROXY_SERVICE_NOT_FOUND = "ProxyServiceNotFound"
    CA_CERT_NOT_FOUND = "CACertNotFound"
    INVALID_PEM = "InvalidPEM"  # Alauda's name: ca.crt holds no usable certificate
    NOT_CHECKED = "NotChecked"
    UNSUPPORTED_FEATURE = "UnsupportedFeature"
    UNCOVERED_LINKS = "UncoveredLinks"
    OFF_HOST_REDIRECT = "OffHostRedirect"
    INVALID_TEMPLATE = "InvalidTemplate"
    # AuthReady Unknown: the registry reads without credentials and no upload check could
    # tell whether it accepts them. The connector can be used, so Ready does not wait.
    ANONYMOUS_READ = "AnonymousRead"


# The order in which Ready looks for the first failing condition. CACertReady (present
# only with a caCertSecretRef) counts: the proxy will not serve without the bundle asked for.
READY_DEPENDS_ON: tuple[ConditionType, ...] = (
    ConditionType.CONNECTOR_CLASS_READY,
    ConditionType.SECRET_READY,
    ConditionType.CA_CERT_READY,
    ConditionType.LIVENESS_READY,
    ConditionType.AUTH_READY,
    ConditionType.PROXY_SERVICE_READY,
)


class Status(enum.StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


@dataclasses.dataclass(frozen=True)
class Condition:
    type: str = dataclasses.field(metadata=wire("type", required=True))
    status: Status = dataclasses.field(metadata=wire("status", required=True))
    reason: str = dataclasses.field(default="", metadata=wire("reason"))
    message: str = dataclasses.field(default="", metadata=wire("message"))
    severity: str = dataclasses.field(default="", metadata=wire("severity"))
    last_transition_time: datetime = dataclasses.field(
        default_factory=timestamps.now,
        metadata=wire("lastTransitionTime"),
    )

    @property
    def is_true(self) -> bool:
        return self.status is Status.TRUE

    def same_state(self, other: Condition) -> bool:
        """Whether two conditions say the same thing (ignoring when they were written)."""
        return (self.status, self.reason, self.message) == (
            other.status,
            other.reason,
            other.message,
        )

    def to_dict(self) -> dict[str, str]:
        out = {
            "type": self.type,
            "status": self.status.value,
            "reason": self.reason,
            "message": self.message,
            "lastTransitionTime": timestamps.format_time(self.last_transition_time),
        }
        if self.severity:
            out["severity"] = self.severity
        return out


def keep_transition_times(
    previous: tuple[Condition, ...], current: tuple[Condition, ...]
) -> tuple[Condition, ...]:
    """Carry over lastTransitionTime for conditions whose state did not change."""
    before = {c.type: c for c in previous}
    kept = []
    for cond in current:
        old = before.get(cond.type)
        if old is not None and old.same_state(cond):
            kept.append(dataclasses.replace(cond, last_transition_time=old.last_transition_time))
        else:
            kept.append(cond)
    return tuple(kept)
