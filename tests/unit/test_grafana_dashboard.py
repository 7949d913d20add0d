"""The proxy's Grafana dashboard (the chart's dashboards/connectors-proxy.json) against the
proxy itself: a model Grafana can lay out, read through the data source the user picks,
whose every query asks only for series and labels the proxy's own registry exposes, and
which shows every metric the proxy has."""

from __future__ import annotations

import functools
import itertools
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.metrics import MetricWrapperBase

from connectors.proxy.filecache import CacheSettings, FileCache
from connectors.proxy.metrics import ProxyMetrics
from connectors.proxy.pages import PageCache

CHART = Path(__file__).parents[2] / "deploy" / "helm" / "connectors"
DASHBOARD = CHART / "dashboards" / "connectors-proxy.json"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
# Labels Prometheus adds when it scrapes, which the proxy itself never sets.
SCRAPE_LABELS = frozenset({"instance", "job"})
# The PromQL (and Grafana) words a query may use besides metric names.
PROMQL_WORDS = frozenset({
    "sum", "min", "max", "avg", "count", "topk", "bottomk", "by", "without", "on", "ignoring",
    "group_left", "group_right", "and", "or", "unless", "bool", "rate", "irate", "increase",
    "histogram_quantile", "clamp_min", "clamp_max", "abs", "vector", "label_values",
})  # fmt: skip
# A connector label as the proxy writes it (app._record): namespace/name.
CONNECTOR = "demo/pypi"

VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)(?::\w+)?\]\]")
STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
SELECTOR = re.compile(r"([A-Za-z_:][\w:]*)?\s*\{([^}]*)\}")
MATCHER = re.compile(r'\s*(\w+)\s*(?:=~|!~|!=|=)\s*"(?:[^"\\]|\\.)*"\s*,?')
GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
RANGE = re.compile(r"\[[^\]]*\]")
IDENTIFIER = re.compile(r"(?<![\w.])[A-Za-z_:][\w:]*")
LABEL_VALUES = re.compile(r"label_values\((.+),\s*(\w+)\s*\)")

Series = dict[str, frozenset[str]]  # series name: its label names


@functools.cache
def model() -> dict[str, Any]:
    loaded = json.loads(DASHBOARD.read_text())
    assert isinstance(loaded, dict)
    return loaded


def panels(within: list[dict[str, Any]] | None = None) -> Iterator[dict[str, Any]]:
    """Every panel, those inside rows included."""
    for panel in model()["panels"] if within is None else within:
        yield panel
        yield from panels(panel.get("panels", []))


def targets() -> Iterator[tuple[str, dict[str, Any]]]:
    for panel in panels():
        for target in panel.get("targets", []):
            yield f"panel {panel['id']} ({panel['title']}) query {target['refId']}", target


def variables() -> dict[str, dict[str, Any]]:
    return {variable["name"]: variable for variable in model()["templating"]["list"]}


def variable_query(variable: dict[str, Any]) -> str:
    query = variable["query"]
    return str(query["query"] if isinstance(query, dict) else query)


def queries() -> Iterator[tuple[str, str]]:
    """Every PromQL text the dashboard sends: its panels' and its query variables'."""
    for where, target in targets():
        yield where, target["expr"]
    for name, variable in variables().items():
        if variable["type"] == "query":
            yield f"variable {name}", variable_query(variable)


@pytest.fixture(scope="module")
def exposed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Series]:
    """What a proxy's registry exposes, by metric family: every labelled metric given a
    child and the caches watched, so that each family has its series."""
    metrics = ProxyMetrics()
    for wrapper in vars(metrics).values():
        if isinstance(wrapper, MetricWrapperBase) and wrapper._labelnames:
            wrapper.labels(*[CONNECTOR] * len(wrapper._labelnames))
    files = FileCache(CacheSettings(directory=tmp_path_factory.mktemp("cache"), max_bytes=1024))
    metrics.watch_caches(PageCache(), files)
    families: dict[str, Series] = {}
    for family in metrics.registry.collect():
        assert family.samples, f"{family.name} exposes no series: give it one here"
        series: dict[str, set[str]] = {}
        for sample in family.samples:
            series.setdefault(sample.name, set()).update(sample.labels)
        families[family.name] = {name: frozenset(labels) for name, labels in series.items()}
    return families


