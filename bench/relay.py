"""A TCP relay that makes a loopback registry behave like a remote one: each direction is a
link with a one-way delay of half the round trip and a bandwidth shared by every
connection, so bytes arrive `rtt/2` after the link finished sending them, and the link
sends them no faster than `mbit`.

    python -m bench.relay --listen 127.0.0.1:0 --target 127.0.0.1:8081 --rtt-ms 20 --mbit 200

It prints the port it listens on, then relays until killed. What it does not model: loss,
TCP's slow start and windows beyond a 4 MiB buffer per direction per connection; the
clients and registries here reuse connections, so the round trips and the bandwidth are
what a remote registry costs them.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import sys

_READ_BYTES = 64 * 1024
_BUFFER_BYTES = 4 * 1024 * 1024


class Link:
    """One direction: when the link is next free, at `bytes_per_second`."""

    def __init__(self, one_way_seconds: float, bytes_per_second: float) -> None:
        self.one_way = one_way_seconds
        self.rate = bytes_per_second
        self.free_at = 0.0

    def arrival(self, now: float, size: int) -> float:
        self.free_at = max(now, self.free_at) + size / self.rate
        return self.free_at + self.one_way


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, link: Link) -> None:
    loop = asyncio.get_running_loop()
    queue: collections.deque[tuple[float, bytes]] = collections.deque()
    queued = 0
    more = asyncio.Event()
    room = asyncio.Event()
    room.set()
    done = False

    async def deliver() -> None:
        nonlocal queued
        while True:
            while not queue:
                if done:
                    return
                more.clear()
                await more.wait()
            at, data = queue.popleft()
            delay = at - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            writer.write(data)
            await writer.drain()
            queued -= len(data)
            if queued < _BUFFER_BYTES:
                room.set()

    delivering = asyncio.create_task(deliver())
    try:
        while True:
            await room.wait()
            data = await reader.read(_READ_BYTES)
            if not data:
                break
            queue.append((link.arrival(loop.time(), len(data)), data))
            queued += len(data)
            if queued >= _BUFFER_BYTES:
                room.clear()
            more.set()
    finally:
        done = True
        more.set()
        with contextlib.suppress(ConnectionError):
            await delivering
        with contextlib.suppress(OSError):
            if writer.can_write_eof():
                writer.write_eof()


async def serve(listen: tuple[str, int], target: tuple[str, int], rtt: float, mbit: float) -> None:
    rate = mbit * 1_000_000 / 8
    upstream_link, downstream_link = Link(rtt / 2, rate), Link(rtt / 2, rate)

    async def relay(client_reader: asyncio.StreamReader, client: asyncio.StreamWriter) -> None:
        try:
            server_reader, server = await asyncio.open_connection(*target)
        except OSError:
            client.close()
            return
        try:
            await asyncio.gather(
                _pump(client_reader, server, upstream_link),
                _pump(server_reader, client, downstream_link),
            )
        except ConnectionError:
            pass
        finally:
            client.close()
            server.close()

    server = await asyncio.start_server(relay, *listen)
    print(server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", default="127.0.0.1:0")
    parser.add_argument("--target", required=True)
    parser.add_argument("--rtt-ms", type=float, default=20.0)
    parser.add_argument("--mbit", type=float, default=200.0)
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(
            serve(_address(args.listen), _address(args.target), args.rtt_ms / 1000, args.mbit)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
