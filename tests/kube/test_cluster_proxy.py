"""`connectors proxy` on a real kube-apiserver: a pod's own ServiceAccount token is the only
credential it holds; TokenReview and SubjectAccessReview decide; real pip and twine go
through against a real pypiserver."""

from __future__ import annotations

import base64
import hashlib
import json
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import pytest

from connectors.api import addresses, manifests
from connectors.api.resources import Connector
from connectors.auth import audiences
from connectors.classes.builtin import builtin_classes
from connectors.rendering import render
from connectors.standalone import localregistry
from connectors.standalone.localregistry import LocalRegistry
from tests.support import clients, leaks, wire
from tests.support.components import DEPLOY, ComponentProcess
from tests.support.standalone import connector_manifest, secret_manifest
from tests.support.testcluster import ISSUER, TestCluster
from tests.support.waiting import holds, settled
from tests.support.wheels import make_wheel

NS = "proxy-demo"
OTHER_NS = "proxy-other"
NAME = "pypi-connector"
ACCOUNTS = ("builder", "reader", "nobody")


@dataclass
class Setup:
    cluster: TestCluster
    proxy: ComponentProcess
    registry: LocalRegistry
    port: int
    metrics_port: int
    workdir: Path

    def base(self, namespace: str = NS, name: str = NAME) -> str:
        return f"http://127.0.0.1:{self.port}{addresses.path_form(namespace, name)}"

    def token(
        self, account: str, *, namespace: str = NS, name: str = NAME, pod: str = "",
        account_namespace: str = NS,
    ) -> str:  # fmt: skip
        return self.cluster.kubectl(
            "create", "token", account, "-n", account_namespace, "--duration=30m",
            f"--audience={ISSUER}", f"--audience={addresses.cluster_url(namespace, name)}",
            "--bound-object-kind=Pod", f"--bound-object-name={pod or 'pod-' + account}",
        ).stdout.strip()  # fmt: skip

    def client_files(self, token: str, into: Path) -> Path:
        (connector,) = [
            r for r in manifests.parse_text(
                connector_manifest(NAME, self.registry.url), source="t", namespace=NS
            ) if isinstance(r, Connector)
        ]  # fmt: skip
        cls = next(c for c in builtin_classes() if c.name == "pypi")
        context = render.RenderContext(proxy_url=self.base(), token=token)
        into.mkdir(parents=True, exist_ok=True)
        for configuration in ("pipconf", "pypirc"):
            for filename, text in render.render_configuration(
                connector, cls, configuration, context
            ).items():
                (into / filename).write_text(text)
        return into


def pod(name: str, account: str, namespace: str = NS) -> str:
    return json.dumps({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": namespace},
        "spec": {"serviceAccountName": account, "containers": [{"name": "c", "image": "python:3"}]},
    })  # fmt: skip


def wait_ready(url: str, timeout: float = 30) -> None:
    def ready() -> bool:
        with urllib.request.urlopen(url + "/readyz", timeout=2) as reply:
            return bool(reply.status == 200)

    settled(ready, timeout, "the proxy becoming ready")


