"""Reconcile one Connector: look up its class and Secret, probe its registry, write status.

Level-triggered and idempotent: each pass reads everything afresh from the snapshot and
computes the whole status; running it twice changes nothing but probe results. Standalone
and Kubernetes modes share this code and differ only in where the proxy address comes from.
"""

from __future__ import annotations

import dataclasses
import ssl

import aiohttp

from connectors.api import errors
from connectors.api.conditions import Condition, ConditionType, keep_transition_times
from connectors.api.resources import (
    Connector,
    ConnectorClass,
    ConnectorStatus,
    HTTPAddress,
    Probe,
    ProxyStatus,
)
from connectors.classes import pypi_links
from connectors.reconcile import classes, coverage, evaluate, probes
from connectors.reconcile.evaluate import ProbeOutcome
from connectors.registry import access
from connectors.rendering import render
from connectors.store.base import Snapshot


@dataclasses.dataclass(frozen=True)
class ProxyInfo:
    """Where clients reach this connector, or why they cannot (yet)."""

    url: str | None
    audience: str | None = None
    missing_message: str = "no proxy is serving this connector"


@dataclasses.dataclass(frozen=True)
class ReconcileSettings:
    probe_timeout_seconds: float = 10.0


async def reconcile(
    connector: Connector,
    snapshot: Snapshot,
    *,
    session: aiohttp.ClientSession,
    proxy: ProxyInfo,
    previous: ConnectorStatus | None = None,
    settings: ReconcileSettings = ReconcileSettings(),
    uploads: probes.UploadChecks | None = None,
) -> ConnectorStatus:
    """The status this connector should have now. `uploads` remembers the empty uploads
    that check credentials a registry does not need for reading; without it each pass
    that needs one sends one."""
    cls = snapshot.classes.get(connector.spec.connector_class_name)
    conditions: list[Condition] = [
        evaluate.class_condition(
            connector.spec.connector_class_name,
            cls is not None,
            classes.ready_condition(cls) if cls is not None else None,
        )
    ]
    if cls is None:
        why = "the ConnectorClass is missing"
        conditions += [
            evaluate.not_checked(t, why)
            for t in (
                ConditionType.SECRET_READY,
                ConditionType.LIVENESS_READY,
                ConditionType.AUTH_READY,
            )
        ]
    else:
        conditions += await _check_registry(
            connector, cls, snapshot, session, settings, uploads=uploads or probes.UploadChecks()
        )
    conditions.append(evaluate.proxy_condition(proxy.url, proxy.missing_message))
    conditions.append(evaluate.ready_condition(tuple(conditions)))
    kept = keep_transition_times(previous.conditions if previous else (), tuple(conditions))
    http_address = (
        HTTPAddress(url=proxy.url, audience=proxy.audience or proxy.url) if proxy.url else None
    )
    return ConnectorStatus(
        conditions=kept,
        observed_generation=connector.metadata.generation,
        proxy=ProxyStatus(http_address=http_address) if http_address else None,
    )


async def _check_registry(
    connector: Connector,
    cls: ConnectorClass,
    snapshot: Snapshot,
    session: aiohttp.ClientSession,
    settings: ReconcileSettings,
    *,
    uploads: probes.UploadChecks,
) -> list[Condition]:
    credentials = access.credentials_for(connector, cls, snapshot)
    conditions = [evaluate.secret_condition(credentials)]
    ca = access.ca_bundle_for(connector, snapshot)
    if connector.spec.ca_cert_secret_ref is not None:
        problem = ca if isinstance(ca, access.CredentialsProblem) else None
        conditions.append(evaluate.ca_condition(problem))
    tls = access.ssl_context(ca if isinstance(ca, bytes) else None)

    liveness = await _probe(
        connector,
        cls=cls,
        probe=cls.spec.liveness_probe,
        credentials=None,
        tls=tls,
        session=session,
        settings=settings,
    )
    conditions.append(evaluate.liveness_condition(liveness))
    auth_name = connector.spec.auth.name if connector.spec.auth else ""
    auth_probe = cls.spec.auth_probe(auth_name) if auth_name else None
    if isinstance(credentials, access.CredentialsProblem):
        conditions.append(evaluate.not_checked(ConditionType.AUTH_READY, "no usable Secret"))
    elif liveness is not None and not conditions[-1].is_true:
        conditions.append(
            evaluate.not_checked(ConditionType.AUTH_READY, "the registry is not reachable")
        )
    else:
        outcome = await _probe(
            connector,
            cls=cls,
            probe=auth_probe,
            auth_params=probes.auth_probe_params(connector, cls, auth_name),
            credentials=credentials,
            tls=tls,
            session=session,
            settings=settings,
        )
        condition = evaluate.auth_condition(outcome)
        if condition.is_true and outcome is not None and credentials is not None:
            condition = await _exercise_credentials(
                connector,
                cls,
                checked=outcome,
                liveness=liveness,
                credentials=credentials,
                tls=tls,
                session=session,
                settings=settings,
                uploads=uploads,
            )
        conditions.append(condition)
    if cls.spec.proxy is not None and cls.spec.proxy.protocol == "pypi":
        reachable = all(c.is_true for c in conditions[-2:])  # liveness and auth
        found = (
            await _look_at_links(
                connector,
                cls,
                credentials=credentials,
                tls=tls,
                session=session,
                settings=settings,
            )
            if reachable and not isinstance(credentials, access.CredentialsProblem)
            else coverage.Coverage(why="the registry cannot be read yet")
        )
        conditions.append(evaluate.links_condition(found))
    return conditions


