"""Prometheus metrics of the proxy, served on their own port, never beside client traffic.

Each app gets its own registry (no process globals), so two proxies in one process (tests,
standalone) count separately. The same object keeps the last requests answered and sums the
cache figures for the status page (`statuspage.py`), which shares this port.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web
from aiohttp.typedefs import Handler
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from connectors.api import addresses
from connectors.proxy.filecache import CacheFigures, FileCache
from connectors.proxy.pages import PageCache
from connectors.proxy.recent import RecentRequests

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class _CacheCollector(Collector):
    """Token-decision cache hits and misses, read from the authenticator when scraped."""

    def __init__(self, read: Callable[[], tuple[int, int]]) -> None:
        self.read = read

    def collect(self) -> Iterator[Metric]:
        hits, misses = self.read()
        family = CounterMetricFamily(
            "connectors_auth_cache",
            "Token decisions answered from the cache, or not.",
            labels=["result"],
        )
        family.add_metric(["hit"], hits)
        family.add_metric(["miss"], misses)
        yield family


class _StoreCollector(Collector):
    """The file cache's size and the page cache's reuse, read when scraped."""

    def __init__(self) -> None:
        self.pages: PageCache | None = None
        self.files: FileCache | None = None

    def collect(self) -> Iterator[Metric]:
        if self.pages is not None:
            family = CounterMetricFamily(
                "connectors_index_pages",
                "Index pages answered with a rewrite reused (the registry said 304, or sent "
                "the same bytes) or made anew.",
                labels=["result"],
            )
            family.add_metric(["reused"], self.pages.hits)
            family.add_metric(["rewritten"], self.pages.misses)
            yield family
        if self.files is not None:
            figures = self.files.figures()
            yield GaugeMetricFamily(
                "connectors_cache_size_bytes", "Bytes held by the cache of files.", figures.bytes
            )
            yield GaugeMetricFamily(
                "connectors_cache_limit_bytes", "The cache of files' bound.", figures.max_bytes
            )
            yield GaugeMetricFamily(
                "connectors_cache_entries", "Files held by the cache of files.", figures.files
            )


CACHE_RESULTS = ("hit", "revalidated", "miss", "refetch", "bypass")


@dataclasses.dataclass(frozen=True)
class CacheSummary:
    """The caches' figures summed over every connector, as the status page shows them."""

    files: CacheFigures | None  # None: the cache of files is turned off
    requests: dict[str, int]  # by result, in CACHE_RESULTS order
    served_bytes: int
    fetched_bytes: int
    pages_reused: int
    pages_rewritten: int
    decisions_cached: int  # token decisions answered from the decision cache
    decisions_asked: int


def _total(counter: Counter, by: str | None = None) -> dict[str, int]:
    """A counter's `_total` samples summed over all labels but `by` (or over all)."""
    sums: dict[str, int] = {}
    for family in counter.collect():
        for sample in family.samples:
            if sample.name.endswith("_total"):
                key = sample.labels.get(by, "") if by else ""
                sums[key] = sums.get(key, 0) + int(sample.value)
    return sums


