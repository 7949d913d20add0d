"""The status page: what the proxy knows, for a person with a browser.

It is served on the admin listener beside `/metrics` (`--metrics-listen`), never on the
client port: every connector the proxy knows with its conditions, the last requests it
answered (`recent.py`) and its caches' figures, as one server-rendered HTML page without a
line of script. Every text from a resource or a request is HTML-escaped, and nothing shown
is a secret: no Secret is read, no token, Authorization header, identity, client address or
query string is kept, and addresses are shown without their query.

Where conditions come from is the caller's to say (`StatusSource.status_of`): standalone
passes its reconciler's latest verdicts; in a cluster they are the Connector's `status` as
the operator last wrote it and the proxy's watch saw it.
"""

from __future__ import annotations

import dataclasses
import html
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime

from aiohttp import web

from connectors.api import addresses, timestamps
from connectors.api.conditions import Condition, ConditionType, Status
from connectors.api.resources import Connector, ConnectorStatus
from connectors.proxy.metrics import CacheSummary, ProxyMetrics
from connectors.proxy.recent import RecentRequest
from connectors.store.base import Store

StatusOf = Callable[[Connector], ConnectorStatus]

_MAX_CONNECTORS = 300  # shown, not-Ready ones first; the page says how many more there are
_INFORMATIONAL = frozenset({"Warning", "Info"})  # severities that are not a failure

HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
    "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
}


def _written_status(connector: Connector) -> ConnectorStatus:
    return connector.status


@dataclasses.dataclass(frozen=True)
class StatusSource:
    """What the page reads: the store's connectors, their status, the server's readiness."""

    store: Store
    readiness: Callable[[], Sequence[str]]
    status_of: StatusOf = _written_status
    conditions_from: str = "each Connector's status as last written to it"


SOURCE = web.AppKey("status_source", StatusSource)
METRICS = web.AppKey("status_metrics", ProxyMetrics)


def admin_app(metrics: ProxyMetrics, source: StatusSource) -> web.Application:
    """The admin listener's app: `/metrics`, and this page at `/` and `/status`."""
    app = metrics.app()
    app[SOURCE] = source
    app[METRICS] = metrics
    app.router.add_get("/", serve)
    app.router.add_get("/status", serve)
    return app


async def serve(request: web.Request) -> web.Response:
    page = render(request.app[SOURCE], request.app[METRICS], now=time.time())
    return web.Response(text=page, content_type="text/html", charset="utf-8", headers=HEADERS)


def render(source: StatusSource, metrics: ProxyMetrics, *, now: float) -> str:
    snapshot = source.store.snapshot()
    connectors = [(c, source.status_of(c)) for _, c in sorted(snapshot.connectors.items())]
    return "".join(
        [
            _HEAD,
            _summary(connectors, source, now),
            _problems(list(snapshot.problems) + list(snapshot.warnings)),
            _connectors(connectors),
            _requests(metrics.recent.newest_first() if metrics.recent is not None else []),
            _caches(metrics.cache_summary()),
            "</main></body></html>\n",
        ]
    )


# --- pieces of the page --------------------------------------------------------------------


# Any one text on the page (a registry can make a condition message long), and how many
# manifest problems are listed: the page stays small whatever tenants and registries do.
_MAX_TEXT = 1024
_MAX_PROBLEMS = 50


def _e(value: object) -> str:
    text = str(value)
    if len(text) > _MAX_TEXT:
        text = text[: _MAX_TEXT - 1] + "…"
    return html.escape(text, quote=True)


def _cells(tag: str, cells: Iterable[str]) -> str:
    """A table row of already-escaped cells."""
    return "<tr>" + "".join(f"<{tag}>{c}</{tag}>" for c in cells) + "</tr>"


def _table(headings: Sequence[str], rows: Iterable[str], css: str = "") -> str:
    head = _cells("th", [_e(h) for h in headings])
    body = "".join(rows)
    return f'<table class="{css}"><thead>{head}</thead><tbody>{body}</tbody></table>'


def _size(count: int) -> str:
    if count < 1024:
        return f"{count} B"
    value = count / 1024
    for unit in ("KiB", "MiB"):
        if value < 1024:
            return f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def _stamp(moment: float, fmt: str = "%Y-%m-%d %H:%M:%S UTC") -> str:
    return datetime.fromtimestamp(moment, UTC).strftime(fmt)


