"""What a token decision costs the proxy in Kubernetes mode: TokenReview plus
SubjectAccessReview on a real API server (a cache miss), against a cached decision.

    python -m bench.kube_auth            # 200 fresh tokens, 20,000 cached checks
    python -m bench.kube_auth --quick

Starts its own control plane; the proxy's ServiceAccount and RBAC are the chart's
(deploy/proxy/rbac.yaml), the workload's grant is `connectors-download`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from connectors.api import addresses
from connectors.auth.kubeauth import KubeAuthenticator
from connectors.kube import config as kube_config
from connectors.kube.client import KubeClient
from tests.support import testcluster
from tests.support.components import DEPLOY, account_kubeconfig

NS, NAME = "bench-auth", "pypi"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    fresh, cached = (20, 2000) if args.quick else (200, 20000)
    with (
        tempfile.TemporaryDirectory(prefix="connectors-auth-") as tmp,
        testcluster.running(Path(tmp) / "cluster") as cluster,
    ):
        figures = measure(cluster, fresh, cached)
    print(json.dumps(figures, indent=1))
    return 0


def measure(cluster: testcluster.TestCluster, fresh: int, cached: int) -> dict[str, float]:
    cluster.create_namespace(NS)
    cluster.kubectl("apply", "-f", str(DEPLOY / "workload-roles.yaml"))
    cluster.kubectl("create", "serviceaccount", "reader", "-n", NS)
    grant = ("--clusterrole=connectors-download", f"--serviceaccount={NS}:reader")
    cluster.kubectl("create", "rolebinding", "reader", "-n", NS, *grant)
    audience = addresses.cluster_url(NS, NAME)
    mint = ("create", "token", "reader", "-n", NS, f"--audience={audience}")
    tokens = [cluster.kubectl(*mint).stdout.strip() for _ in range(fresh)]
    proxy_config = kube_config.load(
        account_kubeconfig(cluster, "connectors-proxy", DEPLOY / "proxy" / "rbac.yaml")
    )

    async def run() -> dict[str, float]:
        async with KubeClient(proxy_config) as kube:
            authenticator = KubeAuthenticator(kube, ttl_seconds=300)
            misses = []
            for token in tokens:
                started = time.perf_counter()
                await authenticator.authorize(token, audience=audience, namespace=NS,
                                              name=NAME, upload=False)  # fmt: skip
                misses.append(time.perf_counter() - started)
            started = time.perf_counter()
            for _ in range(cached):
                await authenticator.authorize(tokens[0], audience=audience, namespace=NS,
                                              name=NAME, upload=False)  # fmt: skip
            hit = (time.perf_counter() - started) / cached
        misses.sort()
        return {
            "miss_p50_ms": round(statistics.median(misses) * 1000, 2),
            "miss_p99_ms": round(misses[int(len(misses) * 0.99) - 1] * 1000, 2),
            "hit_us": round(hit * 1e6, 2),
            "fresh_tokens": fresh,
            "cached_checks": cached,
        }

    return asyncio.run(run())


if __name__ == "__main__":
    sys.exit(main())
