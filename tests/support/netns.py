"""A network namespace playing a Pod's network: its own /etc/hosts resolves the seed's
Service names to the proxy, reached over a veth pair. `ip netns exec` bind-mounts
/etc/netns/<name>/hosts over /etc/hosts for the commands it runs. Addresses are a
private /30 that exists only between this namespace and the host."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

HOST_ADDRESS = "10.203.0.1"
POD_ADDRESS = "10.203.0.2"


def available() -> bool:
    return (
        shutil.which("ip") is not None
        and subprocess.run(["ip", "netns", "list"], capture_output=True, check=False).returncode
        == 0
    )


class PodNetwork:
    def __init__(self, name: str, hosts: list[str]) -> None:
        self.name = name
        self.hosts = hosts
        self.veth = f"{name[:9]}-h"

    def _ip(self, *args: str) -> None:
        subprocess.run(["ip", *args], check=True, capture_output=True)

    def up(self) -> PodNetwork:
        self.down()
        self._ip("netns", "add", self.name)
        self._ip("link", "add", self.veth, "type", "veth", "peer", "name", f"{self.name[:9]}-p")
        self._ip("link", "set", f"{self.name[:9]}-p", "netns", self.name)
        self._ip("addr", "add", f"{HOST_ADDRESS}/30", "dev", self.veth)
        self._ip("link", "set", self.veth, "up")
        inside = ["netns", "exec", self.name, "ip"]
        self._ip(*inside, "addr", "add", f"{POD_ADDRESS}/30", "dev", f"{self.name[:9]}-p")
        self._ip(*inside, "link", "set", f"{self.name[:9]}-p", "up")
        self._ip(*inside, "link", "set", "lo", "up")
        etc = Path("/etc/netns") / self.name
        etc.mkdir(parents=True, exist_ok=True)
        (etc / "hosts").write_text(
            "127.0.0.1 localhost\n" + "".join(f"{HOST_ADDRESS} {h}\n" for h in self.hosts)
        )
        return self

    def down(self) -> None:
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True, check=False)
        subprocess.run(["ip", "link", "del", self.veth], capture_output=True, check=False)
        shutil.rmtree(Path("/etc/netns") / self.name, ignore_errors=True)

    def command(self, argv: list[str]) -> list[str]:
        """`argv` run inside this namespace."""
        return ["ip", "netns", "exec", self.name, *argv]
