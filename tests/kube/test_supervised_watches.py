"""`connectors proxy`'s watches on a real kube-apiserver survive what breaks them: a
ServiceAccount token file that vanishes (kubelet swaps it) while the API server restarts
used to end a watch for good, leaving the proxy 'ready' on a frozen view of the cluster.
Now the watch retries with backoff, `/readyz` says why while it cannot recover, and
Connectors created after the recovery are served."""

from __future__ import annotations

import json
from pathlib import Path

from connectors.api import addresses
from connectors.standalone import localregistry
from tests.support import wire
from tests.support.components import DEPLOY, ComponentProcess
from tests.support.standalone import connector_manifest
from tests.support.testcluster import TestCluster, kubeconfig_text
from tests.support.waiting import eventually

NS = "watch-supervision"


def token_file_kubeconfig(cluster: TestCluster, proxy: ComponentProcess, into: Path) -> Path:
    """The proxy's own kubeconfig, rewritten to read its token from a file, as in a Pod."""
    user = json.loads(proxy.kubeconfig.read_text())["users"][0]["user"]
    token_file = into / "token"
    token_file.write_text(user["token"])
    path = into / "token-file.kubeconfig"
    ca = (cluster.pki / "ca.crt").read_bytes()
    path.write_text(kubeconfig_text(cluster.server, ca, {"tokenFile": str(token_file)}))
    return path


def test_a_watch_broken_by_a_missing_token_file_is_retried_reported_and_recovers(
    kube_cluster: TestCluster, tmp_path: Path
):
    cluster = kube_cluster
    cluster.kubectl("create", "namespace", NS, check=False)
    port, metrics_port = localregistry.free_port(), localregistry.free_port()
    proxy = ComponentProcess(
        cluster, tmp_path, "proxy", "connectors-proxy", DEPLOY / "proxy" / "rbac.yaml",
        "--listen", f"127.0.0.1:{port}", "--metrics-listen", f"127.0.0.1:{metrics_port}",
    )  # fmt: skip
    proxy.kubeconfig = token_file_kubeconfig(cluster, proxy, tmp_path)
    token_file = tmp_path / "token"
    base = f"http://127.0.0.1:{port}"

    def readyz() -> wire.Reply:
        try:
            return wire.request("GET", base + "/readyz", timeout=5)
        except OSError:
            return wire.Reply(0, "", {}, b"")

    def served(name: str) -> int:  # 404 unknown connector; 401 known, no token sent
        return wire.request("GET", base + addresses.path_form(NS, name) + "/simple/").status

    proxy.start()
    try:
        eventually(lambda: readyz().status, 200, seconds=30)
        token_file.rename(tmp_path / "token.away")
        cluster.stop_apiserver()  # every watch breaks, and reconnecting needs the token
        cluster.start_apiserver()
        eventually(lambda: readyz().status, 503, seconds=90)
        body = readyz().body.decode()
        assert "failing (5 attempts in a row, see the log)" in body, body
        assert str(token_file) not in body  # the port answers anyone: details stay in the log
        (tmp_path / "token.away").rename(token_file)
        eventually(lambda: readyz().status, 200, seconds=30)
        cluster.kubectl(
            "apply", "-n", NS, "-f", "-", stdin=connector_manifest("later", "http://127.0.0.1:9")
        )
        eventually(lambda: served("later"), 401, seconds=15)
    finally:
        proxy.stop()
    log = proxy.log()
    assert "watching Connectors failed (attempt 2): FileNotFoundError" in log
    assert "watching ConnectorClasses failed (attempt 2): FileNotFoundError" in log
    assert "recovered after" in log and "Traceback" not in log
