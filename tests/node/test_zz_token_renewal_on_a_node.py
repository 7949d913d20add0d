"""The long form: a Pod that mounts its pip.conf the seed's way (`subPath`) outlives its
first token and still installs. Kubelet renews the token at 80% of its life (the chart is
installed here with the API server's shortest lifetime, 10 minutes), republishes, and the
driver rewrites the file in the inode the container holds. The Pod was started before the
other node tests (`renewal_pod` in conftest.py), and this test runs after every other
test of the run but the leak scan (tests/conftest.py), so the wait overlaps them all."""

from __future__ import annotations

import json
import time

import pytest

from connectors.standalone.localregistry import LocalRegistry
from tests.node.conftest import TOKEN_SECONDS, RenewalPod, get, token_in
from tests.node.test_tokens_on_a_node import claims
from tests.support import leaks, wire
from tests.support.node import Node
from tests.support.wheels import make_wheel

pytestmark = pytest.mark.timeout(TOKEN_SECONDS + 300)


def test_a_subpath_pod_installs_after_its_first_token_expired(
    chart: Node, renewal_pod: RenewalPod, node_registry: LocalRegistry
):
    def kubectl(*args: str) -> str:
        return chart.cluster.kubectl("-n", renewal_pod.namespace, *args).stdout

    def in_pod(*argv: str) -> str:
        return kubectl("exec", renewal_pod.name, "--", *argv)

    first_expiry = claims(renewal_pod.first_token)["exp"]
    inode = in_pod("stat", "-c", "%i", "/root/.pip/pip.conf")
    renewed_at = None
    while time.time() < first_expiry + 30:  # watch the file, as a long-lived job would
        pip_conf = in_pod("cat", "/root/.pip/pip.conf")
        current = token_in(pip_conf)
        if renewed_at is None and current != renewal_pod.first_token:
            renewed_at = time.time()
            leaks.record("node: renewed pip.conf", pip_conf)
        time.sleep(10)
    print(
        f"\nfirst token renewed {renewed_at and renewed_at - renewal_pod.started:.0f}s into "
        f"its {TOKEN_SECONDS}s life; now {time.time() - first_expiry:.0f}s past its expiry"
    )
    assert renewed_at is not None, "the token in pip.conf was never renewed"
    assert renewed_at < first_expiry, "renewed only after the first token expired"
    assert in_pod("stat", "-c", "%i", "/root/.pip/pip.conf") == inode  # the same file

    service = get(chart, "service", "connectors-proxy", "-n", "connectors-system")
    expired = wire.request(
        "GET", f"http://{service['spec']['clusterIP']}/simple/",
        headers={"Host": f"c-mirror.{renewal_pod.namespace}.svc.cluster.local",
                 **wire.basic(renewal_pod.first_token)},
    )  # fmt: skip
    assert expired.status == 401  # the first token is really gone

    make_wheel(node_registry.packages, "renewal-probe", "1.0.0")
    install = in_pod(
        "pip", "install", "--no-deps", "--no-cache-dir", "--disable-pip-version-check",
        "--target", "/tmp/site", "renewal-probe==1.0.0",
    )  # fmt: skip
    assert "Successfully installed renewal-probe-1.0.0" in install, install
    pod = json.loads(kubectl("get", "pod", renewal_pod.name, "-o", "json"))
    assert pod["status"]["containerStatuses"][0]["restartCount"] == 0
