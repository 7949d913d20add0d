"""The last test of every run: one scan of everything the run produced for a registry
password or a token where none belongs.

Scanned for passwords (plain, or inside an HTTP Basic value): every reply, client output,
rendered file and CLI output the tests recorded, and every log, status file and Event
dump written under the run's temporary directory. Scanned for tokens: the logs of
connectors' own processes (serve, operator, proxy, csi), where no token may ever appear;
rendered files are meant to hold one and are not scanned for it.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from connectors.standalone.localregistry import LocalRegistry
from tests.support import clients, leaks
from tests.support import seed as seed_manifests
from tests.support.standalone import Standalone

JWT = re.compile(rb"eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}")
OWN_LOGS = ("serve.log", "operator-*.log", "proxy-*.log", "csi-*.log")


def test_no_password_or_token_reached_anywhere_it_must_not(
    tmp_path_factory: pytest.TempPathFactory,
    standalone: Standalone,
    pypi_registry: LocalRegistry,
):
    # The seed's story once more, so that even alone this scan has a password to look for
    # and a server log, a status file, rendered files and client output to look in.
    namespace = "last-scan"
    standalone.write(namespace, "seed.yaml", seed_manifests.step_2(
        username=pypi_registry.username, password=pypi_registry.password,
        address=pypi_registry.url,
    ))  # fmt: skip
    standalone.wait_ready(namespace, "pypi-connector")
    work = tmp_path_factory.mktemp("last-scan")
    standalone.render(namespace, "pypi-connector", "pipconf", into=work)
    clients.pip_install(work / "pip.conf", "nothing-here==1", target=work / "site")

    for flush in leaks.BEFORE_SCAN:
        flush()
    base = tmp_path_factory.getbasetemp()
    needles = leaks.needles_for(leaks.PASSWORDS, tuple(leaks.USERNAMES))
    places = list(leaks.SEEN)
    for pattern in ("*.log", "status.json"):
        places += [(str(p.relative_to(base)), p.read_bytes()) for p in base.rglob(pattern)]
    assert pypi_registry.password.encode() in needles and len(places) >= 4
    # The scan finds what it looks for: a password planted in a copy of a real place.
    planted = [("planted", places[0][1] + pypi_registry.password.encode())]
    assert leaks.find_leaks(needles, planted) == ["planted"]
    assert leaks.find_leaks(needles, places) == []

    logs: list[Path] = [p for pattern in OWN_LOGS for p in base.rglob(pattern)]
    tokens_in_logs = [str(p.relative_to(base)) for p in logs if JWT.search(p.read_bytes())]
    assert tokens_in_logs == []
    print(f"\nscanned {len(places)} places for {len(leaks.PASSWORDS)} passwords, "
          f"{len(logs)} component logs for tokens")  # fmt: skip
