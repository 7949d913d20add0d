"""What the proxy and the CSI driver rely on, checked on a real kube-apiserver:
TokenRequest with custom audiences bound to a pod, TokenReview with those audiences,
SubjectAccessReview for a Connector, and a bound token dying with its pod."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from tests.support.testcluster import ISSUER, TestCluster
from tests.support.waiting import settled

NAMESPACE = "token-checks"
PROXY_URL = "http://c-pypi-connector.token-checks.svc.cluster.local"


def claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    decoded: dict[str, Any] = json.loads(
        base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    )
    return decoded


def pod(name: str, service_account: str) -> str:
    return json.dumps({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "serviceAccountName": service_account,
            "containers": [{"name": "pip", "image": "python:3-bookworm"}],
        },
    })  # fmt: skip


def review(cluster: TestCluster, token: str, audiences: list[str]) -> dict[str, Any]:
    document = json.dumps({
        "apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
        "spec": {"token": token, "audiences": audiences},
    })  # fmt: skip
    status = cluster.kubectl_json("create", "-f", "-", stdin=document)["status"]
    assert isinstance(status, dict)
    return status


def may(cluster: TestCluster, account: str, verb: str, subresource: str = "") -> bool:
    attributes = {
        "group": "connectors.alauda.io", "resource": "connectors", "verb": verb,
        "namespace": NAMESPACE, "name": "pypi-connector",
    }  # fmt: skip
    if subresource:
        attributes["subresource"] = subresource
    document = json.dumps({
        "apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
        "spec": {
            "user": f"system:serviceaccount:{NAMESPACE}:{account}",
            "groups": ["system:serviceaccounts", f"system:serviceaccounts:{NAMESPACE}"],
            "resourceAttributes": attributes,
        },
    })  # fmt: skip
    status = cluster.kubectl_json("create", "-f", "-", stdin=document)["status"]
    assert isinstance(status, dict)
    return bool(status.get("allowed"))


def bound_token(cluster: TestCluster, account: str, pod_name: str, seconds: int = 1800) -> str:
    return cluster.kubectl(
        "create", "token", account, "-n", NAMESPACE, f"--duration={seconds}s",
        f"--audience={ISSUER}", f"--audience={PROXY_URL}",
        "--bound-object-kind=Pod", f"--bound-object-name={pod_name}",
    ).stdout.strip()  # fmt: skip


@pytest.fixture(scope="module")
def namespace(kube_cluster: TestCluster) -> str:
    kube_cluster.kubectl("create", "ns", NAMESPACE)
    for account in ("builder", "reader"):
        kube_cluster.kubectl("create", "serviceaccount", account, "-n", NAMESPACE)
    kube_cluster.kubectl(
        "create", "role", "connector-user", "-n", NAMESPACE, "--verb=get",
        "--resource=connectors.connectors.alauda.io",
    )  # fmt: skip
    kube_cluster.kubectl(
        "create", "rolebinding", "builder-uses-connectors", "-n", NAMESPACE,
        "--role=connector-user", f"--serviceaccount={NAMESPACE}:builder",
    )  # fmt: skip
    return NAMESPACE


def test_a_token_request_carries_both_audiences_the_pod_and_the_lifetime(
    kube_cluster: TestCluster, namespace: str
):
    kube_cluster.kubectl("apply", "-f", "-", stdin=pod("job-a", "builder"))
    uid = kube_cluster.kubectl_json("get", "pod", "job-a", "-n", namespace)["metadata"]["uid"]
    token = bound_token(kube_cluster, "builder", "job-a")
    body = claims(token)
    assert body["aud"] == [ISSUER, PROXY_URL]
    assert body["sub"] == f"system:serviceaccount:{namespace}:builder"
    assert body["exp"] - body["iat"] == 1800
    assert body["kubernetes.io"]["pod"] == {"name": "job-a", "uid": uid}


def test_token_review_accepts_the_proxy_audience_and_names_the_pod(
    kube_cluster: TestCluster, namespace: str
):
    kube_cluster.kubectl("apply", "-f", "-", stdin=pod("job-b", "builder"))
    status = review(kube_cluster, bound_token(kube_cluster, "builder", "job-b"), [PROXY_URL])
    assert status["authenticated"] is True
    assert status["audiences"] == [PROXY_URL]
    assert status["user"]["username"] == f"system:serviceaccount:{namespace}:builder"
    assert status["user"]["extra"]["authentication.kubernetes.io/pod-name"] == ["job-b"]


def test_token_review_refuses_a_token_for_another_audience(
    kube_cluster: TestCluster, namespace: str
):
    kube_cluster.kubectl("apply", "-f", "-", stdin=pod("job-c", "builder"))
    token = bound_token(kube_cluster, "builder", "job-c")
    status = review(kube_cluster, token, ["http://c-other.elsewhere.svc.cluster.local"])
    assert status.get("authenticated") is not True
    assert "audience" in status.get("error", "")


def test_subject_access_review_tells_granted_from_ungranted_accounts(
    kube_cluster: TestCluster, namespace: str
):
    assert may(kube_cluster, "builder", "get")
    assert not may(kube_cluster, "reader", "get")
    # Uploading needs a separate grant on the connectors/proxy subresource.
    assert not may(kube_cluster, "builder", "create", subresource="proxy")


def test_a_bound_token_stops_validating_once_its_pod_is_deleted(
    kube_cluster: TestCluster, namespace: str
):
    kube_cluster.kubectl("apply", "-f", "-", stdin=pod("job-d", "builder"))
    token = bound_token(kube_cluster, "builder", "job-d")
    assert review(kube_cluster, token, [PROXY_URL])["authenticated"] is True
    kube_cluster.kubectl("delete", "pod", "job-d", "-n", namespace, "--wait=true")
    # The API server caches successful token authentications for 10 seconds.

    def refused() -> dict[str, Any] | None:
        answer = review(kube_cluster, token, [PROXY_URL])
        return answer if answer.get("authenticated") is not True else None

    status = settled(refused, 30, "the deleted pod's token no longer authenticated")
    assert status.get("authenticated") is not True
    assert "invalidated" in status.get("error", "")
