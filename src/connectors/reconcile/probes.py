"""Ask a registry whether it is up and whether it accepts the connector's credentials.

Probes never follow redirects (a redirect could carry credentials to another host) and
report transport failures as text that names the URL but never the credentials.
"""

from __future__ import annotations

import hashlib
import ssl
import time
from collections import OrderedDict
from urllib.parse import urlsplit

import aiohttp

from connectors.api.resources import Connector, ConnectorClass, HTTPProbe
from connectors.reconcile.evaluate import ProbeOutcome
from connectors.registry.access import BasicCredentials
from connectors.rendering import render

# How the reconciler names itself to registries, so their logs tell its probes from the
# clients' requests (which the proxy forwards with the client's own User-Agent).
USER_AGENT = "connectors-probe"


def probe_session() -> aiohttp.ClientSession:
    """The HTTP session the reconciler probes registries with."""
    return aiohttp.ClientSession(headers={"User-Agent": USER_AGENT})


def probe_url(
    connector: Connector,
    cls: ConnectorClass,
    probe: HTTPProbe,
    auth_params: dict[str, str] | None = None,
) -> str:
    """The absolute URL a probe asks: the connector's address plus the rendered path.
    An auth probe's path also sees its `params` (Alauda's `authProbes[].params`, with
    their defaults) filled from the Connector's `spec.auth.params`."""
    variables = {"params": {**render.effective_params(connector, cls), **(auth_params or {})}}
    path = render.render_string(probe.path, variables, what="probe path")
    return connector.spec.address.rstrip("/") + "/" + path.lstrip("/")


def auth_probe_params(connector: Connector, cls: ConnectorClass, auth_name: str) -> dict[str, str]:
    declared = next((p.params for p in cls.spec.auth_probes if p.auth_name == auth_name), ())
    values = {spec.name: spec.default for spec in declared if spec.default is not None}
    given = connector.spec.auth.params if connector.spec.auth else ()
    return {**values, **{p.name: p.value for p in given}}


async def run_http_probe(
    session: aiohttp.ClientSession,
    url: str,
    probe: HTTPProbe,
    *,
    credentials: BasicCredentials | None,
    tls: ssl.SSLContext,
    timeout_seconds: float,
) -> ProbeOutcome:
    headers = {h.name: h.value for h in probe.http_headers}
    if credentials is not None:
        headers["Authorization"] = credentials.authorization()
    return await _ask(
        session, probe.method, url, headers=headers, form=None, tls=tls, seconds=timeout_seconds
    )


async def run_upload_check(
    session: aiohttp.ClientSession,
    url: str,
    *,
    credentials: BasicCredentials,
    tls: ssl.SSLContext,
    timeout_seconds: float,
) -> ProbeOutcome:
    """Send the PyPI upload action with no file to `url`: a registry that reads without
    credentials still checks them before an upload, and refuses the empty one (400) only
    after accepting them; nothing is stored."""
    headers = {"Authorization": credentials.authorization()}
    form = {":action": "file_upload", "protocol_version": "1"}
    return await _ask(
        session, "POST", url, headers=headers, form=form, tls=tls, seconds=timeout_seconds
    )


class UploadChecks:
    """The empty uploads sent lately, by address and credentials: a registry is asked once
    per Secret and address (and again after `ttl_seconds`), not on every reconcile pass,
    so its logs do not fill with refused uploads. Only answers are kept; a failure to
    connect is asked again next pass."""

    def __init__(self, ttl_seconds: float = 3600.0, max_entries: int = 10_000) -> None:
        self.ttl_seconds = ttl_seconds
        self.max_entries = max_entries
        self._answers: OrderedDict[bytes, tuple[float, ProbeOutcome]] = OrderedDict()

    async def outcome(
        self,
        session: aiohttp.ClientSession,
        url: str,
        *,
        credentials: BasicCredentials,
        tls: ssl.SSLContext,
        timeout_seconds: float,
    ) -> ProbeOutcome:
        key = hashlib.sha256(f"{url}\n{credentials.authorization()}".encode()).digest()
        now = time.monotonic()
        kept = self._answers.get(key)
        if kept is not None and now - kept[0] < self.ttl_seconds:
            return kept[1]
        answer = await run_upload_check(
            session, url, credentials=credentials, tls=tls, timeout_seconds=timeout_seconds
        )
        if answer.answered:
            self._answers[key] = (now, answer)
            self._answers.move_to_end(key)
            while len(self._answers) > self.max_entries:
                self._answers.popitem(last=False)
        return answer


def upload_check_url(address: str) -> str | None:
    """Where an empty upload goes: the address's root, as twine's uploads through the
    proxy; None for an address with a query or fragment, which could aim the POST
    anywhere the address's owner likes."""
    parts = urlsplit(address)
    if parts.query or parts.fragment or "?" in address or "#" in address:
        return None
    return address.rstrip("/") + "/"


async def _ask(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    *,
    headers: dict[str, str],
    form: dict[str, str] | None,
    tls: ssl.SSLContext,
    seconds: float,
) -> ProbeOutcome:
    try:
        async with session.request(
            method,
            url,
            headers=headers,
            data=form,
            allow_redirects=False,
            ssl=tls if url.startswith("https:") else True,
            timeout=aiohttp.ClientTimeout(total=seconds),
        ) as response:
            return ProbeOutcome(url=url, status=response.status)
    except TimeoutError:
        return ProbeOutcome(url=url, error=f"no answer within {seconds:g}s")
    except aiohttp.ClientConnectorError as exc:
        return ProbeOutcome(url=url, error=_describe_connect_error(exc))
    except aiohttp.ClientError as exc:
        return ProbeOutcome(url=url, error=exc.__class__.__name__)


def _describe_connect_error(exc: aiohttp.ClientConnectorError) -> str:
    cause = exc.os_error
    text = cause.strerror if isinstance(cause, OSError) and cause.strerror else str(cause)
    return f"connection failed ({text})"
