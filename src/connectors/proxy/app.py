"""The proxy's aiohttp application: route, authenticate, authorize, forward.

Status codes a client can get from the proxy itself:
400 unsafe request target · 401 no or bad token (with a Basic challenge) · 403 a valid
token without permission · 404 no such connector or path · 405 CONNECT/TRACE ·
502 registry unreachable or refusing the connector's credentials · 503 connector unusable
now (no Secret) or the token authority unreachable · 504 registry too slow.
Anything else is the registry's own answer, passed through.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import AsyncIterator, Callable

import aiohttp
from aiohttp import web
from aiohttp.typedefs import Handler

from connectors.api.errors import AuthUnavailable, PermissionDenied, TokenError
from connectors.auth import credentials
from connectors.auth.authenticator import Authenticator
from connectors.proxy import forwarding, routing, safety
from connectors.proxy.targets import TargetCache
from connectors.store.base import Store

log = logging.getLogger(__name__)

_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_REFUSED_METHODS = frozenset({"CONNECT", "TRACE", "TRACK"})


@dataclasses.dataclass(frozen=True)
class ProxyConfig:
    """How the proxy is wired: where resources come from and who decides on tokens."""

    store: Store
    authenticator: Authenticator
    audience_for: Callable[[str, str], str]  # (namespace, name) -> expected token audience
    is_ready: Callable[[], bool] = lambda: True
    forward: forwarding.ForwardSettings = forwarding.ForwardSettings()


CONFIG = web.AppKey("config", ProxyConfig)
TARGETS = web.AppKey("targets", TargetCache)
SESSION = web.AppKey("session", aiohttp.ClientSession)


def make_app(config: ProxyConfig) -> web.Application:
    app = web.Application(
        handler_args={"max_field_size": 16 * 1024}, middlewares=[refuse_unsafe_requests]
    )
    app[CONFIG] = config
    app[TARGETS] = TargetCache(config.store)
    app.cleanup_ctx.append(_upstream_session)
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


async def _upstream_session(app: web.Application) -> AsyncIterator[None]:
    connector = aiohttp.TCPConnector(limit=256, limit_per_host=64, ttl_dns_cache=60)
    async with aiohttp.ClientSession(
        connector=connector, auto_decompress=False, cookie_jar=aiohttp.DummyCookieJar()
    ) as session:
        app[SESSION] = session
        yield


@web.middleware
async def refuse_unsafe_requests(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Checked for every request, before routing has any say (CONNECT never routes)."""
    if request.method in _REFUSED_METHODS:
        return forwarding.error_response(405, f"{request.method} is not supported")
    reason = safety.unsafe_target_reason(request.raw_path)
    if reason is not None:
        return forwarding.error_response(400, f"refused request target: {reason}")
    return await handler(request)


async def handle(request: web.Request) -> web.StreamResponse:
    path, _, query = request.raw_path.partition("?")
    found = routing.route(request.host, path)
    if found is None:
        return _unrouted(request, path)
    config = request.app[CONFIG]
    target = request.app[TARGETS].get(found.namespace, found.name)
    if target is None:
        return forwarding.error_response(404, f"connector {found.namespace}/{found.name} not found")
    denied = await _authorize(request, config, found)
    if denied is not None:
        return denied
    if target.problem is not None:
        return forwarding.error_response(
            503, f"connector {found.namespace}/{found.name} cannot be used now: {target.problem}"
        )
    destination = target.link_map.to_upstream(found.rest, query)
    if destination is None:
        return forwarding.error_response(404, "no such upstream path for this connector")
    client_base = f"{request.scheme}://{request.host}{found.base_path}"
    return await forwarding.forward(
        request,
        target,
        destination,
        client_base=client_base,
        session=request.app[SESSION],
        settings=config.forward,
    )


async def _authorize(
    request: web.Request, config: ProxyConfig, found: routing.Route
) -> web.Response | None:
    token = credentials.token_from_authorization(request.headers.get("Authorization"))
    if token is None:
        return forwarding.error_response(
            401,
            "a token is required: send it as the Basic password or as a Bearer token",
            challenge=True,
        )
    try:
        await config.authenticator.authorize(
            token,
            audience=config.audience_for(found.namespace, found.name),
            namespace=found.namespace,
            name=found.name,
            upload=request.method not in _SAFE_METHODS,
        )
    except TokenError as exc:
        return forwarding.error_response(401, f"token refused: {exc}", challenge=True)
    except PermissionDenied as exc:
        return forwarding.error_response(403, str(exc))
    except AuthUnavailable as exc:
        return forwarding.error_response(503, f"cannot check the token now: {exc}")
    return None


def _unrouted(request: web.Request, path: str) -> web.Response:
    if path == "/healthz":
        return web.Response(text="ok\n")
    if path == "/readyz":
        if request.app[CONFIG].is_ready():
            return web.Response(text="ready\n")
        return web.Response(status=503, text="not ready\n")
    return forwarding.error_response(
        404,
        "no connector addressed: use /namespaces/<namespace>/connectors/<name>/ "
        "or the Host c-<name>.<namespace>",
    )