@pytest.fixture(scope="module")
def setup(
    kube_cluster: TestCluster,
    pypi_registry: LocalRegistry,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Setup]:
    cluster = kube_cluster
    for namespace in (NS, OTHER_NS):
        cluster.kubectl("create", "namespace", namespace, check=False)
        cluster.kubectl(
            "apply", "-n", namespace, "-f", "-",
            stdin="\n---\n".join([
                secret_manifest("registry-secret", pypi_registry.username, pypi_registry.password),
                connector_manifest(NAME, pypi_registry.url),
            ]),
        )  # fmt: skip
    cluster.kubectl("apply", "-f", str(DEPLOY / "workload-roles.yaml"))
    for account in ACCOUNTS:
        cluster.kubectl("create", "serviceaccount", account, "-n", NS)
        cluster.kubectl("apply", "-f", "-", stdin=pod(f"pod-{account}", account))
    cluster.kubectl(
        "create",
        "rolebinding",
        "builder-uploads",
        "-n",
        NS,
        "--clusterrole=connectors-upload",
        f"--serviceaccount={NS}:builder",
    )
    cluster.kubectl(
        "create",
        "rolebinding",
        "reader-downloads",
        "-n",
        NS,
        "--clusterrole=connectors-download",
        f"--serviceaccount={NS}:reader",
    )
    port, metrics_port = localregistry.free_port(), localregistry.free_port()
    workdir = tmp_path_factory.mktemp("cluster-proxy")
    proxy = ComponentProcess(
        cluster, workdir, "proxy", "connectors-proxy", DEPLOY / "proxy" / "rbac.yaml",
        "--listen", f"127.0.0.1:{port}", "--metrics-listen", f"127.0.0.1:{metrics_port}",
        "--decision-ttl", "3", "--authorization", "rbac", "--status-page",
    ).start()  # fmt: skip
    wait_ready(f"http://127.0.0.1:{port}")
    yield Setup(cluster, proxy, pypi_registry, port, metrics_port, workdir)
    proxy.stop()
    needles = [pypi_registry.password.encode()]
    needles.append(base64.b64encode(f"{pypi_registry.username}:{pypi_registry.password}".encode()))
    assert leaks.find_leaks(needles, [("proxy log", proxy.log().encode()), *leaks.SEEN]) == []


def test_an_uploader_publishes_with_twine_and_installs_with_pip(setup: Setup, tmp_path: Path):
    token = setup.token("builder")
    files = setup.client_files(token, tmp_path / "client")
    wheel = make_wheel(tmp_path / "dist", "kube-proxied", "1.0.0")
    upload = clients.twine_upload(files / ".pypirc", wheel)
    assert upload.returncode == 0, clients.explain(upload)
    assert (setup.registry.packages / wheel.name).is_file()
    install = clients.pip_install(
        files / "pip.conf", "kube-proxied==1.0.0", target=tmp_path / "site"
    )
    assert install.returncode == 0, clients.explain(install)
    assert (tmp_path / "site" / "kube_proxied" / "__init__.py").is_file()
    assert token not in setup.proxy.log()


def test_a_downloader_installs_but_cannot_publish(setup: Setup, tmp_path: Path):
    make_wheel(setup.registry.packages, "for-readers", "2.0.0")
    files = setup.client_files(setup.token("reader"), tmp_path / "client")
    install = clients.pip_install(
        files / "pip.conf", "for-readers==2.0.0", target=tmp_path / "site"
    )
    assert install.returncode == 0, clients.explain(install)
    upload = clients.twine_upload(files / ".pypirc", make_wheel(tmp_path / "d", "sneaky", "1.0"))
    assert upload.returncode != 0
    assert "403" in upload.stdout + upload.stderr
    assert not (setup.registry.packages / "sneaky-1.0-py3-none-any.whl").exists()


def test_an_account_without_a_grant_is_forbidden(setup: Setup):
    reply = wire.request(
        "GET", setup.base() + "/simple/", headers=wire.basic(setup.token("nobody"))
    )
    assert reply.status == 403
    assert f"system:serviceaccount:{NS}:nobody may not download" in reply.body.decode()


@pytest.mark.parametrize("how", ["basic", "bearer"])
def test_the_token_works_as_basic_password_or_bearer(setup: Setup, how: str):
    token = setup.token("reader")
    headers = (
        wire.basic(token, "whoever") if how == "basic" else {"Authorization": f"Bearer {token}"}
    )
    assert wire.request("GET", setup.base() + "/simple/", headers=headers).status == 200


def test_tokens_for_another_audience_or_connector_are_refused(setup: Setup):
    # Minted for the same-named connector in another namespace: a different audience.
    foreign = setup.token("builder", namespace=OTHER_NS)
    reply = wire.request("GET", setup.base() + "/simple/", headers=wire.basic(foreign))
    assert reply.status == 401 and reply.header("WWW-Authenticate") == 'Basic realm="connectors"'
    # And a token for this connector is worthless at the other one.
    own = setup.token("builder")
    reply = wire.request("GET", setup.base(OTHER_NS) + "/simple/", headers=wire.basic(own))
    assert reply.status == 401


