"""The Kubernetes components: operator, proxy, csi, and install crds. The operator loads
kopf and the CSI driver grpc only when they run."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Callable
from pathlib import Path

from connectors.api import addresses, crds
from connectors.api.errors import UsageError
from connectors.auth import kubeauth
from connectors.cli import flags, running
from connectors.csi import minting  # no grpc: the defaults of `connectors csi`
from connectors.kube import client as kube_client
from connectors.kube import config as kube_config
from connectors.kube import install
from connectors.operator.settings import (
    OperatorSettings,  # no kopf: the defaults of `connectors operator`
)
from connectors.proxy import cluster

Command = Callable[[argparse.Namespace], int]
# The flags' defaults are the settings' own, written once there.
_OPERATOR = OperatorSettings()
_PROXY = cluster.ClusterProxySettings()


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> dict[str, Command]:
    """The cluster commands' parsers; their handlers by name."""
    op = sub.add_parser("operator", help="reconcile Connectors in a cluster")
    op.add_argument("--kubeconfig", type=Path, default=None)
    op.add_argument(
        "--proxy-service", default=_OPERATOR.proxy_service_name, help="the shared proxy Service"
    )
    op.add_argument("--proxy-namespace", default=_OPERATOR.proxy_service_namespace)
    op.add_argument("--cluster-domain", default=_OPERATOR.cluster_domain)
    op.add_argument(
        "--proxy-scheme",
        default=_OPERATOR.proxy_scheme,
        choices=["http", "https"],
        help="how clients reach the proxy",
    )
    op.add_argument(
        "--reprobe-interval",
        type=float,
        default=_OPERATOR.reprobe_interval_seconds,
        help="seconds between registry probes",
    )
    op.add_argument("--lease-namespace", default=None, help="default: --proxy-namespace")
    op.add_argument(
        "--builtin-classes",
        action=argparse.BooleanOptionalAction,
        default=_OPERATOR.builtin_classes,
        help="apply the built-in ConnectorClasses on start (the Helm chart installs them "
        "itself and passes --no-builtin-classes)",
    )
    op.add_argument(
        "--workers", type=int, default=_OPERATOR.workers, help="connectors reconciled at once"
    )

    prx = sub.add_parser("proxy", help="the shared proxy of a cluster")
    prx.add_argument("--kubeconfig", type=Path, default=None)
    prx.add_argument(
        "--listen", default=f"{_PROXY.host}:{_PROXY.port}", help="HOST:PORT for clients"
    )
    prx.add_argument(
        "--metrics-listen",
        default=f"{_PROXY.metrics_host}:{_PROXY.metrics_port}",
        help="HOST:PORT for /metrics (and the status page, with --status-page)",
    )
    prx.add_argument(
        "--status-page",
        action="store_true",
        help="serve the status page at / on the metrics port: it shows every namespace's "
        "connectors and recent requests, so fence that port off first",
    )
    prx.add_argument("--cluster-domain", default=_PROXY.cluster_domain)
    flags.add_upstream_timeout(prx)
    flags.add_client_limits(prx)
    flags.add_cache(prx, default_dir="no default: without it nothing is cached")
    prx.add_argument("--tls-cert-file", type=Path, default=None, help="serve clients over TLS")
    prx.add_argument("--tls-key-file", type=Path, default=None)
    prx.add_argument(
        "--decision-ttl",
        type=float,
        default=_PROXY.decision_ttl_seconds,
        help="seconds a token decision is reused (never past the token's expiry)",
    )
    prx.add_argument(
        "--authorization",
        choices=kubeauth.AUTHORIZATION_MODES,
        default=_PROXY.authorization,
        help="namespace: a connector's own namespace's ServiceAccounts may use it, others need "
        "RBAC; rbac: everyone needs RBAC (get to download, create connectors/proxy to upload)",
    )
    flags.add_workload_audience(prx)

    csi = sub.add_parser("csi", help="the CSI node plugin that mounts client files into pods")
    csi.add_argument("--endpoint", required=True, help="unix:///path/to/csi.sock")
    csi.add_argument(
        "--node-id", default=os.environ.get("NODE_NAME", ""), help="default $NODE_NAME"
    )
    csi.add_argument("--kubeconfig", type=Path, default=None)
    csi.add_argument(
        "--state-dir", type=Path, default=Path("/var/lib/connectors-csi"), help="per-volume records"
    )
    csi.add_argument("--cluster-domain", default=addresses.DEFAULT_CLUSTER_DOMAIN)
    flags.add_workload_audience(csi)
    csi.add_argument(
        "--mint-tokens",
        action="store_true",
        help="mint tokens with TokenRequest when kubelet hands none over or a volume asks "
        "for a shorter token.expiration (needs create on serviceaccounts/token: see "
        "docs/security.md)",
    )
    csi.add_argument(
        "--proxy-scheme",
        choices=["http", "https"],
        default="http",
        help="how the proxy serves clients: the scheme of the audience of tokens it mints",
    )
    csi.add_argument(
        "--refresh-fraction",
        type=float,
        default=minting.DEFAULT_REFRESH_FRACTION,
        help="share of a minted token's life after which a republish mints a new one",
    )

    inst = sub.add_parser("install", help="install cluster-wide definitions into a cluster")
    inst.add_argument("what", choices=["crds"])
    inst.add_argument("--kubeconfig", type=Path, default=None)
    inst.add_argument("--print", action="store_true", help="print the YAML, apply nothing")
    inst.add_argument("--dry-run", action="store_true", help="server-side dry run")
    return {"operator": _operator, "proxy": _proxy, "csi": _csi, "install": _install}