class ProxyMetrics:
    def __init__(
        self, cache_counts: Callable[[], tuple[int, int]] = lambda: (0, 0), *, recent: bool = False
    ) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "connectors_requests",
            "Requests answered, by connector, method and status code.",
            ["connector", "method", "code"],
            registry=self.registry,
        )
        self.bytes = Counter(
            "connectors_response_bytes",
            "Response body bytes sent to clients, by connector.",
            ["connector"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "connectors_request_duration_seconds",
            "Time from request to the end of the response, by connector.",
            ["connector"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
            registry=self.registry,
        )
        self.auth = Counter(
            "connectors_auth_decisions",
            "Token decisions, by connector and outcome.",
            ["connector", "decision"],
            registry=self.registry,
        )
        self.upstream_errors = Counter(
            "connectors_upstream_errors",
            "Registry failures seen by the proxy, by connector and kind.",
            ["connector", "kind"],
            registry=self.registry,
        )
        self.cache_requests = Counter(
            "connectors_cache_requests",
            "Requests for files the cache may answer, by connector and result: hit (from "
            "the cache), miss (fetched and kept), refetch (fetched again to confirm).",
            ["connector", "result"],
            registry=self.registry,
        )
        self.cache_served_bytes = Counter(
            "connectors_cache_served_bytes",
            "File bytes sent to clients from the cache, by connector.",
            ["connector"],
            registry=self.registry,
        )
        self.cache_fetched_bytes = Counter(
            "connectors_cache_fetched_bytes",
            "File bytes fetched from registries for requests the cache may answer.",
            ["connector"],
            registry=self.registry,
        )
        self.registry.register(_CacheCollector(cache_counts))
        self._cache_counts = cache_counts
        # The last requests, kept only where the status page shows them (`recent`).
        self.recent = RecentRequests() if recent else None
        # Labelled children by their labels: finding one through `labels()` costs more
        # than counting, and every request counts several. Bounded as the labels are.
        self._answered: dict[tuple[str, str, int], tuple[Any, Any, Any]] = {}
        self._decisions: dict[tuple[str, str], Any] = {}
        self._stores = _StoreCollector()
        self.registry.register(self._stores)

    def answered(
        self, connector: str, method: str, status: int, sent: int, duration: float
    ) -> None:
        """One answered request: counted, its body bytes added, its duration observed."""
        key = (connector, method, status)
        children = self._answered.get(key)
        if children is None:
            children = self._answered[key] = (
                self.requests.labels(connector, method, str(status)),
                self.bytes.labels(connector),
                self.latency.labels(connector),
            )
        count, body_bytes, latency = children
        count.inc()
        body_bytes.inc(sent)
        latency.observe(duration)

    def decided(self, connector: str, decision: str) -> None:
        key = (connector, decision)
        child = self._decisions.get(key)
        if child is None:
            child = self._decisions[key] = self.auth.labels(connector, decision)
        child.inc()

    def watch_caches(self, pages: PageCache, files: FileCache | None) -> None:
        self._stores.pages, self._stores.files = pages, files

    def cache_summary(self) -> CacheSummary:
        pages, files = self._stores.pages, self._stores.files
        by_result = _total(self.cache_requests, by="result")
        cached, asked = self._cache_counts()
        return CacheSummary(
            files=files.figures() if files is not None else None,
            requests={result: by_result.get(result, 0) for result in CACHE_RESULTS},
            served_bytes=_total(self.cache_served_bytes).get("", 0),
            fetched_bytes=_total(self.cache_fetched_bytes).get("", 0),
            pages_reused=pages.hits if pages is not None else 0,
            pages_rewritten=pages.misses if pages is not None else 0,
            decisions_cached=cached,
            decisions_asked=asked,
        )

    def app(self) -> web.Application:
        async def scrape(request: web.Request) -> web.Response:
            return web.Response(
                body=generate_latest(self.registry), headers={"Content-Type": CONTENT_TYPE}
            )

        metrics_app = web.Application(middlewares=[_named_locally_only])
        metrics_app.router.add_get("/metrics", scrape)
        return metrics_app


@web.middleware
async def _named_locally_only(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Answer only requests addressed to an IP, `localhost` or a cluster Service name.
    A web page can point a name of its own at 127.0.0.1 (DNS rebinding) and have a
    developer's browser read this port; such a request carries that name."""
    if _local_name(request.host):
        return await handler(request)
    return web.Response(status=421, text="this port answers only to an address or localhost\n")


def _local_name(host: str) -> bool:
    name = (urlsplit(f"//{host}").hostname or "").rstrip(".")
    cluster_names = (".svc", "." + addresses.DEFAULT_CLUSTER_DOMAIN)
    if name == "localhost" or name.endswith(cluster_names) or ".svc." in name:
        return True
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True