def test_an_expired_token_is_refused(setup: Setup):
    # Signed with the cluster's real service-account key, but expired a minute ago.
    now = int(time.time())
    claims = {
        "iss": ISSUER, "aud": [addresses.cluster_url(NS, NAME)],
        "sub": f"system:serviceaccount:{NS}:builder",
        "iat": now - 3600, "nbf": now - 3600, "exp": now - 60,
        "kubernetes.io": {"namespace": NS, "serviceaccount": {"name": "builder", "uid": "x"}},
    }  # fmt: skip
    key = (setup.cluster.pki / "sa.key").read_bytes()
    expired = jwt.encode(claims, key, algorithm="RS256")
    reply = wire.request("GET", setup.base() + "/simple/", headers=wire.basic(expired))
    assert reply.status == 401


def test_a_token_bound_to_a_deleted_pod_is_refused(setup: Setup):
    setup.cluster.kubectl("apply", "-f", "-", stdin=pod("short-job", "builder"))
    token = setup.token("builder", pod="short-job")
    assert wire.request("GET", setup.base() + "/simple/", headers=wire.basic(token)).status == 200
    setup.cluster.kubectl("delete", "pod", "short-job", "-n", NS, "--wait=true")

    def refused() -> int | None:
        status = wire.request("GET", setup.base() + "/simple/", headers=wire.basic(token)).status
        return None if status == 200 else status

    # The proxy's 3 s cache plus the API server's 10 s; anything but 200 then 401 fails.
    assert settled(refused, 40, "the deleted pod's token being refused") == 401


@pytest.mark.parametrize(
    "host",
    [
        "c-pypi-connector.proxy-demo.svc.cluster.local",
        "c-pypi-connector.proxy-demo.svc.cluster.local:80",
        "c-pypi-connector.proxy-demo.svc",
        "c-pypi-connector.proxy-demo",
    ],
)
def test_the_services_host_names_reach_the_right_connector(setup: Setup, host: str):
    make_wheel(setup.registry.packages, "by-host", "1.0.0")
    reply = wire.request(
        "GET", f"http://127.0.0.1:{setup.port}/simple/by-host/",
        headers={"Host": host, **wire.basic(setup.token("reader"))},
    )  # fmt: skip
    assert reply.status == 200
    # Links point back at the host the client used, so downloads stay on the proxy.
    assert f'href="http://{host}/packages/by_host-1.0.0-py3-none-any.whl' in reply.body.decode()


def test_a_rotated_secret_is_used_for_the_next_request(setup: Setup, tmp_path: Path):
    port = localregistry.free_port()
    with localregistry.pypiserver(tmp_path / "old", port=port, password="old-password-1") as old:
        setup.cluster.kubectl("apply", "-n", NS, "-f", "-", stdin="\n---\n".join([
            secret_manifest("rotating-secret", old.username, "old-password-1"),
            connector_manifest("rotating", old.url, secret="rotating-secret"),
        ]))  # fmt: skip
        token = setup.token("builder", name="rotating")
        url = setup.base(NS, "rotating") + "/simple/"
        settled(
            lambda: wire.request("GET", url, headers=wire.basic(token)).status == 200,
            10,
            "the proxy picking up the new connector",
        )
    with localregistry.pypiserver(tmp_path / "new", port=port, password="new-password-2") as new:
        # The Secret still holds the old password, which the new registry refuses.
        assert wire.request("GET", url, headers=wire.basic(token)).status in (403, 502)
        setup.cluster.kubectl(
            "apply",
            "-n",
            NS,
            "-f",
            "-",
            stdin=secret_manifest("rotating-secret", new.username, "new-password-2"),
        )
        settled(
            lambda: wire.request("GET", url, headers=wire.basic(token)).status == 200,
            10,
            "the rotated Secret used",
        )
    assert "old-password-1" not in setup.proxy.log() and "new-password-2" not in setup.proxy.log()


