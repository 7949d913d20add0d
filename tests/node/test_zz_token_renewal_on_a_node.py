"""The long form: a Pod that mounts its pip.conf the seed's way (`subPath`) outlives its
first token and still installs. Kubelet renews the token at 80% of its life (the chart is
installed here with the API server's shortest lifetime, 10 minutes), republishes, and the
driver rewrites the file in the inode the container holds. The Pod was started before the
other node tests (`renewal_pod` in conftest.py), and this test runs after every other
test of the run but the leak scan (tests/conftest.py), so the wait overlaps them all."""

from __future__ import annotations

import time

import pytest

from connectors.standalone.localregistry import LocalRegistry
from tests.node.conftest import TOKEN_SECONDS, RenewalPod, get
from tests.node.test_tokens_on_a_node import claims
from tests.support.node import Node
from tests.support.wheels import make_wheel

pytestmark = pytest.mark.timeout(TOKEN_SECONDS + 300)


def test_a_subpath_pod_installs_after_its_first_token_expired(
    chart: Node, renewal_pod: RenewalPod, node_registry: LocalRegistry
):
    renewal = renewal_pod.tenant

    def in_pod(*argv: str) -> str:
        return renewal.kubectl("exec", renewal_pod.name, "-n", renewal.namespace, "--", *argv)

    first_expiry = claims(renewal_pod.first_token)["exp"]
    renewal_pod.watched()  # the file has been read every 10 s since the Pod started
    renewed_at = renewal_pod.renewed_at
    assert renewed_at is not None, "the token in pip.conf was never renewed"
    print(
        f"\nfirst token renewed {renewed_at - renewal_pod.started:.0f}s into "
        f"its {TOKEN_SECONDS}s life; now {time.time() - first_expiry:.0f}s past its expiry"
    )
    assert renewed_at < first_expiry, "renewed only after the first token expired"
    assert in_pod("stat", "-c", "%i", "/root/.pip/pip.conf") == renewal_pod.inode  # same file
    # The first token must really have expired: a wall-clock wait, not a synchronisation.
    time.sleep(max(0.0, first_expiry + 30 - time.time()))

    assert renewal.status(renewal_pod.first_token) == 401  # the first token is really gone

    make_wheel(node_registry.packages, "renewal-probe", "1.0.0")
    install = in_pod(
        "pip", "install", "--no-deps", "--no-cache-dir", "--disable-pip-version-check",
        "--target", "/tmp/site", "renewal-probe==1.0.0",
    )  # fmt: skip
    assert "Successfully installed renewal-probe-1.0.0" in install, install
    pod = get(chart, "pod", renewal_pod.name, "-n", renewal.namespace)
    assert pod["status"]["containerStatuses"][0]["restartCount"] == 0
