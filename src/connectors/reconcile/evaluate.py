"""Turn what the reconciler found into status conditions: pure functions, no I/O."""

from __future__ import annotations

import dataclasses

from connectors.api import addresses
from connectors.api.conditions import (
    READY_DEPENDS_ON,
    Condition,
    ConditionType,
    Reason,
    Status,
)
from connectors.reconcile.coverage import Coverage
from connectors.registry.access import CredentialsProblem, CredentialsResult


@dataclasses.dataclass(frozen=True)
class ProbeOutcome:
    """One HTTP probe: the status the registry answered, or why there was no answer."""

    url: str
    status: int | None = None
    error: str = ""

    @property
    def answered(self) -> bool:
        return self.status is not None

    @property
    def shown(self) -> str:
        return addresses.shown(self.url)


def _true(type_: ConditionType, message: str = "", reason: str = "") -> Condition:
    return Condition(type=type_, status=Status.TRUE, reason=reason, message=message)


def _false(type_: ConditionType, reason: str, message: str) -> Condition:
    return Condition(
        type=type_, status=Status.FALSE, reason=reason, message=message, severity="Error"
    )


def class_condition(
    class_name: str, found: bool, class_ready: Condition | None = None
) -> Condition:
    """The class exists and can be served (its own Ready condition, `reconcile/classes.py`)."""
    if found and class_ready is not None and not class_ready.is_true:
        return _false(
            ConditionType.CONNECTOR_CLASS_READY,
            class_ready.reason,
            f"ConnectorClass {class_name} is not Ready: {class_ready.message}",
        )
    if found:
        return _true(ConditionType.CONNECTOR_CLASS_READY)
    return _false(
        ConditionType.CONNECTOR_CLASS_READY,
        Reason.CONNECTOR_CLASS_NOT_FOUND,
        f"ConnectorClass {class_name} not found: install it or fix spec.connectorClassName",
    )


def secret_condition(credentials: CredentialsResult) -> Condition:
    if isinstance(credentials, CredentialsProblem):
        return _false(ConditionType.SECRET_READY, credentials.reason, credentials.message)
    if credentials is None:
        return _true(
            ConditionType.SECRET_READY,
            "this connector uses no credentials",
            reason=Reason.SECRET_OPTIONAL,
        )
    return _true(ConditionType.SECRET_READY)


def liveness_condition(outcome: ProbeOutcome | None) -> Condition:
    if outcome is None:
        return _true(
            ConditionType.LIVENESS_READY,
            "the class defines no liveness probe",
            reason=Reason.NON_LIVENESS_PROBE,
        )
    status = outcome.status
    if status is None:
        return _false(
            ConditionType.LIVENESS_READY,
            Reason.CONNECTION_FAILED,
            f"cannot reach {outcome.shown}: {outcome.error}",
        )
    # Any answer short of a server error or a missing index shows a live registry; an
    # authentication challenge is expected before credentials are sent.
    if status in (404, 410):
        return _false(ConditionType.LIVENESS_READY, Reason.CONNECTION_FAILED, _no_index(outcome))
    if status >= 500:
        return _false(
            ConditionType.LIVENESS_READY,
            Reason.CONNECTION_FAILED,
            f"{outcome.shown} answered HTTP {status}: check spec.address",
        )
    return _true(ConditionType.LIVENESS_READY)


def _no_index(outcome: ProbeOutcome) -> str:
    # A wrong index path, not a wrong password: the natural first try for devpi.
    return (
        f"{outcome.shown} answered HTTP {outcome.status}: there is no package index at this "
        "path; check spec.address, and the simplePath param for a registry that serves "
        "its index elsewhere (devpi: +simple)"
    )


def auth_condition(outcome: ProbeOutcome | None) -> Condition:
    if outcome is None:
        return _true(
            ConditionType.AUTH_READY,
            "the class defines no auth probe",
            reason=Reason.NON_AUTH_PROBE,
        )
    if outcome.status is None:
        return _false(
            ConditionType.AUTH_READY,
            Reason.CONNECTION_FAILED,
            f"cannot reach {outcome.shown}: {outcome.error}",
        )
    if 200 <= outcome.status < 400:
        return _true(ConditionType.AUTH_READY)
    if outcome.status in (401, 403):
        return _false(
            ConditionType.AUTH_READY,
            Reason.AUTHENTICATION_FAILED,
            f"{outcome.shown} refused the Secret's credentials (HTTP {outcome.status}):"
            " fix the username or password in the Secret",
        )
    if outcome.status in (404, 410):
        return _false(ConditionType.AUTH_READY, Reason.CONNECTION_FAILED, _no_index(outcome))
    return _false(
        ConditionType.AUTH_READY,
        Reason.AUTHENTICATION_FAILED,
        f"{outcome.shown} answered HTTP {outcome.status} to the credential check",
    )


