"""Proxy behaviour by protocol: what a class's `spec.proxy.protocol` makes the proxy do.

A protocol says which client paths mean other upstream paths and how index responses are
rewritten. `pypi` ships here; a later class (npm, maven, OCI) adds its entry beside it.
A class without a protocol gets plain forwarding: no aliases, no rewriting.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator

from connectors.classes import pypi_links


def _no_aliases(params: dict[str, str]) -> tuple[tuple[str, str], ...]:
    return ()


def _never(content_type: str | None) -> bool:
    return False


def _unchanged(
    body: pypi_links.Page, content_type: str | None, page_url: str, map_url: pypi_links.UrlMapper
) -> Iterator[pypi_links.Page]:
    return iter((bytes(body),))


Rewriter = Callable[
    [pypi_links.Page, str | None, str, pypi_links.UrlMapper], Iterator[pypi_links.Page]
]


@dataclasses.dataclass(frozen=True)
class ProxyProtocol:
    name: str
    path_aliases: Callable[[dict[str, str]], tuple[tuple[str, str], ...]] = _no_aliases
    is_rewritable: Callable[[str | None], bool] = _never
    # The rewritten page in pieces, each after a bounded amount of work (see pypi_links).
    rewrite: Rewriter = _unchanged


PLAIN = ProxyProtocol(name="")
PROTOCOLS = {
    "pypi": ProxyProtocol(
        name="pypi",
        path_aliases=pypi_links.path_aliases,
        is_rewritable=pypi_links.is_rewritable,
        rewrite=pypi_links.rewrite_steps,
    ),
}


def protocol_named(name: str) -> ProxyProtocol:
    return PROTOCOLS.get(name, PLAIN)
