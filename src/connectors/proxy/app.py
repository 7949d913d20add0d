"""The proxy's aiohttp application: route, authenticate, authorize, forward.

Status codes a client can get from the proxy itself:
400 unsafe request target · 401 no or bad token (with a Basic challenge) · 403 a valid
token without permission · 404 no such connector or path · 405 CONNECT/TRACE ·
502 registry unreachable or refusing the connector's credentials · 503 connector unusable
now (no Secret) or the token authority unreachable · 504 registry too slow.
Anything else is the registry's own answer, passed through.

Every request routed to a connector leaves exactly one audit line, however it ends, with
the bytes that really crossed the wire, the client's address and a short digest that tells
tokens apart without revealing one. It has an id, and an answer the proxy made itself
carries its explanation in the line's `error` field: every 5xx the proxy makes ends with
that id, so the line that explains it can be found. Metric labels come only from
connectors that exist and from a fixed set of methods, so unauthenticated traffic creates
no lasting series.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import secrets
import time
from collections.abc import AsyncIterator, Callable, Sequence

import aiohttp
from aiohttp import web
from aiohttp.typedefs import Handler

from connectors.api.errors import AuthUnavailable, PermissionDenied, TokenError
from connectors.auth import credentials, tokens
from connectors.auth.authenticator import Authenticator
from connectors.proxy import cachedfiles, fairness, forwarding, routing, safety, splice
from connectors.proxy.filecache import FileCache
from connectors.proxy.metrics import ProxyMetrics
from connectors.proxy.pages import PageCache
from connectors.proxy.recent import RecentRequests
from connectors.proxy.targets import TargetCache
from connectors.store.base import Store

log = logging.getLogger(__name__)
audit_log = logging.getLogger("connectors.audit")

_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_REFUSED_METHODS = frozenset({"CONNECT", "TRACE", "TRACK"})
# Methods that get a metric label of their own; any other counts as OTHER.
_LABELLED_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH", "DELETE"})
# The label of requests for connectors that do not exist.
NO_CONNECTOR = "(none)"
# Made once: json.dumps builds an encoder on every call that has options.
_AUDIT_JSON = json.JSONEncoder(separators=(",", ":"))


AudienceFor = Callable[[str, str], str]  # (namespace, name) -> the audience tokens must carry


@dataclasses.dataclass(frozen=True)
class ProxySettings:
    """How the proxy is wired: where resources come from and who decides on tokens."""

    store: Store
    authenticator: Authenticator
    audience_for: AudienceFor
    readiness: Callable[[], Sequence[str]] = lambda: ()  # why not ready; empty: ready
    forward: forwarding.ForwardSettings = forwarding.ForwardSettings()


CONFIG = web.AppKey("config", ProxySettings)
TARGETS = web.AppKey("targets", TargetCache)
RESOURCES = web.AppKey("resources", forwarding.Resources)
METRICS = web.AppKey("metrics", ProxyMetrics)

# What handling learned about a request, for the audit line and the metrics.
ROUTE = web.RequestKey("route", routing.Route)
KNOWN = web.RequestKey("known", bool)  # the routed connector exists
IDENTITY = web.RequestKey("identity", tokens.Identity)
TOKEN_ID = web.RequestKey("token_id", str)
REQUEST_ID = web.RequestKey("request_id", str)


def make_app(config: ProxySettings, metrics: ProxyMetrics | None = None) -> web.Application:
    # Limits on request heads live with the server (serving.GuardedRunner).
    app = web.Application(middlewares=[audit, refuse_unsafe_requests])
    app[CONFIG] = config
    app[METRICS] = metrics or ProxyMetrics()
    app[TARGETS] = TargetCache(config.store)
    app.cleanup_ctx.append(_upstream_session)
    app.on_response_prepare.append(_plain_server_header)
    # 100 Continue is sent by `handle` once the token and its scope are checked, never
    # before: a client must not stream a body the proxy will refuse.
    app.router.add_route("*", "/{tail:.*}", handle, expect_handler=_defer_continue)
    return app


async def _defer_continue(request: web.Request) -> None:
    return None


async def _plain_server_header(request: web.Request, response: web.StreamResponse) -> None:
    response.headers["Server"] = "connectors"  # not which Python or aiohttp version


async def _upstream_session(app: web.Application) -> AsyncIterator[None]:
    """The registry connection pool, the page and file caches and the splice workers."""
    # No pool-wide cap that one tenant could fill: each connector and namespace has its
    # own share (fairness.Shares), and in-flight registry requests never outnumber the
    # client connections the server admits.
    connector = aiohttp.TCPConnector(limit=0, limit_per_host=0, ttl_dns_cache=60)
    async with aiohttp.ClientSession(
        connector=connector,
        auto_decompress=False,
        cookie_jar=aiohttp.DummyCookieJar(),
        read_bufsize=1024 * 1024,  # large reads from the registry: fewer, bigger copies
    ) as session:
        relays = splice.Relays() if splice.AVAILABLE else None
        settings = app[CONFIG].forward
        files = FileCache(settings.cache) if settings.cache.enabled else None
        pages = PageCache()
        app[METRICS].watch_caches(pages, files)
        app[RESOURCES] = forwarding.Resources(
            session,
            pages,
            files,
            relays,
            fairness.Shares(settings.fairness),
            fairness.ByteBudget(settings.fairness),
        )
        try:
            yield
        finally:
            if relays is not None:
                relays.close()


@web.middleware
async def audit(request: web.Request, handler: Handler) -> web.StreamResponse:
    """One audit line and one set of metrics per routed request, however it ends; never a
    token or a credential."""
    started = time.monotonic()
    request[REQUEST_ID] = request_id = secrets.token_hex(6)
    response: web.StreamResponse | None = None
    try:
        response = await handler(request)
        if isinstance(response, web.Response) and not response.prepared:
            _name_the_line(response, request_id)
            # Send it now, so that the line says what went over the wire (aiohttp lets
            # go of the body once it is written).
            body = response.body
            size = len(body) if isinstance(body, bytes | bytearray) else 0
            await response.prepare(request)
            await response.write_eof()
            request[forwarding.BODY_BYTES_SENT] = 0 if request.method == "HEAD" else size
        return response
    except ConnectionError:
        response = None  # the client went away before the answer was sent
        raise
    except Exception:
        log.exception("request %s failed inside the proxy", request_id)
        response = forwarding.error_response(
            500, "internal error in the proxy: its log has the traceback, just before this line"
        )
        _name_the_line(response, request_id)
        return response
    finally:
        if request.get(ROUTE) is not None:
            _record(request, response, time.monotonic() - started)


def _name_the_line(response: web.Response, request_id: str) -> None:
    """End a 5xx the proxy made with the id of the audit line that explains it."""
    if response.status >= 500 and forwarding.EXPLANATION in response:
        response.text = f"{response.text}request {request_id}\n"


def _show_on_status_page(
    request: web.Request,
    recent: RecentRequests,
    *,
    status: int,
    sent: int,
    cached: str,
    duration: float,
) -> None:
    """The status page's view of a request to a connector that exists (anyone may send
    the others, and they must not push real traffic off the page): no identity, token
    digest or client."""
    found: routing.Route = request[ROUTE]
    recent.add(
        connector=f"{found.namespace}/{found.name}",
        known=True,
        method=request.method,
        path=request.raw_path,
        status=status,
        bytes_in=request.content.total_bytes,
        bytes_out=sent,
        cache=cached,
        duration_ms=round(duration * 1000, 1),
    )


def _record(request: web.Request, response: web.StreamResponse | None, duration: float) -> None:
    found: routing.Route = request[ROUTE]
    identity: tokens.Identity | None = request.get(IDENTITY)
    status = response.status if response is not None else 499  # nginx's "client closed"
    sent = int(request.get(forwarding.BODY_BYTES_SENT, 0))
    cached = request.get(cachedfiles.CACHE_RESULT, "")
    audit_log.info(
        _AUDIT_JSON.encode(
            {
                "request": request[REQUEST_ID],
                "connector": found.name,
                "namespace": found.namespace,
                "identity": identity.subject if identity else "",
                "pod": identity.pod if identity else "",
                "token": request.get(TOKEN_ID, ""),
                "client": request.remote or "",
                "method": request.method,
                "path": request.raw_path.partition("?")[0],
                "status": status,
                "bytes_in": request.content.total_bytes,
                "bytes_out": sent,
                "cache": cached,
                # The client was sent off the hosts the connector covers (a registry's
                # fallback to PyPI, say) and will fetch from there, around the proxy.
                "redirect": request.get(forwarding.REDIRECTED_OFF_HOST, ""),
                # What the proxy said, on an answer it made itself rather than passed on.
                "error": response.get(forwarding.EXPLANATION, "") if response is not None else "",
                "duration_ms": round(duration * 1000, 1),
            }
        )
    )
    metrics = request.app[METRICS]
    connector = f"{found.namespace}/{found.name}" if request.get(KNOWN) else NO_CONNECTOR
    method = request.method if request.method in _LABELLED_METHODS else "OTHER"
    metrics.answered(connector, method, status, sent, duration)
    if request.get(KNOWN) and metrics.recent is not None:
        _show_on_status_page(
            request, metrics.recent, status=status, sent=sent, cached=cached, duration=duration
        )
    if cached:
        metrics.cache_requests.labels(connector, cached).inc()
        if cached == "hit":
            metrics.cache_served_bytes.labels(connector).inc(sent)
        else:
            metrics.cache_fetched_bytes.labels(connector).inc(
                request.get(cachedfiles.CACHE_FETCHED_BYTES, 0)
            )
    failure = request.get(forwarding.UPSTREAM_ERROR)
    if failure:
        metrics.upstream_errors.labels(connector, failure).inc()


@web.middleware
async def refuse_unsafe_requests(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Checked for every request, before routing has any say (CONNECT never routes)."""
    if request.method in _REFUSED_METHODS:
        return forwarding.error_response(405, f"{request.method} is not supported")
    reason = safety.unsafe_target_reason(request.raw_path)
    if reason is not None:
        return forwarding.error_response(400, f"refused request target: {reason}")
    reason = safety.unsafe_host_reason(request.headers.get("Host", ""))
    if reason is not None:
        return forwarding.error_response(400, reason)
    return await handler(request)