def _operator(args: argparse.Namespace) -> int:
    from connectors.operator import main as operator_main  # kopf loads only here

    settings = OperatorSettings(
        proxy_service_name=args.proxy_service,
        proxy_service_namespace=args.proxy_namespace,
        cluster_domain=args.cluster_domain,
        proxy_scheme=args.proxy_scheme,
        reprobe_interval_seconds=args.reprobe_interval,
        lease_namespace=args.lease_namespace or args.proxy_namespace,
        workers=args.workers,
        builtin_classes=args.builtin_classes,
    )
    asyncio.run(operator_main.run(kube_config.load(args.kubeconfig), settings))
    return 0


def _proxy(args: argparse.Namespace) -> int:
    host, port = flags.host_port(args.listen)
    metrics_host, metrics_port = flags.host_port(args.metrics_listen)
    options = cluster.ClusterProxySettings(
        host=host,
        port=port,
        metrics_host=metrics_host,
        metrics_port=metrics_port,
        cluster_domain=args.cluster_domain,
        decision_ttl_seconds=args.decision_ttl,
        authorization=args.authorization,
        workload_audience=args.workload_audience,
        forward=flags.forward_settings(args),
        clients=flags.client_limits(args),
        tls_cert_file=args.tls_cert_file,
        tls_key_file=args.tls_key_file,
        status_page=args.status_page,
    )
    config = kube_config.load(args.kubeconfig)
    return running.serve(lambda stop: cluster.run(config, options, stop), fast=True)


def _csi(args: argparse.Namespace) -> int:
    from connectors.csi import publisher  # grpc loads only here
    from connectors.csi import server as csi_server

    if not args.node_id:
        raise UsageError("--node-id (or $NODE_NAME) is required")
    csi_server.socket_path(args.endpoint)  # a bad --endpoint is one line, before anything
    options = csi_server.CsiSettings(
        endpoint=args.endpoint,
        node_id=args.node_id,
        publisher=publisher.PublisherSettings(
            state_dir=args.state_dir,
            workload_audience=args.workload_audience,
            cluster_domain=args.cluster_domain,
            proxy_scheme=args.proxy_scheme,
            refresh_fraction=args.refresh_fraction,
            mint_tokens=args.mint_tokens,
        ),
    )
    config = kube_config.load(args.kubeconfig)
    return running.serve(lambda stop: csi_server.run(config, options, stop))


def _install(args: argparse.Namespace) -> int:
    if args.print:
        sys.stdout.write(crds.crds_yaml())
        return 0
    config = kube_config.load(args.kubeconfig)

    async def apply() -> list[str]:
        async with kube_client.KubeClient(config) as kube:
            return await install.install_crds(kube, dry_run=args.dry_run)

    suffix = " (server dry run)" if args.dry_run else ""
    for name in asyncio.run(apply()):
        print(f"customresourcedefinition.apiextensions.k8s.io/{name} applied{suffix}")
    return 0
