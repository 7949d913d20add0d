"""How long N Connectors take to become Ready, and how many API requests each costs.

Starts its own control plane (etcd, kube-apiserver, kube-controller-manager), one real
pypiserver with a password, and `connectors operator` with its least-privilege
ServiceAccount; applies one Secret and N Connectors at once; waits until every one is
Ready. API requests are counted by the API server itself: its priority-and-fairness
metrics put every request of a ServiceAccount outside kube-system (the operator's) under
the flow schema `service-accounts`, and the benchmark's own admin requests elsewhere.

    python -m bench.operator_scale            # 1,000 Connectors
    python -m bench.operator_scale --quick    # 20, to prove the benchmark still runs
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import ssl
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from connectors.standalone import localregistry
from tests.support import testcluster
from tests.support.components import OperatorProcess
from tests.support.standalone import connector_manifest, secret_manifest

NAMESPACE = "bench-scale"
_REQUESTS = re.compile(
    r'^apiserver_flowcontrol_dispatched_requests_total\{[^}]*flow_schema="service-accounts"'
    r"[^}]*\} (\S+)$",
    re.M,
)


def api_requests(cluster: testcluster.TestCluster) -> int:
    """Requests from ServiceAccounts (here: only the operator's) dispatched so far."""
    context = ssl.create_default_context(cafile=str(cluster.pki / "ca.crt"))
    context.load_cert_chain(cluster.pki / "admin.crt", cluster.pki / "admin.key")
    with urllib.request.urlopen(cluster.server + "/metrics", context=context, timeout=30) as r:
        text = r.read().decode()
    return int(sum(float(v) for v in _REQUESTS.findall(text)))


def ready_count(cluster: testcluster.TestCluster) -> int:
    listing = json.loads(cluster.kubectl("get", "connectors", "-n", NAMESPACE, "-o", "json").stdout)
    return sum(
        1
        for item in listing["items"]
        for c in (item.get("status") or {}).get("conditions") or []
        if c["type"] == "Ready" and c["status"] == "True"
    )


def run(count: int, workdir: Path, hash_scheme: str) -> dict[str, float]:
    with testcluster.running(workdir / "cluster") as cluster:
        cluster.kubectl("apply", "--server-side", "-f", "deploy/crds/connectors.alauda.io.yaml")
        cluster.kubectl("wait", "--for=condition=Established", "crd", "--all")
        cluster.kubectl("create", "namespace", NAMESPACE)
        with localregistry.pypiserver(workdir / "registry", hash_scheme=hash_scheme) as registry:
            operator = OperatorProcess(cluster, workdir, "--reprobe-interval", "300").start()
            try:
                return _measure(cluster, registry, count)
            finally:
                operator.stop()


def _measure(
    cluster: testcluster.TestCluster, registry: localregistry.LocalRegistry, count: int
) -> dict[str, float]:
    time.sleep(3)  # let the operator take its lease and finish its first lists
    documents = [secret_manifest("registry-secret", registry.username, registry.password)]
    documents += [connector_manifest(f"c{n:04d}", registry.url) for n in range(count)]
    manifest = "\n---\n".join(documents)
    before = api_requests(cluster)
    started = time.monotonic()
    cluster.kubectl("apply", "--server-side", "-n", NAMESPACE, "-f", "-", stdin=manifest)
    applied = time.monotonic() - started
    while (ready := ready_count(cluster)) < count:
        time.sleep(0.5)
    elapsed = time.monotonic() - started
    operator_requests = api_requests(cluster) - before
    return {
        "connectors": count,
        "ready": ready,
        "apply_seconds": round(applied, 2),
        "all_ready_seconds": round(elapsed, 2),
        "connectors_per_second": round(count / elapsed, 1),
        "api_requests_per_connector": round(operator_requests / count, 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--quick", action="store_true", help="20 connectors")
    parser.add_argument(
        "--registry-hash",
        default="sha256_crypt",
        choices=["sha256_crypt", "apr_md5_crypt"],
        help="the registry's htpasswd scheme: its cost per credential check bounds the run",
    )
    args = parser.parse_args(argv)
    count = 20 if args.quick else args.count
    with tempfile.TemporaryDirectory(prefix="connectors-bench-") as tmp:
        result = run(count, Path(tmp), args.registry_hash)
    print(
        f"machine: {platform.machine()}, {platform.python_implementation()} "
        f"{platform.python_version()}; registry htpasswd scheme {args.registry_hash}"
    )
    width = max(len(k) for k in result)
    for key, value in result.items():
        print(f"{key.ljust(width)}  {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
