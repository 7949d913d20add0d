"""The `connectors` command: argument parsing and printing, nothing else. The commands
come in two families, each in its own module: the standalone ones (`standalone.py`) and
the Kubernetes components (`cluster.py`); the flags they share are parsed in `flags.py`,
and every long-running one starts through `running.serve`.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from connectors.api.errors import ConnectorsError
from connectors.cli import cluster, standalone


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
    for family in (standalone, cluster):
        for name, handler in family.add_commands(sub).items():
            sub.choices[name].set_defaults(handler=handler)
    return parser


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
        handler: standalone.Command = args.handler
        return handler(args)
    except ConnectorsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