async def handle(request: web.Request) -> web.StreamResponse:
    path, _, query = request.raw_path.partition("?")
    found = routing.route(request.host, path)
    if found is None:
        return _unrouted(request, path)
    request[ROUTE] = found
    config = request.app[CONFIG]
    target = request.app[TARGETS].get(found.namespace, found.name)
    if target is None:
        return forwarding.error_response(404, f"connector {found.namespace}/{found.name} not found")
    request[KNOWN] = True
    denied = await _authorize(request, config, found)
    if denied is not None:
        return denied
    if target.problem is not None:
        return forwarding.error_response(
            503,
            f"connector {found.namespace}/{found.name} cannot be used now: {target.problem}; "
            "its Ready condition says the same",
        )
    destination = target.link_map.to_upstream(found.rest, query)
    if destination is None:
        return forwarding.error_response(404, "no such upstream path for this connector")
    if destination.read_only and request.method not in ("GET", "HEAD"):
        return forwarding.error_response(405, "only GET and HEAD reach a linked file")
    client_base = f"{request.scheme}://{request.host}{found.base_path}"
    if request.headers.get("Expect", "").lower() == "100-continue":
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    return await forwarding.forward(
        request,
        target,
        destination,
        client_base=client_base,
        resources=request.app[RESOURCES],
        settings=config.forward,
    )


