"""Prometheus metrics of the proxy, served on their own port, never beside client traffic.

Each app gets its own registry (no process globals), so two proxies in one process (tests,
standalone) count separately.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

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


class ProxyMetrics:
    def __init__(self, cache_counts: Callable[[], tuple[int, int]] = lambda: (0, 0)) -> None:
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
        self.registry.register(_CacheCollector(cache_counts))

    def app(self) -> web.Application:
        async def scrape(request: web.Request) -> web.Response:
            return web.Response(
                body=generate_latest(self.registry), headers={"Content-Type": CONTENT_TYPE}
            )

        metrics_app = web.Application()
        metrics_app.router.add_get("/metrics", scrape)
        return metrics_app