def _tone(condition: Condition | None) -> str:
    """ok, warn or bad: how loudly a condition should be shown."""
    if condition is None or condition.status is Status.UNKNOWN:
        return "warn"
    if condition.is_true:
        return "ok"
    return "warn" if condition.severity in _INFORMATIONAL else "bad"


def _ready_of(status: ConnectorStatus) -> Condition | None:
    return status.condition(ConditionType.READY)


def _summary(
    connectors: Sequence[tuple[Connector, ConnectorStatus]], source: StatusSource, now: float
) -> str:
    unready = sum(1 for _, s in connectors if _tone(_ready_of(s)) != "ok")
    reasons = list(source.readiness())
    server = (
        '<span class="badge ok">ready</span>'
        if not reasons
        else '<span class="badge bad">not ready</span> ' + _e("; ".join(reasons))
    )
    count = _count(len(connectors), "connector")
    if unready:
        count += f', <strong class="bad-text">{unready} not Ready</strong>'
    return (
        "<header><h1>connectors</h1>"
        f"<p>Server: {server}</p><p>{count}. Conditions come from "
        f"{_e(source.conditions_from)}.</p>"
        f'<p class="muted">Page made {_e(_stamp(now))}; it does not refresh itself.</p>'
        "</header>"
    )


def _problems(problems: Sequence[object]) -> str:
    if not problems:
        return ""
    items = "".join(f"<li>{_e(p)}</li>" for p in problems[:_MAX_PROBLEMS])
    if len(problems) > _MAX_PROBLEMS:
        items += f"<li>and {len(problems) - _MAX_PROBLEMS} more</li>"
    return f'<section class="box warn"><h2>Manifest problems</h2><ul>{items}</ul></section>'


def _connectors(connectors: Sequence[tuple[Connector, ConnectorStatus]]) -> str:
    order = sorted(connectors, key=lambda pair: _tone(_ready_of(pair[1])) == "ok")
    shown = order[:_MAX_CONNECTORS]
    parts = ["<h2>Connectors</h2>"]
    if not connectors:
        parts.append('<p class="muted">No connectors.</p>')
    parts.extend(_connector(c, s) for c, s in shown)
    if len(order) > len(shown):
        parts.append(f'<p class="muted">{len(order) - len(shown)} more, all Ready, not shown.</p>')
    return "<section>" + "".join(parts) + "</section>"


def _address(address: str) -> str:
    """An address without userinfo, query or fragment, any of which could carry a key."""
    return addresses.shown(address)


def _condition_row(condition: Condition) -> str:
    return _cells(
        "td",
        [
            _e(condition.type),
            f'<span class="badge {_tone(condition)}">{_e(condition.status.value)}</span>',
            _e(condition.reason),
            _e(condition.message),
            _e(timestamps.format_time(condition.last_transition_time)),
        ],
    )


def _conditions(status: ConnectorStatus) -> str:
    """Conditions that are not True in a table, with their messages; the True ones named
    on one line (their messages as a tooltip)."""
    if not status.conditions:
        return '<p class="muted">No conditions written yet.</p>'
    pending = [c for c in status.conditions if not c.is_true]
    held = [c for c in status.conditions if c.is_true]
    parts = []
    if pending:
        headings = ["Condition", "Status", "Reason", "Message", "Since"]
        parts.append(_table(headings, map(_condition_row, pending), "conditions"))
    if held:
        names = " · ".join(f'<span title="{_e(c.message)}">{_e(c.type)}</span>' for c in held)
        parts.append(f'<p class="held"><span class="badge ok">True</span> {names}</p>')
    return "".join(parts)


def _connector(connector: Connector, status: ConnectorStatus) -> str:
    ready = _ready_of(status)
    tone = _tone(ready)
    label = "Ready" if tone == "ok" else "not Ready" if ready is not None else "no status yet"
    headline = ""
    if ready is not None and tone != "ok":
        headline = f'<p class="message">{_e(ready.reason)}: {_e(ready.message)}</p>'
    return (
        f'<article class="box {tone}">'
        f"<h3>{_e(connector.namespace)}/{_e(connector.name)} "
        f'<span class="badge {tone}">{_e(label)}</span> '
        f"<small>class {_e(connector.spec.connector_class_name)} · "
        f"address {_e(_address(connector.spec.address))}</small></h3>"
        f"{headline}{_conditions(status)}</article>"
    )


