"""Standalone mode: FileStore + reconciler + proxy + local token issuer in one process.

The same proxy and reconciler as in a cluster; resources come from a directory of YAML,
tokens from a local issuer whose keys live in the state directory, and each connector is
reached at `<server>/namespaces/<namespace>/connectors/<name>/`.

The server owns its state directory alone (`lock.StateLock`, taken before anything is
written there). Its three background loops (reconcile, manifest reload, signing-key
reload) run supervised: a failing one is logged and retried, and `/readyz` names it once
it cannot recover.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from pathlib import Path
from types import TracebackType

import aiohttp
from aiohttp import web

from connectors.api import addresses
from connectors.api.errors import StateError
from connectors.auth.authenticator import LocalAuthenticator
from connectors.auth.keys import KeyRing
from connectors.classes.builtin import builtin_classes
from connectors.proxy import app as proxy_app
from connectors.proxy import forwarding, serving, statuspage
from connectors.proxy.metrics import ProxyMetrics
from connectors.reconcile import probes
from connectors.reconcile.reconciler import ProxyInfo, ReconcileSettings, reconcile
from connectors.standalone.lock import StateLock
from connectors.standalone.state import StateDir
from connectors.standalone.statusboard import StatusBoard
from connectors.store.base import Snapshot
from connectors.store.filestore import FileStore
from connectors.supervision import Backoff, Health, supervise

log = logging.getLogger(__name__)

_CONCURRENT_PROBES = 16
DEFAULT_RECONCILE_INTERVAL_SECONDS = 30.0


@dataclasses.dataclass(frozen=True)
class ServeSettings:
    config_dir: Path
    state_dir: Path
    host: str = "127.0.0.1"
    port: int = 8080
    advertise_url: str | None = None
    metrics_listen: tuple[str, int] | None = None  # /metrics and the status page, if any
    reconcile_interval_seconds: float = DEFAULT_RECONCILE_INTERVAL_SECONDS
    reload_interval_seconds: float = 1.0
    reconcile: ReconcileSettings = ReconcileSettings()
    forward: forwarding.ForwardSettings = forwarding.ForwardSettings()
    clients: serving.ClientSettings = dataclasses.field(default_factory=serving.ClientSettings)


def advertised_base(options: ServeSettings, port: int) -> str:
    if options.advertise_url:
        return options.advertise_url.rstrip("/")
    host = options.host if options.host not in ("", "0.0.0.0", "::") else "127.0.0.1"  # noqa: S104
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{port}"


class StandaloneServer:
    """Start with `async with StandaloneServer(options) as server:`; `server.url` is set."""

    def __init__(self, options: ServeSettings) -> None:
        self.options = options
        self.state = StateDir(options.state_dir)
        self.store = FileStore(options.config_dir, builtin_classes())
        self.board = StatusBoard(self.state)
        self.health = Health()
        self.url = ""
        self._lock: StateLock | None = None
        self._runner: web.AppRunner | None = None
        self._metrics_runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._wake = asyncio.Event()
        self._reconciled_once = asyncio.Event()

    async def __aenter__(self) -> StandaloneServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        self._lock = StateLock.acquire(self.state)  # before anything is written there
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise

    async def _start(self) -> None:
        self.keys = KeyRing.open(self.state.keys)
        for problem in self.keys.problems:
            log.warning("%s", problem)
        authenticator = LocalAuthenticator(self.keys)
        self.metrics = ProxyMetrics(
            lambda: (authenticator.cache.hits, authenticator.cache.misses),
            recent=self.options.metrics_listen is not None,  # the status page is served there
        )
        config = proxy_app.ProxySettings(
            store=self.store,
            authenticator=authenticator,
            audience_for=lambda ns, name: addresses.standalone_url(self.url, ns, name),
            readiness=self.readiness,
            forward=self.options.forward,
        )
        self._runner = serving.GuardedRunner(
            proxy_app.make_app(config, self.metrics), self.options.clients
        )
        await self._runner.setup()
        site = web.TCPSite(
            self._runner, self.options.host, self.options.port, backlog=serving.LISTEN_BACKLOG
        )
        await serving.listen(site, self.options.host, self.options.port, "clients (--listen)")
        port = int(self._runner.addresses[0][1])
        self.url = advertised_base(self.options, port)
        if self.options.metrics_listen is not None:
            source = statuspage.StatusSource(
                store=self.store,
                readiness=self.readiness,
                status_of=lambda c: self.board.statuses.get(c.key, c.status),
                conditions_from="this server's reconciler (every --reconcile-interval seconds "
                "and on each manifest change)",
            )
            self._metrics_runner = web.AppRunner(statuspage.admin_app(self.metrics, source))
            await self._metrics_runner.setup()
            metrics_site = web.TCPSite(self._metrics_runner, *self.options.metrics_listen)
            await serving.listen(metrics_site, *self.options.metrics_listen, "--metrics-listen")
        self._session = probes.probe_session()
        self.uploads = probes.UploadChecks()
        self.state.write_server(self.url)
        every = self.options.reload_interval_seconds
        self._tasks = [
            asyncio.create_task(
                supervise(
                    "reconcile",
                    self._reconcile_pass,
                    self.health,
                    Backoff(every=self.options.reconcile_interval_seconds),
                    pause=self._pause_unless_woken,
                )
            ),
            asyncio.create_task(
                supervise("manifest reload", self._reload_manifests, self.health, Backoff(every))
            ),
            asyncio.create_task(
                supervise("signing-key reload", self._reload_keys, self.health, Backoff(every))
            ),
        ]
        log.info("serving connectors from %s at %s", self.options.config_dir, self.url)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._session is not None:
            await self._session.close()
        for runner in (self._runner, self._metrics_runner):
            if runner is not None:
                await runner.cleanup()
        if self._lock is not None:
            self.state.clear_server()  # ours: we hold the lock, so no other server wrote it
            self._lock.release()
            self._lock = None

    def readiness(self) -> list[str]:
        """Why the server is not ready (empty when it is): for `/readyz`."""
        reasons = [] if self._reconciled_once.is_set() else ["the first reconcile pass is running"]
        return reasons + self.health.problems()

    async def wait_reconciled(self) -> None:
        await self._reconciled_once.wait()

    def request_reconcile(self) -> None:
        self._wake.set()

    async def reconcile_all(self) -> None:
        snapshot = self.store.snapshot()
        assert self._session is not None
        await reconcile_snapshot(
            snapshot,
            self.board,
            self._session,
            self.url,
            self.options.reconcile,
            uploads=self.uploads,
        )
        self._reconciled_once.set()

    async def _reconcile_pass(self) -> None:
        self._wake.clear()  # a change while this pass runs asks for another
        await self.reconcile_all()

    async def _pause_unless_woken(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)

    async def _reload_manifests(self) -> None:
        if await asyncio.to_thread(self.store.reload):
            log.info("manifests changed; reconciling")
            self._wake.set()

    async def _reload_keys(self) -> None:
        if await asyncio.to_thread(self.keys.refresh_if_changed):
            log.info("signing keys changed; tokens of retired keys are refused from now")
            for problem in self.keys.problems:
                log.warning("%s", problem)
        if not len(self.keys):
            raise StateError(
                f"no signing key left in {self.keys.directory}: every token is refused; "
                "run `connectors keys rotate` to make one"
            )


async def reconcile_snapshot(
    snapshot: Snapshot,
    board: StatusBoard,
    session: aiohttp.ClientSession,
    base_url: str | None,
    settings: ReconcileSettings,
    *,
    uploads: probes.UploadChecks | None = None,
) -> None:
    """Reconcile every connector in `snapshot` and publish the result to the state dir.

    With `base_url` None (no server running), the proxy condition says so.
    """
    limit = asyncio.Semaphore(_CONCURRENT_PROBES)

    async def one(key: tuple[str, str]) -> None:
        connector = snapshot.connectors[key]
        url = addresses.standalone_url(base_url, *key) if base_url else None
        proxy = ProxyInfo(
            url=url,
            missing_message="the standalone server is not running: start `connectors serve`",
        )
        async with limit:
            status = await reconcile(
                connector,
                snapshot,
                session=session,
                proxy=proxy,
                previous=board.statuses.get(key),
                settings=settings,
                uploads=uploads,
            )
        board.record(connector, status)

    await asyncio.gather(*(one(key) for key in snapshot.connectors))
    board.forget_missing(snapshot)
    board.publish(snapshot)
