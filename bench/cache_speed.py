"""Installs from a remote registry: direct, through connectors, through nginx with its own
cache, and through devpi-server as a caching mirror, in one run.

    python -m bench.cache_speed                 # 30 wheels of 1.5 MB, 20 ms, 200 Mbit/s, 7 rounds
    python -m bench.cache_speed --quick         # what CI runs to show it still works
    python -m bench.cache_speed --rtt-ms 50 --mbit 100

The registry is pypiserver (htpasswd, apr_md5_crypt) behind `bench.relay`, which gives it
the round trip and bandwidth of a remote one. Every path reaches it through that relay:
- direct: pip with the registry's credentials in its index URL;
- connectors: `connectors serve` (its defaults: cache on, 2 GiB), pip with a token;
- nginx: a credential-injecting nginx whose `proxy_cache` keeps files (/packages/) for a
  day and fetches every index page, as connectors does (bench/nginx-cache.conf);
- devpi: devpi-server with a mirror index of the registry (its defaults: files kept,
  index pages reused for 30 minutes).

Each round, the paths take turns in a rotating order; each path installs twice in a row
into fresh targets with `pip install --no-deps --no-cache-dir`: first with its cache
emptied (connectors: `connectors cache clear`; nginx: a new cache directory; devpi: a new
mirror index), then again. Medians over the rounds are printed and written to
bench/results/cache.json, and a chart to docs/benchmarks-cache.png.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from bench import peers
from connectors.standalone import localregistry
from connectors.standalone.demo import client_environment
from tests.support.standalone import CONNECTORS, Standalone
from tests.support.wheels import make_wheel

ROOT = Path(__file__).parents[1]
PATHS = ("direct", "connectors", "nginx", "devpi")


@dataclass(frozen=True)
class Sizes:
    wheels: int
    wheel_bytes: int
    rounds: int


FULL = Sizes(wheels=30, wheel_bytes=1_500_000, rounds=7)
QUICK = Sizes(wheels=3, wheel_bytes=200_000, rounds=1)


@dataclass(frozen=True)
class Route:
    """One way to install: its index URL now, and how to empty its cache."""

    index_url: Callable[[], str]
    clear: Callable[[], None]


@contextlib.contextmanager
def relay(target: str, rtt_ms: float, mbit: float) -> Iterator[str]:
    parts = urllib.parse.urlsplit(target)
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.relay", "--target", parts.netloc,
         "--rtt-ms", str(rtt_ms), "--mbit", str(mbit)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        port = int(process.stdout.readline())
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)


def install_seconds(index_url: str, names: list[str], workdir: Path) -> float:
    target = workdir / f"site-{time.monotonic_ns()}"
    started = time.monotonic()
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-cache-dir",
         "--disable-pip-version-check", "--quiet", "--target", str(target),
         "--index-url", index_url, *names],
        env=client_environment(), check=True, timeout=900,
    )  # fmt: skip
    elapsed = time.monotonic() - started
    shutil.rmtree(target)
    return elapsed


def with_credentials(url: str, user: str, password: str) -> str:
    parts = urllib.parse.urlsplit(url)
    quoted = f"{urllib.parse.quote(user)}:{urllib.parse.quote(password)}@{parts.netloc}"
    return urllib.parse.urlunsplit(parts._replace(netloc=quoted))


def run(sizes: Sizes, rtt_ms: float, mbit: float) -> dict[str, dict[str, list[float]]]:
    times: dict[str, dict[str, list[float]]] = {p: {"first": [], "repeat": []} for p in PATHS}
    with contextlib.ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="cache-speed-")))
        registry = stack.enter_context(
            localregistry.pypiserver(work / "pypi", hash_scheme="apr_md5_crypt")
        )
        names = [f"cached-{n}" for n in range(sizes.wheels)]
        for name in names:
            make_wheel(registry.packages, name, "1.0", payload=os.urandom(sizes.wheel_bytes))
        remote = stack.enter_context(relay(registry.url, rtt_ms, mbit))
        user, password = registry.username, registry.password
        paths = {
            "direct": Route(
                lambda: with_credentials(remote, user, password) + "/simple/", lambda: None
            ),
            "connectors": _connectors(stack, work, remote, user, password),
            "nginx": _nginx(stack, work, remote, user, password),
            "devpi": _devpi(stack, work, remote, user, password),
        }
        for round_ in range(sizes.rounds):
            order = PATHS[round_ % len(PATHS) :] + PATHS[: round_ % len(PATHS)]
            for name in order:
                path = paths[name]
                path.clear()
                times[name]["first"].append(install_seconds(path.index_url(), names, work))
                times[name]["repeat"].append(install_seconds(path.index_url(), names, work))
            print(f"round {round_ + 1}/{sizes.rounds} done", file=sys.stderr, flush=True)
    return times


def _connectors(
    stack: contextlib.ExitStack, work: Path, remote: str, user: str, password: str
) -> Route:
    server: Standalone = stack.enter_context(
        peers.connectors_serve(work / "connectors", remote, user, password)
    )
    token = server.token("default", "bench")
    index = with_credentials(server.connector_url("default", "bench"), "x", token) + "/simple/"

    def clear() -> None:
        subprocess.run(
            [CONNECTORS, "cache", "clear", "--state-dir", str(server.state_dir)],
            check=True, capture_output=True,
        )  # fmt: skip

    return Route(lambda: index, clear)


def _nginx(stack: contextlib.ExitStack, work: Path, remote: str, user: str, password: str) -> Route:
    running = [contextlib.ExitStack()]
    stack.callback(lambda: running[0].close())  # noqa: PLW0108 (the stack is replaced)
    made = [0]

    def start() -> str:
        made[0] += 1
        return running[0].enter_context(
            peers.nginx_cache(work / f"nginx-{made[0]}", remote, user, password)
        )

    url = start()

    def clear() -> None:
        # A new nginx on the same port, with an empty cache directory.
        running[0].close()
        running[0] = contextlib.ExitStack()
        assert start() == url

    return Route(lambda: url + "/simple/", clear)


def _devpi(stack: contextlib.ExitStack, work: Path, remote: str, user: str, password: str) -> Route:
    devpi = stack.enter_context(peers.devpi_mirror_server(work / "devpi"))
    mirror_url = with_credentials(remote, user, password) + "/simple/"
    state = {"index": ""}

    def clear() -> None:
        state["index"] = devpi.new_mirror(mirror_url)

    clear()
    return Route(lambda: f"{devpi.url}/{state['index']}/+simple/", clear)


def report(
    times: dict[str, dict[str, list[float]]], sizes: Sizes, rtt: float, mbit: float
) -> dict[str, float]:
    rows: dict[str, float] = {}
    for path in PATHS:
        for kind in ("first", "repeat"):
            rows[f"{path} {kind}"] = statistics.median(times[path][kind])
    print(f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
          f"{sizes.wheels} wheels of {sizes.wheel_bytes / 1e6:g} MB, {rtt:g} ms, {mbit:g} Mbit/s, "
          f"median of {sizes.rounds} rounds")  # fmt: skip
    print(f"{'path':<12}{'first install, s':>18}{'repeat install, s':>19}")
    for path in PATHS:
        print(f"{path:<12}{rows[path + ' first']:>18.2f}{rows[path + ' repeat']:>19.2f}")
    direct = rows["direct repeat"]
    print(f"connectors repeat: {direct / rows['connectors repeat']:.2f}x faster than direct, "
          f"{rows['nginx repeat'] / rows['connectors repeat']:.2f}x nginx's speed; first install "
          f"{rows['connectors first'] / rows['direct first']:.3f} of direct's time")  # fmt: skip
    return rows


def chart(rows: dict[str, float], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, axis = pyplot.subplots(figsize=(8, 4))
    width = 0.38
    for i, kind in enumerate(("first", "repeat")):
        values = [rows[f"{p} {kind}"] for p in PATHS]
        axis.bar([x + (i - 0.5) * width for x in range(len(PATHS))], values, width,
                 label=f"{kind} install")  # fmt: skip
    axis.set_xticks(range(len(PATHS)), PATHS)
    axis.set_ylabel("seconds (lower is better)")
    axis.set_title(title, fontsize=10)
    axis.legend(loc="upper center")
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rtt-ms", type=float, default=20.0)
    parser.add_argument("--mbit", type=float, default=200.0)
    parser.add_argument("--rounds", type=int, default=None)
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    if args.rounds:
        sizes = Sizes(sizes.wheels, sizes.wheel_bytes, args.rounds)
    times = run(sizes, args.rtt_ms, args.mbit)
    rows = report(times, sizes, args.rtt_ms, args.mbit)
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    name = "cache-quick.json" if args.quick else "cache.json"
    (out / name).write_text(json.dumps({"medians": rows, "times": times}, indent=1))
    if not args.quick:
        title = (f"pip install of {sizes.wheels} wheels of {sizes.wheel_bytes / 1e6:g} MB, "
                 f"registry {args.rtt_ms:g} ms / {args.mbit:g} Mbit/s away")  # fmt: skip
        chart(rows, ROOT / "docs" / "benchmarks-cache.png", title)
    return 0


if __name__ == "__main__":
    sys.exit(main())
