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

from tests.support import leaks

JWT = re.compile(rb"eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}")
OWN_LOGS = ("serve.log", "operator-*.log", "proxy-*.log", "csi-*.log")


def test_no_password_or_token_reached_anywhere_it_must_not(
    tmp_path_factory: pytest.TempPathFactory,
):
    for flush in leaks.BEFORE_SCAN:
        flush()
    base = tmp_path_factory.getbasetemp()
    needles = leaks.needles_for(leaks.PASSWORDS, tuple(leaks.USERNAMES))
    places = list(leaks.SEEN)
    for pattern in ("*.log", "status.json"):
        places += [(str(p.relative_to(base)), p.read_bytes()) for p in base.rglob(pattern)]
    assert leaks.find_leaks(needles, places) == []

    logs: list[Path] = [p for pattern in OWN_LOGS for p in base.rglob(pattern)]
    tokens_in_logs = [str(p.relative_to(base)) for p in logs if JWT.search(p.read_bytes())]
    assert tokens_in_logs == []
    print(f"\nscanned {len(places)} places for {len(leaks.PASSWORDS)} passwords, "
          f"{len(logs)} component logs for tokens")  # fmt: skip