async def _authorize(
    request: web.Request, config: ProxySettings, found: routing.Route
) -> web.Response | None:
    metrics = request.app[METRICS]
    connector = f"{found.namespace}/{found.name}"
    token = credentials.token_from_authorization(request.headers.get("Authorization"))
    if token is None:
        metrics.decided(connector, "no_token")
        return forwarding.error_response(
            401,
            "a token is required: send it as the Basic password or as a Bearer token",
            challenge=True,
        )
    request[TOKEN_ID] = hashlib.sha256(token.encode()).hexdigest()[:12]
    try:
        request[IDENTITY] = await config.authenticator.authorize(
            token,
            audience=config.audience_for(found.namespace, found.name),
            namespace=found.namespace,
            name=found.name,
            upload=request.method not in _SAFE_METHODS,
        )
    except TokenError as exc:
        metrics.decided(connector, "unauthenticated")
        return forwarding.error_response(401, f"token refused: {exc}", challenge=True)
    except PermissionDenied as exc:
        metrics.decided(connector, "forbidden")
        return forwarding.error_response(403, str(exc))
    except AuthUnavailable as exc:
        metrics.decided(connector, "unavailable")
        return forwarding.error_response(503, f"cannot check the token now: {exc}")
    metrics.decided(connector, "allowed")
    return None


def _unrouted(request: web.Request, path: str) -> web.Response:
    if path == "/healthz":
        return web.Response(text="ok\n")
    if path == "/readyz":
        reasons = request.app[CONFIG].readiness()
        if not reasons:
            return web.Response(text="ready\n")
        return web.Response(status=503, text="not ready: " + "; ".join(reasons) + "\n")
    return forwarding.error_response(
        404,
        "no connector addressed: use /namespaces/<namespace>/connectors/<name>/ "
        "or the Host c-<name>.<namespace>",
    )