def _status_tone(status: int) -> str:
    return "ok" if status < 400 else "warn" if status < 500 else "bad"


def _request_row(entry: RecentRequest) -> str:
    connector = _e(entry.connector)
    if not entry.known:
        connector += ' <span class="muted">(no such connector)</span>'
    return _cells(
        "td",
        [
            _e(_stamp(entry.at, "%H:%M:%S")),
            connector,
            _e(entry.method),
            f'<span class="path">{_e(entry.path)}</span>',
            f'<span class="badge {_status_tone(entry.status)}">{entry.status}</span>',
            _e(_size(entry.bytes_out)),
            _e(_size(entry.bytes_in)) if entry.bytes_in else "",
            _e(entry.cache),
            _e(f"{entry.duration_ms:.1f} ms"),
        ],
    )


def _requests(entries: Sequence[RecentRequest]) -> str:
    heading = f"<h2>Recent requests <small>(last {len(entries)}, newest first)</small></h2>"
    if not entries:
        return f'<section>{heading}<p class="muted">None yet.</p></section>'
    headings = ["Time (UTC)", "Connector", "Method", "Path", "Status", "Sent", "Received"]
    table = _table([*headings, "Cache", "Duration"], map(_request_row, entries), "requests")
    return f"<section>{heading}{table}</section>"


def _caches(summary: CacheSummary) -> str:
    files = summary.files
    held = (
        "off (--cache-size 0)"
        if files is None
        else f"{_count(files.files, 'file')}, {_size(files.bytes)} of {_size(files.max_bytes)}"
    )
    by_result = " · ".join(f"{result} {n}" for result, n in summary.requests.items())
    rows = [
        ("Cache of files", held),
        ("File requests by result", by_result),
        ("Sent from the cache", _size(summary.served_bytes)),
        ("Fetched from registries for it", _size(summary.fetched_bytes)),
        (
            "Index pages",
            f"reused {summary.pages_reused} · rewritten {summary.pages_rewritten}",
        ),
        (
            "Token decisions",
            f"from the decision cache {summary.decisions_cached} · "
            f"checked {summary.decisions_asked}",
        ),
    ]
    body = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in rows)
    return f'<section><h2>Caches</h2><table class="figures"><tbody>{body}</tbody></table></section>'


_HEAD = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>connectors status</title>
<style>
body { font: 14px/1.45 system-ui, sans-serif; color: #1d232a; background: #f6f7f9; margin: 0; }
main { max-width: 1200px; margin: 0 auto; padding: 16px 24px 40px; }
h1 { font-size: 22px; margin: 8px 0; } h2 { font-size: 17px; margin: 24px 0 8px; }
h3 { font-size: 15px; margin: 0 0 4px; } small, .muted { color: #5f6b7a; font-weight: normal; }
header p { margin: 4px 0; }
.box { background: #fff; border: 1px solid #d5dae1; border-left-width: 6px;
       border-radius: 4px; padding: 8px 14px; margin: 8px 0; }
.box.ok { border-left-color: #2e7d32; }
.box.warn { border-left-color: #d08a00; background: #fffaf0; }
.box.bad { border-left-color: #c62828; background: #fff5f5; }
.message { font-weight: 600; color: #8e1b1b; margin: 4px 0 8px; }
.held { margin: 6px 0 0; color: #3b4653; }
.box.warn .message { color: #7a5200; }
.badge { display: inline-block; padding: 0 7px; border-radius: 9px; font-size: 12px;
         font-weight: 600; color: #fff; }
.badge.ok { background: #2e7d32; } .badge.warn { background: #d08a00; }
.badge.bad { background: #c62828; } .bad-text { color: #c62828; }
table { border-collapse: collapse; width: 100%; background: #fff; }
th, td { text-align: left; vertical-align: top; padding: 4px 8px;
         border-bottom: 1px solid #e3e7ec; }
thead th { background: #eef1f5; font-size: 12px; }
table.figures th { width: 260px; font-weight: 600; }
table.requests td, table.requests th, table.conditions td:last-child { white-space: nowrap; }
table.requests td:nth-child(4) { white-space: normal; }
.path { font-family: ui-monospace, monospace; font-size: 12px; word-break: break-all; }
</style></head><body><main>
"""