def test_each_request_leaves_an_audit_line_without_the_token(setup: Setup):
    token = setup.token("reader")
    reply = wire.request("GET", setup.base() + "/simple/audited/", headers=wire.basic(token))
    marker = "connectors.audit: "

    def audited() -> dict[str, Any] | None:
        lines = [json.loads(line.split(marker, 1)[1])
                 for line in setup.proxy.log().splitlines() if marker in line]  # fmt: skip
        return next((x for x in reversed(lines) if x["path"].endswith("/simple/audited/")), None)

    line = settled(audited, 10, "the request's audit line")
    assert line == {
        "connector": NAME, "namespace": NS, "identity": f"system:serviceaccount:{NS}:reader",
        "pod": "pod-reader", "method": "GET",
        "token": hashlib.sha256(token.encode()).hexdigest()[:12], "client": "127.0.0.1",
        "path": f"/namespaces/{NS}/connectors/{NAME}/simple/audited/",
        "status": reply.status, "bytes_in": 0, "bytes_out": len(reply.body), "cache": "",
        "duration_ms": line["duration_ms"], "request": line["request"], "redirect": "",
        "error": line["error"],
    }  # fmt: skip
    assert len(line["request"]) == 12
    assert line["status"] in (200, 404)
    assert token not in setup.proxy.log()


def test_metrics_count_requests_and_decisions_on_their_own_port(setup: Setup):
    token = setup.token("reader")
    for _ in range(3):
        wire.request("GET", setup.base() + "/simple/", headers=wire.basic(token))
    wire.request("GET", setup.base() + "/simple/")
    with urllib.request.urlopen(f"http://127.0.0.1:{setup.metrics_port}/metrics", timeout=5) as r:
        text = r.read().decode()
    connector = f'connector="{NS}/{NAME}"'
    counted = [
        line for line in text.splitlines()
        if line.startswith("connectors_requests_total{") and connector in line
    ]  # fmt: skip
    assert any('code="200"' in line for line in counted)
    assert f'connectors_auth_decisions_total{{{connector},decision="no_token"}}' in text
    hits = next(
        line
        for line in text.splitlines()
        if line.startswith('connectors_auth_cache_total{result="hit"}')
    )
    assert float(hits.split()[-1]) >= 2
    # Metrics are not served to clients on the proxy port.
    assert wire.request("GET", f"http://127.0.0.1:{setup.port}/metrics").status == 404


def test_with_the_api_server_down_cached_identities_hold_and_new_ones_get_503(setup: Setup):
    cached = setup.token("reader")
    fresh = setup.token("builder")
    url = setup.base() + "/simple/"
    assert wire.request("GET", url, headers=wire.basic(cached)).status == 200
    setup.cluster.stop_apiserver()
    try:
        assert wire.request("GET", url, headers=wire.basic(cached)).status == 200
        reply = wire.request("GET", url, headers=wire.basic(fresh))
        assert reply.status == 503
        assert "cannot check the token now" in reply.body.decode()
        assert wire.request("GET", url, headers=wire.basic("garbage")).status in (401, 503)
        assert wire.request("GET", url).status == 401

        # Past the decision cache's 3 s, the remembered decision fails closed too.
        def failing_closed() -> bool:
            status = wire.request("GET", url, headers=wire.basic(cached)).status
            if status not in (200, 503):  # still remembered, or refused for want of a review
                raise RuntimeError(f"the cached token got {status}")
            return status == 503

        settled(failing_closed, 10, "the cached decision expiring while the API server is down")
    finally:
        setup.cluster.start_apiserver()
    settled(
        lambda: wire.request("GET", url, headers=wire.basic(fresh)).status == 200,
        30,
        "the proxy recovering with the API server",
    )


