"""The standalone commands: serve, get, describe, token, render, cache, keys, demo.

Without -n the namespace is `default`. They find the running server through --config-dir
(default ./connectors.d, or $CONNECTORS_CONFIG_DIR) and --state-dir (default
CONFIG_DIR/.state, or $CONNECTORS_STATE_DIR).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable
from pathlib import Path

from connectors.auth import tokens
from connectors.cli import flags, running
from connectors.proxy import filecache
from connectors.standalone import commands, demo, listing, server, state

Command = Callable[[argparse.Namespace], int]
# Written as a user would, from the one default.
_DEFAULT_TTL = f"{tokens.DEFAULT_TTL_SECONDS // 60}m"


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> dict[str, Command]:
    """The standalone commands' parsers; their handlers by name."""
    serve = sub.add_parser("serve", help="run the standalone server (store, proxy, issuer)")
    flags.add_place(serve)
    serve.add_argument(
        "--listen",
        default=f"{server.ServeSettings.host}:{server.ServeSettings.port}",
        help="HOST:PORT (port 0: any)",
    )
    serve.add_argument(
        "--advertise-url", default=None, help="base URL clients use (default http://HOST:PORT)"
    )
    flags.add_upstream_timeout(serve)
    flags.add_client_limits(serve)
    flags.add_cache(serve, default_dir="default STATE_DIR/cache")
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
    flags.add_place(get)
    flags.add_namespace(get)

    describe = sub.add_parser(
        "describe", help="one connector: its conditions with reasons and messages, its proxy"
    )
    describe.add_argument("resource", choices=["connector", "connectors"])
    describe.add_argument("name")
    flags.add_place(describe)
    flags.add_namespace(describe)

    token = sub.add_parser("token", help="print a token for one connector, or several")
    token.add_argument("names", nargs="+", metavar="NAME", help="the connectors it is valid for")
    flags.add_place(token)
    flags.add_namespace(token)
    token.add_argument(
        "--ttl", default=_DEFAULT_TTL, help=f"lifetime, e.g. 10m or 1h (default {_DEFAULT_TTL})"
    )
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
    rend.add_argument(
        "--ttl", default=_DEFAULT_TTL, help=f"the tokens' lifetime (default {_DEFAULT_TTL})"
    )
    flags.add_place(rend)
    flags.add_namespace(rend)

    cache = sub.add_parser("cache", help="what the cache of package files holds, or clear it")
    cache.add_argument("action", nargs="?", choices=["show", "clear"], default="show")
    cache.add_argument("--cache-dir", type=Path, default=None, help="default STATE_DIR/cache")
    flags.add_place(cache)

    sub.add_parser("demo", help="the quick start's whole story on this machine")

    keys = sub.add_parser("keys", help="the standalone issuer's signing keys")
    keys.add_argument("action", choices=["rotate"])
    keys.add_argument(
        "--retire-now",
        action="store_true",
        help="also remove every older key at once (refuses all tokens they signed)",
    )
    flags.add_place(keys)
    return {
        "serve": _serve,
        "demo": lambda _: demo.run(),
        "get": _get,
        "describe": _describe,
        "token": _token,
        "render": _render,
        "cache": _cache,
        "keys": _keys,
    }


def _serve(args: argparse.Namespace) -> int:
    place = flags.place(args)
    host, port = flags.host_port(args.listen)
    options = server.ServeSettings(
        config_dir=place.config_dir,
        state_dir=place.state_dir,
        host=host,
        port=port,
        advertise_url=args.advertise_url,
        reconcile_interval_seconds=args.reconcile_interval,
        forward=flags.forward_settings(args, place.state_dir / state.CACHE_DIRNAME),
        clients=flags.client_limits(args),
        metrics_listen=flags.host_port(args.metrics_listen) if args.metrics_listen else None,
    )
    return running.serve(lambda stop: _standalone(options, stop), fast=True)


async def _standalone(options: server.ServeSettings, stop: asyncio.Event) -> None:
    async with server.StandaloneServer(options):
        await stop.wait()


def _get(args: argparse.Namespace) -> int:
    document = asyncio.run(commands.current_status(flags.place(args)))
    namespace = None if args.all_namespaces else args.namespace
    output = listing.get_output(document, namespace=namespace, name=args.name, output=args.output)
    sys.stdout.write(output)
    for problem in document.get("problems", []):
        print(f"warning: {problem}", file=sys.stderr)
    return 0


def _describe(args: argparse.Namespace) -> int:
    document = asyncio.run(commands.current_status(flags.place(args)))
    (row,) = listing.select(document, args.namespace, args.name)
    sys.stdout.write(listing.describe(row, document.get("problems", [])))
    return 0


def _token(args: argparse.Namespace) -> int:
    scopes = (tokens.SCOPE_DOWNLOAD,) if args.read_only else tokens.ALL_SCOPES
    print(
        commands.issue_token(
            flags.place(args),
            args.namespace,
            args.names,
            ttl_seconds=tokens.parse_duration(args.ttl),
            scopes=scopes,
        )
    )
    return 0


def _render(args: argparse.Namespace) -> int:
    files = commands.render_files(
        flags.place(args),
        args.namespace,
        args.names,
        args.configuration,
        ttl_seconds=tokens.parse_duration(args.ttl),
    )
    for name in args.names:
        warning = commands.readiness_warning(flags.place(args), args.namespace, name)
        if warning is not None:
            print(f"warning: {warning}", file=sys.stderr)
    if args.output_dir is None:
        for filename, content in files.items():
            sys.stdout.write(f"# {filename}\n{content}")
    else:
        for path in commands.write_files(args.output_dir, files):
            print(path)
    return 0


def _cache(args: argparse.Namespace) -> int:
    directory = args.cache_dir or flags.place(args).state_dir / state.CACHE_DIRNAME
    if args.action == "clear":
        print(f"removed {filecache.clear(directory)} cached files from {directory}")
        return 0
    figures = filecache.survey(directory)
    print(f"{directory}: {figures.files} files, {_mib(figures.bytes)}")
    return 0


def _mib(size: int) -> str:
    return f"{size / 1024**2:.1f} MiB"


def _keys(args: argparse.Namespace) -> int:
    new, retired = commands.rotate_keys(flags.place(args), retire_now=args.retire_now)
    print(f"new signing key {new}")
    for kid in retired:
        print(f"retired key {kid}")
    return 0
