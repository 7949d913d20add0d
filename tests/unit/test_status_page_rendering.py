"""The status page's HTML: whatever a resource or a request says is text, never markup; an
address loses its query; the recent requests stay bounded; not-Ready connectors come first."""

from __future__ import annotations

import dataclasses

from connectors.api import manifests
from connectors.api.conditions import Condition, ConditionType, Status
from connectors.api.resources import Connector, ConnectorStatus
from connectors.proxy import recent, statuspage
from connectors.proxy.metrics import ProxyMetrics
from connectors.store.base import Snapshot

HOSTILE = '<script>alert("x")</script>'


@dataclasses.dataclass
class FixedStore:
    fixed: Snapshot

    def snapshot(self) -> Snapshot:
        return self.fixed


def connector(name: str, address: str, *conditions: Condition) -> Connector:
    parsed = manifests.parse(
        {
            "apiVersion": "connectors.alauda.io/v1alpha1",
            "kind": "Connector",
            "metadata": {"name": name, "namespace": "ns"},
            "spec": {"connectorClassName": "pypi", "address": address},
        }
    )
    assert isinstance(parsed, Connector)
    return dataclasses.replace(parsed, status=ConnectorStatus(conditions=conditions))


def page(*connectors: Connector, metrics: ProxyMetrics | None = None) -> str:
    snapshot = Snapshot(connectors={c.key: c for c in connectors})
    source = statuspage.StatusSource(store=FixedStore(snapshot), readiness=lambda: [HOSTILE])
    return statuspage.render(source, metrics or ProxyMetrics(), now=0)


def test_text_from_conditions_requests_and_readiness_is_escaped():
    metrics = ProxyMetrics(recent=True)
    assert metrics.recent is not None
    metrics.recent.add(connector="ns/a", known=False, method=HOSTILE, path=f"/x/{HOSTILE}",
                       status=404, bytes_in=0, bytes_out=9, cache="", duration_ms=1.0)  # fmt: skip
    failing = Condition(type=ConditionType.READY, status=Status.FALSE, reason="R", message=HOSTILE)
    html = page(connector("a", "https://r.example/simple", failing), metrics=metrics)
    assert "<script" not in html
    assert html.count("&lt;script&gt;") >= 4  # readiness, headline, condition row, path


def test_an_address_is_shown_without_its_query_or_fragment():
    html = page(connector("a", "https://r.example/simple?key=k3y-in-query#frag"))
    assert "https://r.example/simple" in html
    assert "k3y-in-query" not in html and "frag" not in html


def test_not_ready_connectors_come_first_and_unknown_ones_are_amber():
    ready = Condition(type=ConditionType.READY, status=Status.TRUE)
    failing = Condition(type=ConditionType.READY, status=Status.FALSE, reason="SecretNotFound")
    unknown = Condition(type=ConditionType.LIVENESS_READY, status=Status.UNKNOWN)
    html = page(
        connector("aaa", "https://r.example/", ready, unknown),
        connector("zzz", "https://r.example/", failing),
    )
    assert html.index("ns/zzz") < html.index("ns/aaa")
    assert '<article class="box bad"><h3>ns/zzz' in html
    assert '<span class="badge warn">Unknown</span>' in html


def test_the_recent_requests_keep_only_the_last_ones_and_no_query():
    ring = recent.RecentRequests(size=3)
    for n in range(5):
        ring.add(connector="ns/a", known=True, method="GET", path=f"/p{n}?token=t{n}",
                 status=200, bytes_in=0, bytes_out=1, cache="", duration_ms=0.1)  # fmt: skip
    assert [r.path for r in ring.newest_first()] == ["/p4", "/p3", "/p2"]
    ring.add(connector="ns/a", known=True, method="GET", path="/" + "x" * 5000,
             status=200, bytes_in=0, bytes_out=1, cache="", duration_ms=0.1)  # fmt: skip
    assert len(ring.newest_first()[0].path) == 240
