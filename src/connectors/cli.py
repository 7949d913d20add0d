"""The `connectors` command: argument parsing and printing, nothing else.

Without -n the namespace is `default`. Standalone commands find the running server through
--config-dir (default ./connectors.d, or $CONNECTORS_CONFIG_DIR) and --state-dir (default
CONFIG_DIR/.state, or $CONNECTORS_STATE_DIR).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

from connectors.api import addresses, crds
from connectors.api.errors import ConnectorsError, UsageError
from connectors.api.resources import DEFAULT_NAMESPACE
from connectors.auth import audiences, authenticator, kubeauth, tokens
from connectors.csi import minting  # no grpc: the defaults of `connectors csi`
from connectors.kube import client as kube_client
from connectors.kube import config as kube_config
from connectors.kube import install
from connectors.proxy import cluster, filecache, forwarding, serving
from connectors.standalone import commands, demo, listing, server, state


def _add_place(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config-dir",
        type=Path,
        default=None,
        help="directory of Connector, ConnectorClass and Secret YAML "
        "(default ./connectors.d or $CONNECTORS_CONFIG_DIR)",
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        help="where keys and status live (default CONFIG_DIR/.state)",
    )


def _add_upstream_timeout(parser: argparse.ArgumentParser) -> None:
    defaults = forwarding.ForwardSettings
    parser.add_argument(
        "--upstream-connect-timeout",
        type=float,
        default=defaults.connect_timeout_seconds,
        help="seconds to connect to a registry (default %(default)g)",
    )
    parser.add_argument(
        "--upstream-first-byte-timeout",
        type=float,
        default=defaults.first_byte_timeout_seconds,
        help="seconds a registry may take to start answering a download (default %(default)g)",
    )
    parser.add_argument(
        "--upstream-idle-timeout",
        type=float,
        default=defaults.idle_timeout_seconds,
        help="seconds a registry may stay silent mid-answer, or after an upload's body, "
        "before the client gets 504 or a closed connection (default %(default)g)",
    )
    parser.add_argument(
        "--upstream-timeout",
        type=float,
        default=None,
        help="shorthand: sets both the first-byte and the idle timeout",
    )


_SIZE_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


def parse_size(text: str) -> int:
    """Bytes from `512MiB`, `2Gi`, `2G` (binary multiples, as Kubernetes writes them) or a
    plain number."""
    cleaned = text.strip().lower().removesuffix("b").removesuffix("i")
    number, unit = cleaned.rstrip("kmgt"), cleaned[len(cleaned.rstrip("kmgt")) :]
    try:
        value = float(number)
    except ValueError:
        value = -1.0
    if value < 0 or unit not in _SIZE_UNITS:
        raise UsageError(f"{text!r} is not a size such as 0, 500MiB or 2GiB")
    return int(value * _SIZE_UNITS[unit])


def _add_cache(parser: argparse.ArgumentParser, *, default_dir: str) -> None:
    parser.add_argument(
        "--cache-size",
        default="2GiB",
        help="bound of the cache of package files, e.g. 500MiB or 2GiB; 0 turns it off "
        "(default %(default)s)",
    )
    parser.add_argument(
        "--cache-dir", type=Path, default=None, help=f"where cached files live ({default_dir})"
    )
    parser.add_argument(
        "--cache-fresh-seconds",
        type=float,
        default=filecache.CacheSettings.fresh_seconds,
        help="how long after an index page naming a file was confirmed by the registry the "
        "cached file is served without asking the registry again (default %(default)g)",
    )


def _cache_settings(args: argparse.Namespace, directory: Path | None) -> filecache.CacheSettings:
    size = parse_size(args.cache_size)
    if args.cache_fresh_seconds < 0:
        raise UsageError("--cache-fresh-seconds must not be negative")
    where = args.cache_dir or directory
    return filecache.CacheSettings(
        directory=where if size > 0 else None,
        max_bytes=size,
        fresh_seconds=args.cache_fresh_seconds,
    )


def _add_workload_audience(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--workload-audience",
        default=audiences.WORKLOAD,
        help="the audience of the Pod tokens kubelet hands the CSI driver (the CSIDriver's "
        "tokenRequests); the proxy accepts it for every connector, in Pod-bound tokens only",
    )


def _add_client_limits(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--client-idle-timeout",
        type=float,
        default=serving.ClientSettings.idle_timeout_seconds,
        help="seconds a client connection may stay idle, or take to send a request's "
        "headers, before it is closed (default %(default)g)",
    )
    parser.add_argument(
        "--max-client-connections",
        type=int,
        default=None,
        help="client connections held at once; at the limit the oldest idle one is closed "
        "(default: half of what the file-descriptor limit leaves)",
    )


def _client_limits(args: argparse.Namespace) -> serving.ClientSettings:
    if args.client_idle_timeout <= 0:
        raise UsageError("--client-idle-timeout must be positive")
    if args.max_client_connections is None:
        return serving.ClientSettings(idle_timeout_seconds=args.client_idle_timeout)
    if args.max_client_connections < 1:
        raise UsageError("--max-client-connections must be at least 1")
    return serving.ClientSettings(
        idle_timeout_seconds=args.client_idle_timeout,
        max_connections=args.max_client_connections,
    )


def _forward_settings(
    args: argparse.Namespace, cache_dir: Path | None = None
) -> forwarding.ForwardSettings:
    first_byte, idle = args.upstream_first_byte_timeout, args.upstream_idle_timeout
    if args.upstream_timeout is not None:
        first_byte = idle = args.upstream_timeout
    timeouts = (args.upstream_connect_timeout, first_byte, idle)
    if min(timeouts) <= 0:
        raise UsageError("upstream timeouts must be positive")
    return forwarding.ForwardSettings(
        connect_timeout_seconds=min(args.upstream_connect_timeout, first_byte),
        first_byte_timeout_seconds=first_byte,
        idle_timeout_seconds=idle,
        cache=_cache_settings(args, cache_dir),
    )


def _add_namespace(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-n", "--namespace", default=DEFAULT_NAMESPACE)


def _place(args: argparse.Namespace) -> commands.Place:
    config_dir = args.config_dir or Path(
        os.environ.get("CONNECTORS_CONFIG_DIR", state.DEFAULT_CONFIG_DIR)
    )
    state_dir = args.state_dir or (
        Path(os.environ["CONNECTORS_STATE_DIR"])
        if "CONNECTORS_STATE_DIR" in os.environ
        else state.default_state_dir(config_dir)
    )
    return commands.Place(config_dir=config_dir, state_dir=state_dir)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="connectors",
        description="Use private package registries without handing workloads the "
        "registry's credentials.",
    )
    parser.add_argument(
        "--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"]
    )
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the standalone server (store, proxy, issuer)")
    _add_place(serve)
    serve.add_argument("--listen", default="127.0.0.1:8080", help="HOST:PORT (port 0: any)")
    serve.add_argument(
        "--advertise-url", default=None, help="base URL clients use (default http://HOST:PORT)"
    )
    _add_upstream_timeout(serve)
    _add_client_limits(serve)
    _add_cache(serve, default_dir="default STATE_DIR/cache")
    serve.add_argument(
        "--metrics-listen",
        default=None,
        help="HOST:PORT to serve Prometheus /metrics and the status page at / (default off)",
    )
    serve.add_argument(
        "--reconcile-interval",
        type=float,
        default=server.DEFAULT_RECONCILE_INTERVAL_SECONDS,
        help="seconds between probes of every registry",
    )

    get = sub.add_parser("get", help="list connectors, or show one, as kubectl does")
    get.add_argument("resource", choices=["connectors", "connector"])
    get.add_argument("name", nargs="?", help="one connector (default: all in the namespace)")
    get.add_argument(
        "-A", "--all-namespaces", action="store_true", help="every namespace, with a column"
    )
    get.add_argument("-o", "--output", choices=listing.FORMATS, default=None)
    _add_place(get)
    _add_namespace(get)

    describe = sub.add_parser(
        "describe", help="one connector: its conditions with reasons and messages, its proxy"
    )
    describe.add_argument("resource", choices=["connector", "connectors"])
    describe.add_argument("name")
    _add_place(describe)
    _add_namespace(describe)

    token = sub.add_parser("token", help="print a token for one connector, or several")
    token.add_argument("names", nargs="+", metavar="NAME", help="the connectors it is valid for")
    _add_place(token)
    _add_namespace(token)
    token.add_argument("--ttl", default="30m", help="lifetime, e.g. 10m or 1h (default 30m)")
    token.add_argument(
        "--read-only", action="store_true", help="a token that can download but not upload"
    )

    rend = sub.add_parser("render", help="write client configuration files")
    rend.add_argument(
        "names",
        nargs="+",
        metavar="NAME",
        help="the connector; more names add their connectors to the same files",
    )
    rend.add_argument(
        "-c",
        "--configuration",
        action="append",
        required=True,
        help="a configuration of the connector's class (pipconf, pypirc, ...)",
    )
    rend.add_argument(
        "-o",
        "--output-dir",
        type=Path,
        default=None,
        help="write the files here (default: print them)",
    )
    rend.add_argument("--ttl", default="30m")
    _add_place(rend)
    _add_namespace(rend)

    cache = sub.add_parser("cache", help="what the cache of package files holds, or clear it")
    cache.add_argument("action", nargs="?", choices=["show", "clear"], default="show")
    cache.add_argument("--cache-dir", type=Path, default=None, help="default STATE_DIR/cache")
    _add_place(cache)

    sub.add_parser("demo", help="the quick start's whole story on this machine")

    keys = sub.add_parser("keys", help="the standalone issuer's signing keys")
    keys.add_argument("action", choices=["rotate"])
    keys.add_argument(
        "--retire-now",
        action="store_true",
        help="also remove every older key at once (refuses all tokens they signed)",
    )
    _add_place(keys)

    _add_cluster_commands(sub)
    return parser


def _add_cluster_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The Kubernetes components: operator, proxy, csi, install."""
    op = sub.add_parser("operator", help="reconcile Connectors in a cluster")
    op.add_argument("--kubeconfig", type=Path, default=None)
    op.add_argument("--proxy-service", default="connectors-proxy", help="the shared proxy Service")
    op.add_argument("--proxy-namespace", default="connectors-system")
    op.add_argument("--cluster-domain", default=addresses.DEFAULT_CLUSTER_DOMAIN)
    op.add_argument(
        "--proxy-scheme",
        default="http",
        choices=["http", "https"],
        help="how clients reach the proxy",
    )
    op.add_argument(
        "--reprobe-interval", type=float, default=60.0, help="seconds between registry probes"
    )
    op.add_argument("--lease-namespace", default=None, help="default: --proxy-namespace")
    op.add_argument("--workers", type=int, default=16, help="connectors reconciled at once")

    prx = sub.add_parser("proxy", help="the shared proxy of a cluster")
    prx.add_argument("--kubeconfig", type=Path, default=None)
    prx.add_argument("--listen", default="0.0.0.0:8080", help="HOST:PORT for clients")
    prx.add_argument(
        "--metrics-listen",
        default="0.0.0.0:9090",
        help="HOST:PORT for /metrics (and the status page, with --status-page)",
    )
    prx.add_argument(
        "--status-page",
        action="store_true",
        help="serve the status page at / on the metrics port: it shows every namespace's "
        "connectors and recent requests, so fence that port off first",
    )
    prx.add_argument("--cluster-domain", default=addresses.DEFAULT_CLUSTER_DOMAIN)
    _add_upstream_timeout(prx)
    _add_client_limits(prx)
    _add_cache(prx, default_dir="no default: without it nothing is cached")
    prx.add_argument("--tls-cert-file", type=Path, default=None, help="serve clients over TLS")
    prx.add_argument("--tls-key-file", type=Path, default=None)
    prx.add_argument(
        "--decision-ttl",
        type=float,
        default=authenticator.DEFAULT_DECISION_TTL_SECONDS,
        help="seconds a token decision is reused (never past the token's expiry)",
    )
    prx.add_argument(
        "--authorization",
        choices=kubeauth.AUTHORIZATION_MODES,
        default="namespace",
        help="namespace: a connector's own namespace's ServiceAccounts may use it, others need "
        "RBAC; rbac: everyone needs RBAC (get to download, create connectors/proxy to upload)",
    )
    _add_workload_audience(prx)

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
    _add_workload_audience(csi)
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


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # The format names none of the caller's file, thread or process: skip finding them for
    # every record (the proxy writes one audit record per request).
    logging._srcfile = None
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    logging.basicConfig(
        level=args.log_level,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return _run(args)
    except ConnectorsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _run(args: argparse.Namespace) -> int:
    commands_by_name = {
        "serve": _serve,
        "demo": lambda _: demo.run(),
        "install": _install,
        "operator": _operator,
        "proxy": _proxy,
        "csi": _csi,
        "get": _get,
        "token": _token,
        "render": _render,
        "keys": _keys,
        "cache": _cache,
        "describe": _describe,
    }
    return commands_by_name[args.command](args)


def _get(args: argparse.Namespace) -> int:
    document = asyncio.run(commands.current_status(_place(args)))
    namespace = None if args.all_namespaces else args.namespace
    output = listing.get_output(document, namespace=namespace, name=args.name, output=args.output)
    sys.stdout.write(output)
    for problem in document.get("problems", []):
        print(f"warning: {problem}", file=sys.stderr)
    return 0


def _describe(args: argparse.Namespace) -> int:
    document = asyncio.run(commands.current_status(_place(args)))
    (row,) = listing.select(document, args.namespace, args.name)
    sys.stdout.write(listing.describe(row, document.get("problems", [])))
    return 0


def _token(args: argparse.Namespace) -> int:
    scopes = (tokens.SCOPE_DOWNLOAD,) if args.read_only else tokens.ALL_SCOPES
    print(
        commands.issue_token(
            _place(args),
            args.namespace,
            args.names,
            ttl_seconds=tokens.parse_duration(args.ttl),
            scopes=scopes,
        )
    )
    return 0


def _cache(args: argparse.Namespace) -> int:
    directory = args.cache_dir or _place(args).state_dir / state.CACHE_DIRNAME
    if args.action == "clear":
        print(f"removed {filecache.clear(directory)} cached files from {directory}")
        return 0
    figures = filecache.survey(directory)
    print(f"{directory}: {figures.files} files, {_mib(figures.bytes)}")
    return 0


def _mib(size: int) -> str:
    return f"{size / 1024**2:.1f} MiB"


def _keys(args: argparse.Namespace) -> int:
    new, retired = commands.rotate_keys(_place(args), retire_now=args.retire_now)
    print(f"new signing key {new}")
    for kid in retired:
        print(f"retired key {kid}")
    return 0


def _render(args: argparse.Namespace) -> int:
    files = commands.render_files(
        _place(args),
        args.namespace,
        args.names,
        args.configuration,
        ttl_seconds=tokens.parse_duration(args.ttl),
    )
    for name in args.names:
        warning = commands.readiness_warning(_place(args), args.namespace, name)
        if warning is not None:
            print(f"warning: {warning}", file=sys.stderr)
    if args.output_dir is None:
        for filename, content in files.items():
            sys.stdout.write(f"# {filename}\n{content}")
    else:
        for path in commands.write_files(args.output_dir, files):
            print(path)
    return 0


def _operator(args: argparse.Namespace) -> int:
    from connectors.operator import main as operator_main  # kopf loads only here
    from connectors.operator.settings import OperatorSettings

    settings = OperatorSettings(
        proxy_service_name=args.proxy_service,
        proxy_service_namespace=args.proxy_namespace,
        cluster_domain=args.cluster_domain,
        proxy_scheme=args.proxy_scheme,
        reprobe_interval_seconds=args.reprobe_interval,
        lease_namespace=args.lease_namespace or args.proxy_namespace,
        workers=args.workers,
    )
    asyncio.run(operator_main.run(kube_config.load(args.kubeconfig), settings))
    return 0


def _proxy(args: argparse.Namespace) -> int:
    host, port = _host_port(args.listen)
    metrics_host, metrics_port = _host_port(args.metrics_listen)
    options = cluster.ClusterProxySettings(
        host=host,
        port=port,
        metrics_host=metrics_host,
        metrics_port=metrics_port,
        cluster_domain=args.cluster_domain,
        decision_ttl_seconds=args.decision_ttl,
        authorization=args.authorization,
        workload_audience=args.workload_audience,
        forward=_forward_settings(args),
        clients=_client_limits(args),
        tls_cert_file=args.tls_cert_file,
        tls_key_file=args.tls_key_file,
        status_page=args.status_page,
    )
    config = kube_config.load(args.kubeconfig)
    _run_fast(_until_signalled(lambda stop: cluster.run(config, options, stop)))
    return 0


def _csi(args: argparse.Namespace) -> int:
    from connectors.csi import server as csi_server  # grpc loads only here

    if not args.node_id:
        raise UsageError("--node-id (or $NODE_NAME) is required")
    csi_server.socket_path(args.endpoint)  # a bad --endpoint is one line, before anything
    options = csi_server.CsiSettings(
        endpoint=args.endpoint,
        node_id=args.node_id,
        state_dir=args.state_dir,
        workload_audience=args.workload_audience,
        cluster_domain=args.cluster_domain,
        proxy_scheme=args.proxy_scheme,
        refresh_fraction=args.refresh_fraction,
        mint_tokens=args.mint_tokens,
    )
    config = kube_config.load(args.kubeconfig)
    asyncio.run(_until_signalled(lambda stop: csi_server.run(config, options, stop)))
    return 0


def _run_fast(main: Coroutine[Any, Any, None]) -> None:
    """Run a data-path process on uvloop where it is installed (Linux), else asyncio."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
    else:
        uvloop.run(main)


def _host_port(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    try:
        return host.strip("[]") or "127.0.0.1", int(port)
    except ValueError:
        raise UsageError(f"{text!r} is not HOST:PORT") from None


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


def _serve(args: argparse.Namespace) -> int:
    place = _place(args)
    host, port = _host_port(args.listen)
    options = server.ServeSettings(
        config_dir=place.config_dir,
        state_dir=place.state_dir,
        host=host,
        port=port,
        advertise_url=args.advertise_url,
        reconcile_interval_seconds=args.reconcile_interval,
        forward=_forward_settings(args, place.state_dir / state.CACHE_DIRNAME),
        clients=_client_limits(args),
        metrics_listen=_host_port(args.metrics_listen) if args.metrics_listen else None,
    )
    _run_fast(_until_signalled(lambda stop: _standalone(options, stop)))
    return 0


async def _until_signalled(main: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    """Run a long-lived command until SIGINT or SIGTERM asks it to stop."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signum, stop.set)
    await main(stop)


async def _standalone(options: server.ServeSettings, stop: asyncio.Event) -> None:
    async with server.StandaloneServer(options):
        await stop.wait()


if __name__ == "__main__":
    raise SystemExit(main())