def test_a_secret_deleted_and_recreated_is_503_then_200_and_nothing_else(setup: Setup):
    token = setup.token("reader")
    url = setup.base() + "/simple/"
    assert wire.request("GET", url, headers=wire.basic(token)).status == 200
    setup.cluster.kubectl("delete", "secret", "registry-secret", "-n", NS)
    seen: list[int] = []

    def answered(want: int) -> bool:
        seen.append(wire.request("GET", url, headers=wire.basic(token)).status)
        return seen[-1] == want

    settled(lambda: answered(503), 15, "the deleted Secret going out of use")
    assert b"registry-secret not found" in wire.request("GET", url, headers=wire.basic(token)).body
    setup.cluster.kubectl("apply", "-n", NS, "-f", "-", stdin=secret_manifest(
        "registry-secret", setup.registry.username, setup.registry.password))  # fmt: skip
    settled(lambda: answered(200), 15, "the recreated Secret being used")
    assert set(seen) <= {200, 503}  # never a 401 or a 5xx from a half-known Secret


def test_a_status_naming_another_audience_cannot_open_the_proxy_to_other_tokens(setup: Setup):
    # Whoever can write a Connector's status cannot make the proxy accept tokens minted
    # for the API server (every Pod's default token).
    status = {"status": {"proxy": {"httpAddress": {"url": ISSUER, "audience": ISSUER}}}}
    setup.cluster.kubectl(
        "patch", "connector", NAME, "-n", NS, "--subresource=status", "--type=merge",
        "-p", json.dumps(status),
    )  # fmt: skip
    api_token = setup.cluster.kubectl(
        "create", "token", "builder", "-n", NS, f"--audience={ISSUER}"
    ).stdout.strip()
    # Asked again and again for longer than the watch takes to deliver the new status, so
    # a proxy that read its audience from the status would be caught letting one through.
    holds(
        lambda: (
            wire.request("GET", setup.base() + "/simple/", headers=wire.basic(api_token)).status
        ),
        401,
        3,
    )
    assert (
        wire.request(
            "GET", setup.base() + "/simple/", headers=wire.basic(setup.token("builder"))
        ).status
        == 200
    )


def test_the_workload_audience_opens_every_connector_only_in_a_pod_bound_token(setup: Setup):
    # What kubelet mints for the CSI driver: one audience for every connector, the
    # ServiceAccount's grants still deciding, and the token dying with its Pod.
    def workload_token(*bound: str) -> str:
        return setup.cluster.kubectl(
            "create", "token", "reader", "-n", NS, f"--audience={audiences.WORKLOAD}", *bound
        ).stdout.strip()  # fmt: skip

    bound = workload_token("--bound-object-kind=Pod", "--bound-object-name=pod-reader")
    assert wire.request("GET", setup.base() + "/simple/", headers=wire.basic(bound)).status == 200
    # The same token at the same-named connector of another namespace: reader has no grant.
    elsewhere = wire.request("GET", setup.base(OTHER_NS) + "/simple/", headers=wire.basic(bound))
    assert elsewhere.status == 403
    unbound = wire.request(
        "GET", setup.base() + "/simple/", headers=wire.basic(workload_token())
    )  # fmt: skip
    assert unbound.status == 401
    assert "must be bound to a Pod" in unbound.body.decode()


@pytest.fixture(scope="module")
def namespace_mode(setup: Setup) -> Iterator[Setup]:
    """A second proxy on the same cluster, in the default authorization mode."""
    port, metrics_port = localregistry.free_port(), localregistry.free_port()
    proxy = ComponentProcess(
        setup.cluster, setup.workdir, "proxy", "connectors-proxy", DEPLOY / "proxy" / "rbac.yaml",
        "--listen", f"127.0.0.1:{port}", "--metrics-listen", f"127.0.0.1:{metrics_port}",
        "--decision-ttl", "3",
    ).start()  # fmt: skip
    wait_ready(f"http://127.0.0.1:{port}")
    yield Setup(setup.cluster, proxy, setup.registry, port, metrics_port, setup.workdir)
    proxy.stop()


