"""A plain HTTP/1.1 client over http.client: no redirects followed, no path cleaning, so
tests see exactly what the proxy answers to exactly what they sent."""

from __future__ import annotations

import base64
import dataclasses
import http.client
from urllib.parse import urlsplit

from tests.support import leaks


@dataclasses.dataclass(frozen=True)
class Reply:
    status: int
    reason: str
    headers: dict[str, str]
    body: bytes

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers.items() if k.lower() == name.lower()), None)


def basic(token: str, username: str = "anyone") -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{username}:{token}".encode()).decode()}


def request(
    method: str,
    url: str,
    *,
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
    target: str | None = None,
    timeout: float = 30,
) -> Reply:
    """Send one request to url; `target` overrides the request-target sent on the wire."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=timeout)
    try:
        path = (
            target
            if target is not None
            else (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        )
        connection.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        sent = {"Host": parts.netloc, **(headers or {})}
        if body is not None:
            sent.setdefault("Content-Length", str(len(body)))
        for key, value in sent.items():
            connection.putheader(key, value)
        connection.endheaders(body)
        response = connection.getresponse()
        data = response.read()
        reply = Reply(response.status, response.reason, dict(response.getheaders()), data)
        leaks.record(f"reply to {method} {path}", repr(reply.headers).encode() + data)
        return reply
    finally:
        connection.close()