def problems_of(query: str, series: Series) -> tuple[list[str], set[str]]:
    """What is wrong with one PromQL text, and the series it reads."""
    text = VARIABLE.sub("VARIABLE", query)
    found = LABEL_VALUES.fullmatch(text.strip())
    if found is not None:  # Grafana's label_values(selector, label)
        problems, used = problems_of(found[1], series)
        if not any(found[2] in series[name] for name in used):
            problems.append(f"label {found[2]} is not on {sorted(used)}")
        return problems, used
    problems = []
    for name, matchers in SELECTOR.findall(text):
        labels = {m[1] for m in MATCHER.finditer(matchers)}
        if not name or name not in series:
            problems.append(f"selector {name or '(no metric name)'}{{...}}: no such series")
        elif MATCHER.sub("", matchers).strip():
            problems.append(f"selector {name}{{{matchers}}} does not parse")
        elif labels - series[name] - SCRAPE_LABELS:
            problems.append(f"{name} has no label {sorted(labels - series[name])}")
    bare = RANGE.sub("", SELECTOR.sub(r"\1", STRING.sub('""', text)))
    grouped = {g.strip() for found in GROUPING.findall(bare) for g in found.split(",")} - {""}
    used = set()
    for word in IDENTIFIER.findall(GROUPING.sub("", bare)):
        if word in series:
            used.add(word)
        elif word not in PROMQL_WORDS:
            problems.append(f"{word}: not a series the proxy exposes, nor a PromQL word")
    if not used:
        problems.append("reads no series of the proxy")
    available = set().union(SCRAPE_LABELS, *(series[name] for name in used))
    if grouped - available:
        problems.append(f"groups by {sorted(grouped - available)}, which {sorted(used)} lack")
    return problems, used


def test_the_dashboard_is_a_json_model_grafana_provisions() -> None:
    assert model()["schemaVersion"] >= 39
    assert model()["uid"] == "connectors-proxy" and model()["title"]
    assert model()["id"] is None  # Grafana gives its own on import
    assert any(p["type"] != "row" for p in panels())


def test_panel_ids_are_unique() -> None:
    ids = [panel["id"] for panel in panels()]
    assert len(ids) == len(set(ids)), sorted(ids)


def test_panels_fit_the_24_column_grid_without_overlapping() -> None:
    boxes = {}
    for panel in model()["panels"]:
        grid = panel["gridPos"]
        x, y, w, h = grid["x"], grid["y"], grid["w"], grid["h"]
        assert x >= 0 and y >= 0 and w > 0 and h > 0 and x + w <= 24, panel["title"]
        boxes[panel["title"]] = (x, y, x + w, y + h)
    for (a, (ax0, ay0, ax1, ay1)), (b, (bx0, by0, bx1, by1)) in itertools.combinations(
        boxes.items(), 2
    ):
        assert ax1 <= bx0 or bx1 <= ax0 or ay1 <= by0 or by1 <= ay0, f"{a} overlaps {b}"


def test_every_query_reads_only_series_and_labels_the_proxy_exposes(
    exposed: dict[str, Series],
) -> None:
    series = {name: labels for family in exposed.values() for name, labels in family.items()}
    problems = [
        f"{where}: {problem}"
        for where, query in queries()
        for problem in problems_of(query, series)[0]
    ]
    assert problems == []


def test_every_metric_the_proxy_exposes_has_a_panel(exposed: dict[str, Series]) -> None:
    series = {name: labels for family in exposed.values() for name, labels in family.items()}
    used = set().union(*(problems_of(target["expr"], series)[1] for _, target in targets()))
    assert [family for family, names in exposed.items() if not used & names.keys()] == []


def test_a_misspelt_metric_or_label_is_caught(exposed: dict[str, Series]) -> None:
    series = exposed["connectors_requests"]
    good = 'sum by (code) (rate(connectors_requests_total{connector=~"$c"}[$__rate_interval]))'
    assert problems_of(good, series) == ([], {"connectors_requests_total"})
    for bad in [
        good.replace("connectors_requests_total", "connectors_request_total"),
        good.replace("connector=~", "conector=~"),
        good.replace("by (code)", "by (status)"),
        "connectors_requests",  # the family's name, not a series
    ]:
        assert problems_of(bad, series)[0], bad


def test_every_variable_a_query_uses_is_defined() -> None:
    defined = variables().keys()
    used = {
        next(name for name in found.groups() if name)
        for _, query in queries()
        for found in VARIABLE.finditer(query)
    }
    assert used, "the queries use no variables: the variable checks see nothing"
    assert {name for name in used if not name.startswith("__")} <= defined


def test_every_panel_query_and_variable_reads_the_datasource_variable() -> None:
    assert variables()["datasource"]["type"] == "datasource"
    assert variables()["datasource"]["query"] == "prometheus"
    for panel in panels():
        if panel["type"] != "row":
            assert panel["datasource"] == DATASOURCE, panel["title"]
    for where, target in targets():
        assert target["datasource"] == DATASOURCE, where
    for name, variable in variables().items():
        if variable["type"] == "query":
            assert variable["datasource"] == DATASOURCE, name


def test_the_namespace_and_connector_variables_split_the_connector_label() -> None:
    pattern = variables()["namespace"]["regex"]
    assert pattern.startswith("/") and pattern.endswith("/")
    found = re.search(pattern[1:-1], CONNECTOR)
    assert found is not None and found[1] == "demo"
    assert re.search(pattern[1:-1], "(none)") is None  # requests for no known connector
    assert "$namespace" in variable_query(variables()["connector"])
