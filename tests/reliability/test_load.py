"""Many clients at once through one proxy, mixing index pages, downloads and uploads: no
errors, bounded memory, no file descriptors left behind, and every upload reported
successful is in the registry.

CI runs a short form. The long form of the issue (200 clients for 60 s):

    CONNECTORS_LOAD_CLIENTS=200 CONNECTORS_LOAD_SECONDS=60 \\
        .venv/bin/pytest tests/reliability/test_load.py -s
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import os
import random
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import psutil
import pytest

from connectors.standalone import localregistry
from tests.support import wire
from tests.support.standalone import serving
from tests.support.waiting import settled
from tests.support.wheels import make_wheel

CLIENTS = int(os.environ.get("CONNECTORS_LOAD_CLIENTS", "50"))
SECONDS = float(os.environ.get("CONNECTORS_LOAD_SECONDS", "10"))
PROJECTS = [f"load-{n:02d}" for n in range(20)]


@dataclasses.dataclass
class Run:
    base: str
    headers: dict[str, str]
    workdir: Path
    tally: Counter[str] = dataclasses.field(default_factory=Counter)
    uploaded: list[str] = dataclasses.field(default_factory=list)
    names: Iterator[int] = dataclasses.field(default_factory=itertools.count)


async def client(n: int, run: Run, until: float) -> None:
    base, headers, tally, uploaded, workdir = (
        run.base, run.headers, run.tally, run.uploaded, run.workdir
    )  # fmt: skip
    rng = random.Random(n)
    async with aiohttp.ClientSession(headers=headers) as session:
        while time.monotonic() < until:
            roll = rng.random()
            try:
                if roll < 0.6:
                    project = rng.choice(PROJECTS)
                    path = "/simple/" if roll < 0.1 else f"/simple/{project}/"
                    async with session.get(base + path) as reply:
                        await reply.read()
                        tally["index" if reply.status == 200 else f"index {reply.status}"] += 1
                elif roll < 0.9:
                    project = rng.choice(PROJECTS).replace("-", "_")
                    async with session.get(
                        f"{base}/packages/{project}-1.0.0-py3-none-any.whl"
                    ) as reply:
                        await reply.read()
                        tally[
                            "download" if reply.status == 200 else f"download {reply.status}"
                        ] += 1
                else:
                    name = f"up-{next(run.names)}"
                    wheel = make_wheel(workdir / name, name, "1.0.0")
                    form = aiohttp.FormData({
                        ":action": "file_upload", "name": name, "version": "1.0.0",
                        "protocol_version": "1",
                    })  # fmt: skip
                    form.add_field("content", wheel.read_bytes(), filename=wheel.name)
                    async with session.post(base + "/", data=form) as reply:
                        await reply.read()
                        if reply.status == 200:
                            uploaded.append(wheel.name)
                        tally["upload" if reply.status == 200 else f"upload {reply.status}"] += 1
            except (aiohttp.ClientError, TimeoutError) as exc:
                tally[f"error {exc.__class__.__name__}"] += 1


def test_many_clients_mixing_reads_and_uploads_see_no_errors_and_leave_nothing_behind(
    tmp_path: Path,
):
    with localregistry.pypiserver(tmp_path / "registry", hash_scheme="apr_md5_crypt") as registry:
        for project in PROJECTS:
            make_wheel(registry.packages, project, "1.0.0", payload=os.urandom(200_000))
        with serving(tmp_path / "server", registry.url, registry.username,
                     registry.password) as server:  # fmt: skip
            base = server.connector_url("default", "mirror")
            headers = wire.basic(server.token("default", "mirror"))
            proxy = psutil.Process(server.pid)
            warm = wire.request("GET", base + "/simple/", headers=headers)
            assert warm.status == 200
            rss_before, fds_before = proxy.memory_info().rss, proxy.num_fds()

            run = Run(base, headers, tmp_path / "wheels")
            peak = [rss_before]

            async def phase(seconds: float) -> None:
                until = time.monotonic() + seconds

                async def sample() -> None:
                    while time.monotonic() < until:
                        peak[0] = max(peak[0], proxy.memory_info().rss)
                        await asyncio.sleep(0.5)

                await asyncio.gather(sample(), *(client(n, run, until) for n in range(CLIENTS)))

            # Two phases: idle upstream keep-alive connections (the pool, at most 64 per
            # registry) may stay open after the first; nothing may grow after the second.
            started = time.monotonic()
            asyncio.run(phase(SECONDS / 2))
            time.sleep(1.5)
            fds_between = proxy.num_fds()
            asyncio.run(phase(SECONDS / 2))
            elapsed = time.monotonic() - started - 1.5
            # Closed connections are reaped soon after the clients stop.
            bound = min(fds_between, fds_before + 64) + 5
            settled(lambda: proxy.num_fds() <= bound, 15, "the closed connections reaped")
            rss_after, fds_after = proxy.memory_info().rss, proxy.num_fds()
        tally, uploaded = run.tally, run.uploaded
        errors = {k: v for k, v in tally.items() if " " in k}
        total = sum(tally.values())
        print(
            f"\nload: {CLIENTS} clients, {elapsed:.1f}s, {total} requests "
            f"({total / elapsed:.0f}/s): {dict(tally)}; proxy RSS {rss_before / 2**20:.0f} -> "
            f"peak {peak[0] / 2**20:.0f} -> {rss_after / 2**20:.0f} MiB; "
            f"fds {fds_before} -> {fds_between} -> {fds_after}"
        )
        assert errors == {}
        assert tally["index"] and tally["download"] and tally["upload"]
        assert peak[0] - rss_before < 150 * 2**20
        assert fds_after <= fds_between + 5
        assert fds_after <= fds_before + 64 + 5
        missing = [name for name in uploaded if not (registry.packages / name).is_file()]
        assert missing == []


@pytest.fixture(autouse=True)
def _enough_file_descriptors() -> None:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 4096 <= hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (4096, hard))
