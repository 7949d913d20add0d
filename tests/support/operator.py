"""Run `connectors operator` as a real process, with the ServiceAccount and RBAC of
deploy/operator/rbac.yaml (never as cluster admin), against the test cluster."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

from tests.support import leaks
from tests.support.standalone import CONNECTORS
from tests.support.testcluster import TestCluster

RBAC = Path(__file__).parents[2] / "deploy" / "operator" / "rbac.yaml"
SYSTEM_NAMESPACE = "connectors-system"


def operator_kubeconfig(cluster: TestCluster) -> Path:
    """A kubeconfig holding a fresh token of the operator's own ServiceAccount."""
    cluster.kubectl("create", "namespace", SYSTEM_NAMESPACE, check=False)
    cluster.kubectl("apply", "-f", str(RBAC))
    token = cluster.kubectl(
        "create", "token", "connectors-operator", "-n", SYSTEM_NAMESPACE, "--duration=2h"
    ).stdout.strip()
    return cluster.token_kubeconfig("connectors-operator", token)


class OperatorProcess:
    def __init__(self, cluster: TestCluster, workdir: Path, *extra: str) -> None:
        self.cluster = cluster
        self.kubeconfig = operator_kubeconfig(cluster)
        self.log_file = workdir / f"operator-{time.monotonic_ns()}.log"
        self.extra = extra
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> OperatorProcess:
        with self.log_file.open("ab") as log:
            self.process = subprocess.Popen(
                [CONNECTORS, "operator", "--kubeconfig", str(self.kubeconfig),
                 "--reprobe-interval", "2", *self.extra],
                stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        leaks.record(f"operator log {self.log_file.name}", self.log())

    def log(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""


def connector(cluster: TestCluster, namespace: str, name: str) -> dict[str, Any]:
    found: dict[str, Any] = cluster.kubectl_json("get", "connector", name, "-n", namespace)
    leaks.record(f"connector {namespace}/{name}", json.dumps(found))
    return found


def condition(body: dict[str, Any], type_: str) -> dict[str, Any]:
    conditions = (body.get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c.get("type") == type_), {})


def wait_for(
    cluster: TestCluster,
    namespace: str,
    name: str,
    *,
    type_: str = "Ready",
    status: str = "True",
    reason: str | None = None,
    timeout: float = 30,
) -> dict[str, Any]:
    """Wait until the condition has `status` (and `reason`); the Connector then."""
    deadline = time.monotonic() + timeout
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        body = connector(cluster, namespace, name)
        found = condition(body, type_)
        if found.get("status") == status and (reason is None or found.get("reason") == reason):
            return body
        time.sleep(0.25)
    raise AssertionError(
        f"{namespace}/{name} {type_} never became {status} {reason or ''}: "
        f"{json.dumps((body.get('status') or {}).get('conditions'), indent=1)}"
    )
