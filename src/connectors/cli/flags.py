"""Flags several commands share, and turning them into settings: parsed once, here."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from connectors.api.errors import UsageError
from connectors.api.resources import DEFAULT_NAMESPACE
from connectors.auth import audiences
from connectors.proxy import filecache, forwarding, serving
from connectors.standalone import commands, state


def add_place(parser: argparse.ArgumentParser) -> None:
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


def add_namespace(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-n", "--namespace", default=DEFAULT_NAMESPACE)


def place(args: argparse.Namespace) -> commands.Place:
    config_dir = args.config_dir or Path(
        os.environ.get("CONNECTORS_CONFIG_DIR", state.DEFAULT_CONFIG_DIR)
    )
    state_dir = args.state_dir or (
        Path(os.environ["CONNECTORS_STATE_DIR"])
        if "CONNECTORS_STATE_DIR" in os.environ
        else state.default_state_dir(config_dir)
    )
    return commands.Place(config_dir=config_dir, state_dir=state_dir)


def host_port(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    try:
        return host.strip("[]") or "127.0.0.1", int(port)
    except ValueError:
        raise UsageError(f"{text!r} is not HOST:PORT") from None


def add_upstream_timeout(parser: argparse.ArgumentParser) -> None:
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


def forward_settings(
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
        cache=cache_settings(args, cache_dir),
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


def size_text(size: int) -> str:
    """A size as a flag takes it: whole GiB or MiB where it is one."""
    for unit in ("g", "m", "k"):
        if size and size % _SIZE_UNITS[unit] == 0:
            return f"{size // _SIZE_UNITS[unit]}{unit.upper()}iB"
    return str(size)


def add_cache(parser: argparse.ArgumentParser, *, default_dir: str) -> None:
    parser.add_argument(
        "--cache-size",
        default=size_text(filecache.CacheSettings.max_bytes),
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


def cache_settings(args: argparse.Namespace, directory: Path | None) -> filecache.CacheSettings:
    size = parse_size(args.cache_size)
    if args.cache_fresh_seconds < 0:
        raise UsageError("--cache-fresh-seconds must not be negative")
    where = args.cache_dir or directory
    return filecache.CacheSettings(
        directory=where if size > 0 else None,
        max_bytes=size,
        fresh_seconds=args.cache_fresh_seconds,
    )


def add_workload_audience(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--workload-audience",
        default=audiences.WORKLOAD,
        help="the audience of the Pod tokens kubelet hands the CSI driver (the CSIDriver's "
        "tokenRequests); the proxy accepts it for every connector, in Pod-bound tokens only",
    )


def add_client_limits(parser: argparse.ArgumentParser) -> None:
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


def client_limits(args: argparse.Namespace) -> serving.ClientSettings:
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
