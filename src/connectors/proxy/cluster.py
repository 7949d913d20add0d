"""`connectors proxy`: the shared proxy of a cluster.

Resources come from a KubeStore (watches; no API read per request), tokens are checked by
TokenReview and SubjectAccessReview, and each connector's audience is the address its
Service gives it (`http(s)://c-<name>.<namespace>.svc.<domain>`, the same address the
operator writes into `status.proxy.httpAddress`). Metrics and the status page are served on a
port of their own.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import ssl
from pathlib import Path

from aiohttp import web

from connectors.api import addresses
from connectors.auth import audiences, authenticator, kubeauth
from connectors.classes.builtin import builtin_classes
from connectors.kube.client import KubeClient
from connectors.kube.config import ClusterConfig
from connectors.proxy import app as proxy_app
from connectors.proxy import forwarding, serving, statuspage
from connectors.proxy.metrics import ProxyMetrics
from connectors.store.kubestore import KubeStore

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class ClusterProxySettings:
    host: str = "0.0.0.0"  # noqa: S104 (a proxy in a pod serves the pod network)
    port: int = 8080
    metrics_host: str = "0.0.0.0"  # noqa: S104
    metrics_port: int = 9090
    cluster_domain: str = addresses.DEFAULT_CLUSTER_DOMAIN
    decision_ttl_seconds: float = authenticator.DEFAULT_DECISION_TTL_SECONDS
    authorization: kubeauth.AuthorizationMode = "namespace"
    workload_audience: str = audiences.WORKLOAD
    forward: forwarding.ForwardSettings = forwarding.ForwardSettings()
    clients: serving.ClientSettings = dataclasses.field(default_factory=serving.ClientSettings)
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    # The status page names every tenant's connectors, addresses and recent paths, so a
    # shared proxy serves it only when asked to (and its port should be fenced off).
    status_page: bool = False

    def tls_context(self) -> ssl.SSLContext | None:
        if self.tls_cert_file is None:
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.tls_cert_file, self.tls_key_file)
        return context


def audience_lookup(domain: str, scheme: str) -> proxy_app.AudienceFor:
    """A connector's audience is derived from its name alone, never read from its status:
    whatever a status says, no token minted for another audience (the API server's, say)
    can ever be accepted here."""

    def audience_for(namespace: str, name: str) -> str:
        return addresses.cluster_url(namespace, name, domain=domain, scheme=scheme)

    return audience_for


def status_source(store: KubeStore) -> statuspage.StatusSource:
    """The proxy runs no reconciler: the page shows the status the operator wrote."""
    return statuspage.StatusSource(
        store=store,
        readiness=store.readiness,
        conditions_from="each Connector's status as the operator last wrote it (seen through "
        "this proxy's watch; empty until the operator has reconciled it)",
    )


async def run(config: ClusterConfig, options: ClusterProxySettings, stop: asyncio.Event) -> None:
    """Serve until `stop` is set."""
    async with KubeClient(config) as kube:
        store = KubeStore(kube, base_classes=builtin_classes())
        await store.start()
        authenticator = kubeauth.KubeAuthenticator(
            kube,
            ttl_seconds=options.decision_ttl_seconds,
            mode=options.authorization,
            workload_audience=options.workload_audience,
        )
        metrics = ProxyMetrics(
            lambda: (authenticator.cache.hits, authenticator.cache.misses),
            recent=options.status_page,
        )
        settings = proxy_app.ProxySettings(
            store=store,
            authenticator=authenticator,
            audience_for=audience_lookup(
                options.cluster_domain, "https" if options.tls_cert_file else "http"
            ),
            readiness=store.readiness,
            forward=options.forward,
        )
        runners = [
            serving.GuardedRunner(proxy_app.make_app(settings, metrics), options.clients),
            web.AppRunner(
                statuspage.admin_app(metrics, status_source(store))
                if options.status_page
                else metrics.app()
            ),
        ]
        try:
            for runner, host, port, tls, what in zip(
                runners,
                (options.host, options.metrics_host),
                (options.port, options.metrics_port),
                (options.tls_context(), None),
                ("clients (--listen)", "--metrics-listen"),
                strict=True,
            ):
                await runner.setup()
                site = web.TCPSite(
                    runner, host, port, ssl_context=tls, backlog=serving.LISTEN_BACKLOG
                )
                await serving.listen(site, host, port, what)
            log.info(
                "proxy listening on %s:%d, metrics on %s:%d",
                options.host, options.port, options.metrics_host, options.metrics_port,
            )  # fmt: skip
            await stop.wait()
        finally:
            for runner in runners:
                await runner.cleanup()
            await store.stop()