# What a registry answers an upload without a file once it has accepted the credentials;
# anything else (a rate limit, a WAF, a redirect) proves nothing about them.
_UPLOAD_REFUSED_AFTER_AUTH = frozenset({400, 409, 415, 422})


def upload_check_condition(read_url: str, check: ProbeOutcome) -> Condition:
    """AuthReady for a registry that answered the credential check without credentials
    too, judged by an upload of nothing (`probes.run_upload_check`)."""
    read_url = addresses.shown(read_url)
    anonymous = f"{read_url} answers without credentials, so they were checked with an empty upload"
    if check.status == 401:
        return _false(
            ConditionType.AUTH_READY,
            Reason.AUTHENTICATION_FAILED,
            f"{anonymous}, which {check.shown} refused (HTTP 401): fix the username or "
            "password in the Secret; installs work, uploads will fail until it is fixed",
        )
    if check.status in _UPLOAD_REFUSED_AFTER_AUTH:
        return _true(
            ConditionType.AUTH_READY,
            f"{anonymous}: {check.shown} accepted them (refusing the missing file, "
            f"HTTP {check.status})",
        )
    if check.status == 403:
        # A wrong password (pypiserver) or a right one without upload rights (devpi, a
        # read-only token): the connector serves installs either way.
        why = (
            f"{check.shown} refused it (HTTP 403): the password is wrong, or its user may "
            "not upload here; installs work"
        )
    else:
        answer = f"HTTP {check.status}" if check.status is not None else check.error
        why = f"{check.shown} could not tell ({answer}); they are first used by an upload"
    return Condition(
        type=ConditionType.AUTH_READY,
        status=Status.UNKNOWN,
        reason=Reason.ANONYMOUS_READ,
        message=(
            f"the credentials are not verified: {read_url} answers without them, and an "
            f"empty upload was sent: {why}"
        ),
        severity="Warning",
    )


# Hosts a LinksCovered message names; a page may link to thousands.
_NAMED_HOSTS = 10


def links_condition(found: Coverage) -> Condition:
    """Informational (Ready does not depend on it): whether downloads stay on the proxy."""
    warnings = []
    if found.redirect is not None:
        asked, origin = found.redirect
        warnings.append(
            f"{addresses.shown(asked)}, a project the registry does not hold, redirects to "
            f"{origin}: clients follow it and install such names from there, around the proxy and "
            "this registry (pypiserver: start it with --disable-fallback)"
        )
    if found.uncovered:
        hosts = ", ".join(found.uncovered[:_NAMED_HOSTS])
        if len(found.uncovered) > _NAMED_HOSTS:
            hosts += f" and {len(found.uncovered) - _NAMED_HOSTS} more"
        warnings.append(
            f"{found.page} links to files on {hosts}, which this "
            "connector does not cover: clients download those directly, around the proxy; "
            "name the hosts in spec.addressExtensions to keep downloads on it"
        )
    if warnings:
        return Condition(
            type=ConditionType.LINKS_COVERED,
            status=Status.FALSE,
            reason=Reason.OFF_HOST_REDIRECT if found.redirect else Reason.UNCOVERED_LINKS,
            message="; and ".join(warnings),
            severity="Warning",
        )
    if not found.page:
        return not_checked(ConditionType.LINKS_COVERED, found.why)
    return _true(
        ConditionType.LINKS_COVERED,
        f"the files {found.page} links to are all on hosts this connector covers",
    )


def not_checked(type_: ConditionType, because: str) -> Condition:
    return Condition(
        type=type_,
        status=Status.UNKNOWN,
        reason=Reason.NOT_CHECKED,
        message=f"not checked: {because}",
    )


def proxy_condition(proxy_url: str | None, missing_message: str) -> Condition:
    if proxy_url:
        return _true(ConditionType.PROXY_SERVICE_READY, f"clients use {proxy_url}")
    return _false(
        ConditionType.PROXY_SERVICE_READY, Reason.PROXY_SERVICE_NOT_FOUND, missing_message
    )


def ca_condition(problem: CredentialsProblem | None) -> Condition:
    if problem is None:
        return _true(ConditionType.CA_CERT_READY)
    return _false(ConditionType.CA_CERT_READY, problem.reason, problem.message)


def ready_condition(conditions: tuple[Condition, ...]) -> Condition:
    """Ready is True when every condition it depends on is (an AuthReady that could only
    say AnonymousRead does not hold it back); else it carries the first failing one's
    reason and message."""
    by_type = {c.type: c for c in conditions}
    for type_ in READY_DEPENDS_ON:
        cond = by_type.get(type_)
        if cond is None or cond.is_true or cond.reason == Reason.ANONYMOUS_READ:
            continue
        return Condition(
            type=ConditionType.READY,
            status=Status.FALSE,
            reason=cond.reason,
            message=cond.message,
            severity="Error",
        )
    return _true(ConditionType.READY)
