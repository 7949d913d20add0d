"""Faults on the real node, as an operator of the cluster meets them: a Pod deleted while
its token is still in someone's hands, a proxy replica crashing under traffic, the
operator's leader crashing. Nothing may fail that a client's retry does not fix."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from connectors.standalone.localregistry import LocalRegistry
from tests.node.conftest import (
    RELEASE_NS,
    Tenant,
    connector,
    lease_holder,
    pods,
    tenant,
    token_in,
)  # fmt: skip
from tests.support.node import Node
from tests.support.waiting import settled

pytestmark = pytest.mark.timeout(600)


def token_of(faults: Tenant, pod: str) -> str:
    faults.run_client(pod)
    return token_in(faults.pip_conf(pod))


@pytest.fixture(scope="module")
def faults(chart: Node, node_registry: LocalRegistry) -> Iterator[Tenant]:
    with tenant(chart, node_registry, "node-faults") as made:
        yield made


def test_a_deleted_pods_token_is_refused(faults: Tenant):
    token = token_of(faults, "holder")
    # A new Service may refuse for a moment until kube-proxy syncs: ask until it answers.
    assert settled(lambda: faults.status(token) == 200, 30, "the holder's token works")
    faults.kubectl("delete", "pod", "holder", "-n", faults.namespace, "--grace-period=1")
    # Within the proxy's decision cache (10 s), the token of a Pod that is gone stops.
    assert settled(lambda: faults.status(token) == 401, 30, "the token refused")


def container_id(pod: dict[str, Any]) -> str:
    statuses = pod["status"]["containerStatuses"]
    return str(statuses[0]["containerID"]).removeprefix("containerd://")


def crash(node: Node, pod: dict[str, Any]) -> None:
    """SIGKILL the Pod's container, as a crash would (kubelet restarts it)."""
    node.ctr("tasks", "kill", "--signal", "SIGKILL", container_id(pod))


def test_a_proxy_replica_crashing_under_traffic_costs_nothing_a_retry_does_not_fix(
    faults: Tenant,
):
    token = token_of(faults, "client")
    settled(lambda: faults.status(token) == 200, 30, "the client's token works")
    first_tries: list[int] = []
    unrecovered: list[str] = []
    stop = threading.Event()

    def traffic() -> None:
        while not stop.is_set():
            for attempt in range(20):
                try:
                    status = faults.status(token)
                except OSError as exc:
                    status = -1
                    last = str(exc)
                else:
                    last = str(status)
                if attempt == 0:
                    first_tries.append(status)
                if status == 200:
                    break
                time.sleep(0.25)
            else:
                unrecovered.append(last)

    worker = threading.Thread(target=traffic)
    worker.start()
    try:
        settled(lambda: len(first_tries) >= 20, 30, "traffic flowing")
        victim = pods(faults.node, RELEASE_NS, "app.kubernetes.io/name=connectors-proxy")[0]
        crash(faults.node, victim)
        settled(
            lambda: all(
                p["status"]["containerStatuses"][0]["restartCount"] >= 1
                for p in pods(faults.node, RELEASE_NS, "app.kubernetes.io/name=connectors-proxy")
                if p["metadata"]["name"] == victim["metadata"]["name"]
            )
            and len(ready_proxies(faults)) == 2,
            90, "the crashed proxy restarted and Ready",
        )  # fmt: skip
        seen = len(first_tries)
        settled(lambda: len(first_tries) >= seen + 20, 30, "traffic after the restart")
    finally:
        stop.set()
        worker.join(timeout=60)
    assert unrecovered == []
    assert first_tries.count(200) >= 40
    print(f"\n{len(first_tries)} requests, {len(first_tries) - first_tries.count(200)} "
          "needed a retry")  # fmt: skip


def ready_proxies(faults: Tenant) -> list[str]:
    return [
        str(p["metadata"]["name"])
        for p in pods(faults.node, RELEASE_NS, "app.kubernetes.io/name=connectors-proxy")
        if all(s["ready"] for s in p["status"].get("containerStatuses", []))
    ]


def test_the_operator_leader_crashing_hands_over_and_connectors_still_reconcile(
    faults: Tenant, node_registry: LocalRegistry
):
    before = lease_holder(faults.node)
    operators = pods(faults.node, RELEASE_NS, "app.kubernetes.io/name=connectors-operator")
    (leader,) = [p for p in operators if before.startswith(p["metadata"]["name"])]
    crash(faults.node, leader)
    after = settled(
        lambda: (holder := lease_holder(faults.node)) not in ("", before) and holder,
        60, "another identity holding the operator Lease",
    )  # fmt: skip
    assert after != before
    faults.kubectl(
        "apply", "-n", faults.namespace, "-f", "-", stdin=connector("after-crash", node_registry)
    )  # fmt: skip
    assert settled(lambda: faults.ready("after-crash"), 60, "a new Connector Ready")