async def _exercise_credentials(
    connector: Connector,
    cls: ConnectorClass,
    *,
    checked: ProbeOutcome,
    liveness: ProbeOutcome | None,
    credentials: access.BasicCredentials,
    tls: ssl.SSLContext,
    session: aiohttp.ClientSession,
    settings: ReconcileSettings,
    uploads: probes.UploadChecks,
) -> Condition:
    """AuthReady after the credential check passed. Where the registry answers that check
    without credentials too (devpi, pypiserver reading anonymously), a pass proves nothing,
    so a PyPI registry is asked to take an empty upload; other protocols say Unknown."""
    if liveness is None or liveness.url != checked.url or not _success(liveness):
        return evaluate.auth_condition(checked)
    if cls.spec.proxy is None or cls.spec.proxy.protocol != "pypi":
        return evaluate.upload_check_condition(
            checked.url, ProbeOutcome(url=checked.url, error="no upload check for this class")
        )
    url = probes.upload_check_url(connector.spec.address)
    if url is None:
        return evaluate.upload_check_condition(
            checked.url,
            ProbeOutcome(url=connector.spec.address, error="not sent: the address has a query"),
        )
    upload = await uploads.outcome(
        session,
        url,
        credentials=credentials,
        tls=tls,
        timeout_seconds=settings.probe_timeout_seconds,
    )
    return evaluate.upload_check_condition(checked.url, upload)


def _success(outcome: ProbeOutcome) -> bool:
    return outcome.status is not None and 200 <= outcome.status < 300


async def _look_at_links(
    connector: Connector,
    cls: ConnectorClass,
    *,
    credentials: access.CredentialsResult,
    tls: ssl.SSLContext,
    session: aiohttp.ClientSession,
    settings: ReconcileSettings,
) -> coverage.Coverage:
    simple = pypi_links.index_segment(render.effective_params(connector, cls))
    return await coverage.look(
        session,
        connector.spec.address.rstrip("/") + f"/{simple}/",
        address=connector.spec.address,
        extensions=access.address_extensions(connector, cls),
        credentials=credentials if isinstance(credentials, access.BasicCredentials) else None,
        tls=tls,
        timeout_seconds=settings.probe_timeout_seconds,
    )


async def _probe(
    connector: Connector,
    *,
    cls: ConnectorClass,
    probe: Probe | None,
    credentials: access.BasicCredentials | None,
    tls: ssl.SSLContext,
    session: aiohttp.ClientSession,
    settings: ReconcileSettings,
    auth_params: dict[str, str] | None = None,
) -> ProbeOutcome | None:
    if probe is None or probe.http is None:
        return None
    try:
        url = probes.probe_url(connector, cls, probe.http, auth_params)
    except errors.TemplateError as exc:
        return ProbeOutcome(url=connector.spec.address, error=str(exc))
    return await probes.run_http_probe(
        session,
        url,
        probe.http,
        credentials=credentials,
        tls=tls,
        timeout_seconds=settings.probe_timeout_seconds,
    )
