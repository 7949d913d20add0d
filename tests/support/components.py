"""Run connectors' cluster components (`operator`, `proxy`) as real processes, each with
its own ServiceAccount and the RBAC shipped under deploy/ (never as cluster admin)."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any, Self

from tests.support import leaks
from tests.support.standalone import CONNECTORS
from tests.support.testcluster import TestCluster
from tests.support.waiting import settled

DEPLOY = Path(__file__).parents[2] / "deploy"
SYSTEM_NAMESPACE = "connectors-system"


def account_kubeconfig(cluster: TestCluster, account: str, rbac: Path) -> Path:
    """A kubeconfig holding a fresh token of a component's own ServiceAccount, after
    applying that component's RBAC as shipped."""
    cluster.kubectl("create", "namespace", SYSTEM_NAMESPACE, check=False)
    cluster.kubectl("apply", "-f", str(rbac))
    token = cluster.kubectl(
        "create", "token", account, "-n", SYSTEM_NAMESPACE, "--duration=2h"
    ).stdout.strip()
    return cluster.token_kubeconfig(account, token)


class ComponentProcess:
    """`connectors <command>` as a real process with its ServiceAccount's token."""

    def __init__(
        self, cluster: TestCluster, workdir: Path, command: str, account: str, rbac: Path,
        *extra: str,
    ) -> None:  # fmt: skip
        self.cluster = cluster
        self.command = command
        self.kubeconfig = account_kubeconfig(cluster, account, rbac)
        self.log_file = workdir / f"{command}-{time.monotonic_ns()}.log"
        self.extra = extra
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Self:
        with self.log_file.open("ab") as log:
            self.process = subprocess.Popen(
                [CONNECTORS, self.command, "--kubeconfig", str(self.kubeconfig), *self.extra],
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
        leaks.record(f"{self.command} log {self.log_file.name}", self.log())

    def log(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""


class OperatorProcess(ComponentProcess):
    def __init__(self, cluster: TestCluster, workdir: Path, *extra: str) -> None:
        super().__init__(
            cluster, workdir, "operator", "connectors-operator", DEPLOY / "operator" / "rbac.yaml",
            "--reprobe-interval", "2", *extra,
        )  # fmt: skip


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

    def reached() -> dict[str, Any]:
        body = connector(cluster, namespace, name)
        found = condition(body, type_)
        if found.get("status") == status and (reason is None or found.get("reason") == reason):
            return body
        conditions = json.dumps((body.get("status") or {}).get("conditions"), indent=1)
        raise AssertionError(f"conditions now: {conditions}")

    return settled(reached, timeout, f"{namespace}/{name} {type_} {status} {reason or ''}")