def test_by_default_the_connectors_own_namespace_installs_and_publishes_without_a_grant(
    namespace_mode: Setup, tmp_path: Path
):
    # The quick start's Jobs run as their namespace's `default` account and bind no role.
    files = namespace_mode.client_files(namespace_mode.token("nobody"), tmp_path / "client")
    wheel = make_wheel(tmp_path / "dist", "own-namespace", "1.0.0")
    upload = clients.twine_upload(files / ".pypirc", wheel)
    assert upload.returncode == 0, clients.explain(upload)
    install = clients.pip_install(
        files / "pip.conf", "own-namespace==1.0.0", target=tmp_path / "site"
    )
    assert install.returncode == 0, clients.explain(install)


def test_by_default_another_namespace_needs_the_grant_rbac_gives(namespace_mode: Setup):
    cluster = namespace_mode.cluster
    cluster.kubectl("create", "serviceaccount", "visitor", "-n", OTHER_NS)
    cluster.kubectl("apply", "-f", "-", stdin=pod("pod-visitor", "visitor", OTHER_NS))
    token = namespace_mode.token("visitor", account_namespace=OTHER_NS)
    url = namespace_mode.base() + "/simple/"
    refused = wire.request("GET", url, headers=wire.basic(token))
    assert refused.status == 403
    assert f"system:serviceaccount:{OTHER_NS}:visitor may not download" in refused.body.decode()
    cluster.kubectl(
        "create", "rolebinding", "visitor-downloads", "-n", NS,
        "--clusterrole=connectors-download", f"--serviceaccount={OTHER_NS}:visitor",
    )  # fmt: skip

    def decided() -> int | None:
        status = wire.request("GET", url, headers=wire.basic(token)).status
        return None if status == 403 else status

    # Past the proxy's 3 s decision cache; anything but 403 then 200 fails.
    assert settled(decided, 20, "the rolebinding taking effect") == 200
    upload = wire.request("POST", namespace_mode.base() + "/", headers=wire.basic(token))
    assert upload.status == 403


def test_by_default_a_kube_public_connector_is_cluster_level_for_downloads(
    namespace_mode: Setup,
):
    # Alauda's scope rule: Connectors in kube-public are shared by the whole cluster.
    cluster = namespace_mode.cluster
    cluster.kubectl(
        "apply", "-n", "kube-public", "-f", "-",
        stdin="\n---\n".join([
            secret_manifest(
                "registry-secret", namespace_mode.registry.username,
                namespace_mode.registry.password,
            ),
            connector_manifest(NAME, namespace_mode.registry.url),
        ]),
    )  # fmt: skip
    token = namespace_mode.token("nobody", namespace="kube-public")  # no grant anywhere
    url = namespace_mode.base("kube-public") + "/simple/"
    assert settled(
        lambda: wire.request("GET", url, headers=wire.basic(token)).status == 200,
        20, "a download through the cluster-level connector",
    )  # fmt: skip
    upload = wire.request(
        "POST", namespace_mode.base("kube-public") + "/", headers=wire.basic(token)
    )
    assert upload.status == 403  # publishing to a cluster-shared registry needs the grant
    cluster.kubectl("delete", "connector", NAME, "-n", "kube-public", "--wait=false")


def test_the_status_page_is_served_only_when_asked_for(setup: Setup, namespace_mode: Setup):
    token = setup.token("reader")
    wire.request("GET", setup.base() + "/simple/seen-on-the-page/", headers=wire.basic(token))
    page = wire.request("GET", f"http://127.0.0.1:{setup.metrics_port}/")
    assert page.status == 200
    assert f"{NS}/{NAME}".encode() in page.body and b"seen-on-the-page" in page.body
    assert token.encode() not in page.body
    # A proxy started without --status-page shows nobody its tenants' connectors.
    assert wire.request("GET", f"http://127.0.0.1:{namespace_mode.metrics_port}/").status == 404
