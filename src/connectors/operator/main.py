"""`connectors operator`: lead, install the built-in classes, watch, reconcile.

Only the replica holding the Lease works; one that loses it stops at once and exits
non-zero, so its Deployment restarts it as a candidate.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import signal
import socket

import kopf
import yaml

from connectors.api.errors import ConnectorsError
from connectors.classes import builtin
from connectors.kube.client import KubeClient
from connectors.kube.config import ClusterConfig
from connectors.kube.leases import LeaderElector, LeaseSettings
from connectors.operator import handlers
from connectors.operator.class_status import ClassStatusWriter
from connectors.operator.controller import FIELD_MANAGER, ConnectorController
from connectors.operator.settings import OperatorSettings
from connectors.reconcile import probes
from connectors.store.kubestore import KubeStore

log = logging.getLogger(__name__)


class LeadershipLost(ConnectorsError):
    """Another replica leads now; this one must stop."""


def default_identity() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


async def install_builtin_classes(kube: KubeClient) -> None:
    for name in builtin.NAMES:
        for document in yaml.safe_load_all(builtin.builtin_manifest(name)):
            await kube.apply(document, field_manager=FIELD_MANAGER)
            log.info("installed ConnectorClass %s", document["metadata"]["name"])


async def acquire_unless_stopped(elector: LeaderElector) -> bool:
    """Wait to lead; False if SIGTERM or SIGINT came first. A standby runs as PID 1 in
    its container, where a signal without a handler is ignored: without this, every
    rollout or drain would wait out its grace period. (Once leading, kopf handles them.)"""
    loop = asyncio.get_running_loop()
    acquiring = asyncio.ensure_future(elector.acquire())
    signals: tuple[signal.Signals, ...] = (signal.SIGINT, signal.SIGTERM)
    try:
        for signum in signals:
            loop.add_signal_handler(signum, acquiring.cancel)
    except (NotImplementedError, RuntimeError, ValueError):  # not the main thread
        signals = ()
    try:
        await acquiring
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise  # our caller cancelled us, not a signal
        log.info("stopped before leading")
        return False
    finally:
        for signum in signals:
            loop.remove_signal_handler(signum)
    return True


async def run(config: ClusterConfig, settings: OperatorSettings) -> None:
    # kopf reports every handled event at INFO; the controller logs what matters.
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    identity = settings.identity or default_identity()
    async with KubeClient(config) as kube, probes.probe_session() as session:
        elector = LeaderElector(
            kube,
            LeaseSettings(
                namespace=settings.lease_namespace, name=settings.lease_name, identity=identity
            ),
        )
        if not await acquire_unless_stopped(elector):
            return
        if settings.builtin_classes:
            await install_builtin_classes(kube)
        store = KubeStore(
            kube, base_classes=builtin.builtin_classes(), retry_seconds=settings.retry_seconds
        )
        await store.start()
        controller = ConnectorController(kube, store, session, settings)
        controller.start()
        class_status = ClassStatusWriter(kube, store, controller.health)
        class_status.start()
        stop = asyncio.Event()
        lost: list[bool] = []

        def on_lost() -> None:
            lost.append(True)
            stop.set()

        keeper = asyncio.create_task(elector.keep(on_lost))
        try:
            await kopf.operator(
                registry=handlers.build_registry(controller, config),
                settings=handlers.kopf_settings(),
                clusterwide=True,
                standalone=True,
                stop_flag=stop,
            )
        finally:
            keeper.cancel()
            await class_status.stop()
            await controller.stop()
            await store.stop()
            if not lost:
                await elector.release()
        if lost:
            raise LeadershipLost("lost the operator lease to another replica; exiting")
