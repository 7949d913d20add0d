"""The proxy against the direct path and against a tuned nginx, side by side in one run.

    python -m bench.proxy_speed            # the full run (several minutes)
    python -m bench.proxy_speed --quick    # small sizes, to prove it still runs

Starts everything on loopback: nginx serving static files behind basic auth (throughput
upstream), pypiserver (client workloads), nginx as a credential-injecting proxy
(bench/nginx-front.conf), and `connectors serve`. Prints a table, writes the figures to
bench/results/ and a chart to docs/benchmarks.png.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from bench import peers
from connectors.auth import tokens
from connectors.auth.authenticator import LocalAuthenticator
from connectors.auth.keys import KeyRing
from connectors.standalone import localregistry
from connectors.standalone.demo import client_environment
from tests.support.wheels import make_wheel

ROOT = Path(__file__).parents[1]
PATHS = ("direct", "connectors", "nginx")


@dataclass
class Sizes:
    download_mib: int
    wrk_seconds: int
    concurrency: tuple[int, ...]
    wheels: int
    upload_mib: int
    repeats: int
    pip_rounds: int


FULL = Sizes(1024, 10, (1, 16, 128), 50, 200, 3, 9)
QUICK = Sizes(32, 1, (1, 16), 5, 8, 1, 1)


@dataclass
class Target:
    """How a client reaches the files through one path."""

    base: str
    headers: dict[str, str]
    process: Callable[[], list[psutil.Process]] = list


@dataclass
class Results:
    rows: dict[str, dict[str, float]] = field(default_factory=dict)

    def put(self, workload: str, path: str, value: float) -> None:
        self.rows.setdefault(workload, {})[path] = round(value, 3)


class PeakRss:
    """Samples the summed RSS of some processes every 50 ms while in use."""

    def __init__(self, processes: list[psutil.Process]) -> None:
        self.processes = processes
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(psutil.Error):
                self.peak = max(self.peak, sum(p.memory_info().rss for p in self.processes))
            time.sleep(0.05)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def nginx_processes(pid_file: Path) -> Callable[[], list[psutil.Process]]:
    def find() -> list[psutil.Process]:
        master = psutil.Process(int(pid_file.read_text()))
        return [master, *master.children()]

    return find


# --- workloads ----------------------------------------------------------------------------


def download_mb_per_s(target: Target, path: str, sizes: Sizes) -> tuple[float, int]:
    speeds, peak = [], 0
    for _ in range(sizes.repeats):
        command = ["curl", "-s", "-o", "/dev/null", "-w", "%{speed_download}"]
        for key, value in target.headers.items():
            command += ["-H", f"{key}: {value}"]
        with PeakRss(target.process()) as rss:
            out = subprocess.run([*command, target.base + path], capture_output=True, text=True,
                                 check=True, timeout=600).stdout  # fmt: skip
        speeds.append(float(out) / 1e6)
        peak = max(peak, rss.peak)
    return statistics.median(speeds), peak


def index_pages(target: Target, path: str, connections: int, seconds: int) -> dict[str, float]:
    command = ["wrk", f"-t{min(2, connections)}", f"-c{connections}", f"-d{seconds}s", "--latency"]
    for key, value in target.headers.items():
        command += ["-H", f"{key}: {value}"]
    out = subprocess.run([*command, target.base + path], capture_output=True, text=True,
                         check=True, timeout=seconds + 60).stdout  # fmt: skip
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise RuntimeError(f"wrk saw {errors.group(1)} failed responses:\n{out}")
    return {"rps": rps, "p50_ms": _latency(out, "50%"), "p99_ms": _latency(out, "99%")}


def _latency(out: str, percentile: str) -> float:
    value, unit = re.search(rf"^\s+{percentile}\s+([\d.]+)(us|ms|s)\s*$", out, re.M).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def pip_install_seconds(
    indexes: dict[str, str], names: list[str], workdir: Path, repeats: int
) -> dict[str, float]:
    """Median wall time per path. The paths take turns within each round, so a machine
    that speeds up or slows down during the run (a shared VM does) affects all alike."""
    times: dict[str, list[float]] = {path: [] for path in indexes}
    for n in range(repeats):
        for path, index_url in indexes.items():
            target = workdir / f"site-{path}-{n}"
            started = time.monotonic()
            subprocess.run(
                [sys.executable, "-m", "pip", "install", "--no-deps", "--no-cache-dir",
                 "--disable-pip-version-check", "--quiet", "--target", str(target),
                 "--index-url", index_url, *names],
                env=client_environment(), check=True, timeout=600,
            )  # fmt: skip
            times[path].append(time.monotonic() - started)
            shutil.rmtree(target)
    return {path: statistics.median(values) for path, values in times.items()}


def upload_seconds(
    url: str, user: str, password: str, wheel: Path, target: Target
) -> tuple[float, int]:
    # Credentials go through twine's environment: on argv, a password that begins with "-"
    # parses as an option, and any user of the machine can read it with ps.
    credentials = {"TWINE_USERNAME": user, "TWINE_PASSWORD": password}
    started = time.monotonic()
    with PeakRss(target.process()) as rss:
        subprocess.run(
            [sys.executable, "-m", "twine", "upload", "--non-interactive", "--disable-progress-bar",
             "--repository-url", url, str(wheel)],
            env={**client_environment(), **credentials}, check=True, timeout=600,
            capture_output=True,
        )  # fmt: skip
    return time.monotonic() - started, rss.peak


def token_checks(workdir: Path, rounds: int) -> dict[str, float]:
    ring = KeyRing.open(workdir / "keys")
    audience = "http://127.0.0.1:1/namespaces/default/connectors/bench"
    fresh = [tokens.issue(ring, audience=audience, subject="bench") for _ in range(rounds)]
    authenticator = LocalAuthenticator(ring)

    async def measure() -> dict[str, float]:
        started = time.perf_counter()
        for token in fresh:
            await authenticator.authorize(token, audience=audience, namespace="default",
                                          name="bench", upload=False)  # fmt: skip
        miss = (time.perf_counter() - started) / rounds
        started = time.perf_counter()
        for _ in range(rounds):
            await authenticator.authorize(fresh[0], audience=audience, namespace="default",
                                          name="bench", upload=False)  # fmt: skip
        hit = (time.perf_counter() - started) / rounds
        return {"miss_us": miss * 1e6, "hit_us": hit * 1e6}

    return asyncio.run(measure())


# --- the run ------------------------------------------------------------------------------


@contextlib.contextmanager
def throughput_paths(workdir: Path, sizes: Sizes) -> Iterator[dict[str, Target]]:
    root = workdir / "files"
    (root / "files").mkdir(parents=True)
    (root / "simple" / "pkg").mkdir(parents=True)
    with (root / "files" / "big.bin").open("wb") as handle:
        block = os.urandom(1 << 20)
        for _ in range(sizes.download_mib):
            handle.write(block)
    links = "".join(
        f'<a href="../../files/p{n}-1.0-py3-none-any.whl#sha256={n:064x}" '
        f'data-requires-python="&gt;=3.8">p{n}-1.0.whl</a><br/>\n'
        for n in range(100)
    )
    (root / "simple" / "index.html").write_text('<a href="pkg/">pkg</a>\n')
    (root / "simple" / "pkg" / "index.html").write_text(f"<html><body>\n{links}</body></html>\n")
    with (
        peers.nginx_upstream(workdir / "upstream", root) as upstream,
        peers.nginx_front(workdir / "front", upstream, peers.USER, peers.PASSWORD) as front,
        peers.connectors_serve(workdir / "serve", upstream, peers.USER, peers.PASSWORD) as server,
    ):
        token = server.token("default", "bench")
        yield {
            "direct": Target(upstream, {"Authorization": peers.basic(peers.USER, peers.PASSWORD)}),
            "connectors": Target(
                server.connector_url("default", "bench"),
                {"Authorization": f"Bearer {token}"},
                lambda: [psutil.Process(server.pid)],
            ),
            "nginx": Target(front, {}, nginx_processes(workdir / "front" / "nginx.pid")),
        }


def run_throughput(workdir: Path, sizes: Sizes, results: Results) -> None:
    with throughput_paths(workdir / "throughput", sizes) as targets:
        for name, target in targets.items():
            speed, peak = download_mb_per_s(target, "/files/big.bin", sizes)
            results.put(f"download {sizes.download_mib} MiB, MB/s", name, speed)
            if name != "direct":
                results.put(
                    f"download {sizes.download_mib} MiB, peak proxy RSS MiB", name, peak / 2**20
                )
        for connections in sizes.concurrency:
            for name, target in targets.items():
                figures = index_pages(target, "/simple/pkg/", connections, sizes.wrk_seconds)
                results.put(f"index pages, {connections} clients, req/s", name, figures["rps"])
                results.put(f"index pages, {connections} clients, p50 ms", name, figures["p50_ms"])
                results.put(f"index pages, {connections} clients, p99 ms", name, figures["p99_ms"])


def run_clients(workdir: Path, sizes: Sizes, results: Results) -> None:
    registry_dir = workdir / "registry"
    with localregistry.pypiserver(registry_dir, hash_scheme="apr_md5_crypt") as registry:
        names = [f"bench-small-{n}" for n in range(sizes.wheels)]
        for name in names:
            make_wheel(registry.packages, name, "1.0.0", payload=os.urandom(20_000))
        credentials = (registry.url, registry.username, registry.password)
        with (
            peers.nginx_front(workdir / "front", *credentials) as front,
            peers.connectors_serve(workdir / "serve", *credentials) as server,
        ):
            token = server.token("default", "bench")
            host = registry.url.removeprefix("http://")
            proxied = server.connector_url("default", "bench")
            indexes = {
                "direct": f"http://{registry.username}:{registry.password}@{host}/simple/",
                "connectors": proxied.replace("http://", f"http://x:{token}@") + "/simple/",
                "nginx": front + "/simple/",
            }
            medians = pip_install_seconds(indexes, names, workdir, sizes.pip_rounds)
            for name, seconds in medians.items():
                results.put(f"pip install {sizes.wheels} wheels, s", name, seconds)
            serve_rss = Target("", {}, lambda: [psutil.Process(server.pid)])
            nginx_rss = Target("", {}, nginx_processes(workdir / "front" / "nginx.pid"))
            uploads = {
                "direct": (
                    registry.url + "/",
                    registry.username,
                    registry.password,
                    Target("", {}),
                ),
                "connectors": (proxied + "/", "x", token, serve_rss),
                "nginx": (front + "/", "x", "unused", nginx_rss),
            }
            seconds_by_path: dict[str, list[float]] = {name: [] for name in uploads}
            peak_by_path: dict[str, int] = dict.fromkeys(uploads, 0)
            for n in range(sizes.repeats):  # taking turns, as pip does
                for name, (url, user, password, target) in uploads.items():
                    payload = os.urandom(sizes.upload_mib << 20)
                    wheel = make_wheel(
                        workdir / "up" / f"{name}-{n}", f"bench-big-{name}-{n}", "1.0.0",
                        payload=payload,
                    )  # fmt: skip
                    seconds, peak = upload_seconds(url, user, password, wheel, target)
                    wheel.unlink()
                    seconds_by_path[name].append(seconds)
                    peak_by_path[name] = max(peak_by_path[name], peak)
            for name, values in seconds_by_path.items():
                results.put(
                    f"twine upload {sizes.upload_mib} MiB, s", name, statistics.median(values)
                )
                if name != "direct":
                    results.put(
                        f"twine upload {sizes.upload_mib} MiB, peak proxy RSS MiB",
                        name,
                        peak_by_path[name] / 2**20,
                    )


def print_table(results: Results) -> str:
    header = ("workload", "direct", "connectors", "nginx", "c/direct", "c/nginx")
    lines = ["{:<46} {:>10} {:>11} {:>10} {:>9} {:>8}".format(*header)]
    for workload, row in results.rows.items():
        cells = [f"{row[p]:>10.2f}" if p in row else f"{'-':>10}" for p in PATHS]
        c, d, n = row.get("connectors"), row.get("direct"), row.get("nginx")
        ratio_d = f"{c / d:>9.2f}" if c and d else f"{'-':>9}"
        ratio_n = f"{c / n:>8.2f}" if c and n else f"{'-':>8}"
        lines.append(f"{workload:<46} {cells[0]} {cells[1]:>11} {cells[2]} {ratio_d} {ratio_n}")
    return "\n".join(lines)


def chart(results: Results, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    rows = {k: v for k, v in results.rows.items() if "MB/s" in k or "req/s" in k}
    figure, axis = pyplot.subplots(figsize=(10, 4.5))
    width = 0.27
    for i, name in enumerate(PATHS):
        values = [row.get(name, 0) / max(row.values()) for row in rows.values()]
        axis.bar([x + (i - 1) * width for x in range(len(rows))], values, width, label=name)
    axis.set_xticks(range(len(rows)), [k.replace(", ", "\n") for k in rows], fontsize=8)
    axis.set_ylabel("relative to the fastest path")
    axis.set_title("connectors vs direct vs nginx (higher is better)")
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", choices=["throughput", "clients", "tokens"], default=None)
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    results = Results()
    with tempfile.TemporaryDirectory(prefix="connectors-speed-") as tmp:
        work = Path(tmp)
        if args.only in (None, "throughput"):
            run_throughput(work, sizes, results)
        if args.only in (None, "clients"):
            run_clients(work, sizes, results)
        if args.only in (None, "tokens"):
            checks = token_checks(work, 200 if args.quick else 2000)
            results.put("token check, cache miss, us", "connectors", checks["miss_us"])
            results.put("token check, cache hit, us", "connectors", checks["hit_us"])
    table = print_table(results)
    print(f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"{'quick' if args.quick else 'full'} run")  # fmt: skip
    print(table)
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / ("quick.json" if args.quick else "full.json")).write_text(
        json.dumps(results.rows, indent=1)
    )
    if not args.quick:
        chart(results, ROOT / "docs" / "benchmarks.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
