"""The clients of the tenant soak (bench/tenant_soak.py), each kind in a process of its own.

    python -m bench.soak_clients tenants < plan.json   # the two tenants' paced clients
    python -m bench.soak_clients attack < plan.json    # the third tenant's attack loops

Why separate processes: the tenants' latencies are measured here, so this event loop must
only ever wait on the proxy; reading the attacker's 48 MiB pages in the same loop would
show up as the tenants' latency and blame the proxy for the load generator. Tokens come
on stdin, never on argv where any user of the machine can read them with `ps`.

Both print one JSON document on stdout when their time is up: per tenant the requests,
the errors (any answer but 200, or no answer) by kind, and latency percentiles; for the
attack, the statuses it got, so the soak can show that the attack really happened.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import json
import random
import sys
import time
from typing import Any

import aiohttp

# A tenant's client asks for index pages and files in this order, round after round.
PATHS = ("/simple/alpha/", "/simple/beta/", "/packages/alpha-1.0-py3-none-any.whl")
# No request of a tenant should take long; a hung one is an error, not a slow sample.
REQUEST_TIMEOUT_SECONDS = 30.0
# The clients open their connections over the first half of this, before the clock starts:
# a burst of hundreds of connects at once measures the kernel's accept queue, not the proxy.
CONNECT_SECONDS = 2.0


@dataclasses.dataclass
class Tally:
    latencies: list[float] = dataclasses.field(default_factory=list)
    errors: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)

    def summary(self) -> dict[str, Any]:
        ordered = sorted(self.latencies)
        return {
            "requests": len(ordered) + sum(self.errors.values()),  # the measured ones
            "errors": sum(self.errors.values()),
            "error_kinds": dict(self.errors),
            "p50_ms": _percentile(ordered, 0.50),
            "p99_ms": _percentile(ordered, 0.99),
            "max_ms": round(ordered[-1] * 1000, 2) if ordered else 0.0,
        }


def _percentile(ordered: list[float], fraction: float) -> float:
    if not ordered:
        return 0.0
    index = min(len(ordered) - 1, int(len(ordered) * fraction))
    return round(ordered[index] * 1000, 2)


async def _paced_client(
    session: aiohttp.ClientSession,
    base: str,
    headers: dict[str, str],
    *,
    interval: float,
    start: float,
    until: float,
    tally: Tally,
) -> None:
    """One tenant client: its connection opened with a first request before the clock
    starts, then a request every `interval` seconds (or as soon as the last one ends, if
    it took longer) on that keep-alive connection. Every answer but a 200 is an error,
    the first one's included."""
    loop = asyncio.get_running_loop()
    # Spread the clients' phases; nothing here needs unpredictable numbers.
    await asyncio.sleep(random.uniform(0, (start - loop.time()) / 2))  # noqa: S311
    await _ask(session, base + PATHS[0], headers, tally, measured=False)
    await asyncio.sleep(max(0.0, start - loop.time()) + random.uniform(0, interval))  # noqa: S311
    turn = random.randrange(len(PATHS))  # noqa: S311
    while (started := loop.time()) < until:
        await _ask(session, base + PATHS[turn % len(PATHS)], headers, tally, measured=True)
        turn += 1
        await asyncio.sleep(max(0.0, started + interval - loop.time()))


async def _ask(
    session: aiohttp.ClientSession,
    url: str,
    headers: dict[str, str],
    tally: Tally,
    *,
    measured: bool,
) -> None:
    started = asyncio.get_running_loop().time()
    try:
        async with session.get(url, headers=headers) as reply:
            await reply.read()
            status = reply.status
    except (aiohttp.ClientError, TimeoutError) as exc:
        tally.errors[exc.__class__.__name__] += 1
        return
    if status != 200:
        tally.errors[f"HTTP {status}"] += 1
    elif measured:
        tally.latencies.append(asyncio.get_running_loop().time() - started)


async def run_tenants(plan: dict[str, Any]) -> dict[str, Any]:
    # Time for every client to open its connection before the measured window.
    start = asyncio.get_running_loop().time() + CONNECT_SECONDS
    until = start + plan["seconds"]
    interval = 1.0 / plan["rate_per_client"]
    tallies: dict[str, Tally] = {}
    sessions = []
    tasks = []
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_SECONDS)
    for tenant in plan["tenants"]:
        tally = tallies.setdefault(tenant["namespace"], Tally())
        headers = {"Authorization": f"Bearer {tenant['token']}"}
        for _ in range(tenant["clients"]):
            # A session and a connection of its own, as each pip is: a shared pool would
            # hand idle connections around and open only as many as were ever busy.
            connector = aiohttp.TCPConnector(limit=1)
            session = aiohttp.ClientSession(connector=connector, timeout=timeout)
            sessions.append(session)
            tasks.append(
                _paced_client(
                    session,
                    tenant["base"],
                    headers,
                    interval=interval,
                    start=start,
                    until=until,
                    tally=tally,
                )
            )
    try:
        await asyncio.gather(*tasks)
    finally:
        for session in sessions:
            await session.close()
    return {namespace: tally.summary() for namespace, tally in tallies.items()}


async def _attack_loop(
    session: aiohttp.ClientSession,
    url: str,
    headers: dict[str, str],
    until: float,
    seen: collections.Counter[str],
) -> None:
    """Ask for one hostile page again and again. The attacker honours Retry-After: its
    weapon is its registry; a client flooding the proxy with requests is another attack."""
    loop = asyncio.get_running_loop()
    while loop.time() < until:
        try:
            async with session.get(url, headers=headers) as reply:
                async for _ in reply.content.iter_any():
                    pass  # read and drop: the proxy must send it all, the attacker keeps none
                seen[str(reply.status)] += 1
                pause = 1.0 if reply.status == 503 else 0.0
        except (aiohttp.ClientError, TimeoutError) as exc:
            seen[exc.__class__.__name__] += 1
            pause = 1.0
        await asyncio.sleep(min(pause, max(0.0, until - loop.time())))


async def run_attack(plan: dict[str, Any]) -> dict[str, Any]:
    """`plan["targets"]`: per hostile project, the connector's base URL, its token and how
    many loops ask for it."""
    until = asyncio.get_running_loop().time() + plan["seconds"]
    results: dict[str, collections.Counter[str]] = {}
    timeout = aiohttp.ClientTimeout(total=plan["seconds"] + 120)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        tasks = []
        for project, target in plan["targets"].items():
            seen = results.setdefault(project, collections.Counter())
            url = f"{target['base']}/simple/{project}/"
            headers = {"Authorization": f"Bearer {target['token']}"}
            loops = target["loops"]
            tasks += [_attack_loop(session, url, headers, until, seen) for _ in range(loops)]
        # Requests still stalled at the end are dropped, not waited for.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(plan["seconds"]):
                await asyncio.gather(*tasks)
    return {project: dict(seen) for project, seen in results.items()}


def main(argv: list[str]) -> int:
    plan = json.load(sys.stdin)
    runner = {"tenants": run_tenants, "attack": run_attack}[argv[0]]
    started = time.monotonic()
    result = asyncio.run(runner(plan))
    wall = time.monotonic() - started
    # Its own share of a core: near 1.0 would mean the load generator, not the proxy,
    # set the pace.
    busy = round(time.process_time() / wall, 2)
    json.dump({"result": result, "cpu_share": busy}, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
