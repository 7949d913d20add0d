"""What one request costs the proxy: one keep-alive client, one index page, interleaved
rounds, the proxy's CPU time per request beside the latency of direct, connectors and nginx.

    python -m bench.request_cost                  # 3 rounds of 8 s per path
    python -m bench.request_cost --quick          # what CI runs to show it still works

It uses the throughput setup of `bench.proxy_speed` (nginx static upstream with basic auth,
the 100-link page, a tuned credential-injecting nginx, `connectors serve`) and wrk with one
connection. CPU per request is the `connectors serve` process's user and system time over
the requests wrk completed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

import psutil

from bench import proxy_speed

PAGE = "/simple/pkg/"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=8)
    args = parser.parse_args(argv)
    rounds, seconds = (1, 1) if args.quick else (args.rounds, args.seconds)
    sizes = proxy_speed.Sizes(1, seconds, (1,), 1, 1, 1, 1)
    p50: dict[str, list[float]] = {}
    cpu_us: list[float] = []
    with (
        tempfile.TemporaryDirectory(prefix="request-cost-") as tmp,
        proxy_speed.throughput_paths(Path(tmp), sizes) as targets,
    ):
        for _ in range(rounds):
            for name, target in targets.items():
                processes = target.process()
                before = sum(sum(p.cpu_times()[:2]) for p in processes)
                figures = proxy_speed.index_pages(target, PAGE, 1, seconds)
                p50.setdefault(name, []).append(figures["p50_ms"] * 1000)
                if name == "connectors":
                    spent = sum(sum(p.cpu_times()[:2]) for p in processes) - before
                    cpu_us.append(spent / (figures["rps"] * seconds) * 1e6)
    medians = {name: round(statistics.median(v), 1) for name, v in p50.items()}
    result: dict[str, object] = {
        "p50_us": medians,
        "connectors_cpu_us_per_request": round(statistics.median(cpu_us), 1),
        "connectors_over_nginx": round(medians["connectors"] / medians["nginx"], 2),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    psutil.Process()  # fail early where psutil cannot read processes
    sys.exit(main())
