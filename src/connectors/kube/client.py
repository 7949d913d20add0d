"""A small async client for the Kubernetes API: JSON requests, server-side apply, paths.

connectors talks to few endpoints (its own resources, Secrets, Services, TokenReview,
SubjectAccessReview, TokenRequest), so it uses aiohttp directly rather than a generated
client. Errors are translated at this boundary: an error answer becomes ApiError with the
server's status, reason and message; no answer becomes ApiUnavailable.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Mapping
from types import TracebackType
from typing import Any

import aiohttp

from connectors.api.errors import ApiError, ApiUnavailable
from connectors.kube.config import ClusterConfig

Document = dict[str, Any]

# Kinds whose plural is not simply the kind in lower case plus "s".
_PLURALS = {
    "ConnectorClass": "connectorclasses",
    "CustomResourceDefinition": "customresourcedefinitions",
    "NetworkPolicy": "networkpolicies",
    "PodDisruptionBudget": "poddisruptionbudgets",
}


def plural(kind: str) -> str:
    return _PLURALS.get(kind, kind.lower() + "s")


def resource_path(
    api_version: str, kind: str, *, name: str | None = None, namespace: str | None = None
) -> str:
    """The REST path of a resource (or of its collection when `name` is None)."""
    prefix = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
    scope = f"/namespaces/{namespace}" if namespace else ""
    tail = f"/{name}" if name else ""
    return f"{prefix}{scope}/{plural(kind)}{tail}"


class KubeClient:
    """Use as `async with KubeClient(config) as kube:`."""

    def __init__(self, config: ClusterConfig, *, timeout_seconds: float = 30.0) -> None:
        self.config = config
        self.timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> KubeClient:
        connector = aiohttp.TCPConnector(ssl=self.config.ssl_context())
        self._session = aiohttp.ClientSession(connector=connector)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._session is not None:
            await self._session.close()

    def _headers(self, content_type: str) -> dict[str, str]:
        headers = {"Accept": "application/json", "Content-Type": content_type}
        token = self.config.bearer_token()
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return headers

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: Mapping[str, Any] | None = None,
        params: Mapping[str, str] | None = None,
        content_type: str = "application/json",
    ) -> Document:
        """Send one request; the decoded JSON answer, or ApiError / ApiUnavailable."""
        if self._session is None:
            raise RuntimeError("KubeClient used outside `async with`")
        try:
            async with self._session.request(
                method,
                self.config.server + path,
                params=params,
                data=json.dumps(body) if body is not None else None,
                headers=self._headers(content_type),
                timeout=self.timeout,
            ) as response:
                text = await response.text()
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ApiUnavailable(
                f"cannot reach the Kubernetes API at {self.config.server}: {exc.__class__.__name__}"
            ) from exc
        document = _decode(text)
        if status >= 400:
            raise ApiError(
                status,
                str(document.get("reason") or ""),
                str(document.get("message") or text[:200]),
            )
        return document

    async def list_all(self, path: str, params: Mapping[str, str] | None = None) -> Document:
        """Every item of a collection, page by page; `metadata.resourceVersion` is the list's."""
        items: list[Document] = []
        query = {**(params or {}), "limit": "500"}
        while True:
            page = await self.request("GET", path, params=query)
            items.extend(page.get("items") or [])
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                return {"items": items, "metadata": page.get("metadata") or {}}
            query["continue"] = token

    async def watch(
        self,
        path: str,
        resource_version: str,
        params: Mapping[str, str] | None = None,
        *,
        on_open: Callable[[], None] = lambda: None,
    ) -> AsyncIterator[Document]:
        """Watch events after `resource_version` until the server ends the stream;
        `on_open` is called once the server has accepted the watch.

        An ERROR event is raised as ApiError (410 Gone: the version is too old, list again).
        """
        if self._session is None:
            raise RuntimeError("KubeClient used outside `async with`")
        server_timeout = 300
        query = {
            **(params or {}),
            "watch": "1",
            "resourceVersion": resource_version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(server_timeout),
        }
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=server_timeout + 30)
        try:
            async with self._session.get(
                self.config.server + path,
                params=query,
                headers=self._headers("application/json"),
                timeout=timeout,
            ) as response:
                if response.status >= 400:
                    document = _decode(await response.text())
                    raise ApiError(
                        response.status,
                        str(document.get("reason") or ""),
                        str(document.get("message") or ""),
                    )
                on_open()
                async for line in response.content:
                    event = _decode(line.decode("utf-8", errors="replace"))
                    if event.get("type") == "ERROR":
                        status = event.get("object") or {}
                        raise ApiError(
                            int(status.get("code") or 500),
                            str(status.get("reason") or ""),
                            str(status.get("message") or ""),
                        )
                    if event:
                        yield event
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ApiUnavailable(
                f"watch of {path} at {self.config.server} broke: {exc.__class__.__name__}"
            ) from exc

    async def get(self, path: str) -> Document | None:
        """The object at `path`, or None when it does not exist."""
        try:
            return await self.request("GET", path)
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    async def apply(
        self, document: Mapping[str, Any], *, field_manager: str, dry_run: bool = False
    ) -> Document:
        """Server-side apply of one object, taking ownership of the fields it sets."""
        metadata = document.get("metadata") or {}
        path = resource_path(
            str(document["apiVersion"]),
            str(document["kind"]),
            name=str(metadata["name"]),
            namespace=metadata.get("namespace"),
        )
        params = {"fieldManager": field_manager, "force": "true"}
        if dry_run:
            params["dryRun"] = "All"
        return await self.request(
            "PATCH", path, body=document, params=params, content_type="application/apply-patch+yaml"
        )


def _decode(text: str) -> Document:
    if not text:
        return {}
    try:
        decoded = json.loads(text)
    except ValueError:
        return {}
    return decoded if isinstance(decoded, dict) else {}
