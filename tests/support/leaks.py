"""Everything a client or operator saw during the tests, and a scan of it for credentials.

Replies (headers and bodies), client output (pip, twine, uv) and rendered files are
recorded as tests make them; at the end of each test module, the server's log, its status
file and everything recorded are searched for every password in the module's Secrets,
plain or as the HTTP Basic value that would carry it.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from pathlib import Path

from connectors.store.filestore import load_directory

SEEN: list[tuple[str, bytes]] = []
# Every registry password any test put into a Secret, for the session's final scan.
PASSWORDS: set[str] = set()
USERNAMES: set[str] = set()
# What must be written out before the final scan reads it (component logs of a node that
# stays up until the session ends).
BEFORE_SCAN: list[Callable[[], None]] = []


def record(where: str, data: bytes | str) -> None:
    SEEN.append((where, data.encode() if isinstance(data, str) else data))


def secrets_under(config_dir: Path) -> list[bytes]:
    """Each Secret password in config_dir, and its username:password Basic encoding."""
    needles = []
    for secret in load_directory(config_dir).secrets.values():
        password = secret.data.get("password")
        if not password:
            continue
        needles.append(password)
        pair = secret.data.get("username", b"") + b":" + password
        needles.append(base64.b64encode(pair))
    return needles


def find_leaks(needles: list[bytes], places: list[tuple[str, bytes]]) -> list[str]:
    return sorted({where for where, data in places for needle in needles if needle in data})


def needles_for(passwords: set[str], username_hints: tuple[str, ...] = ()) -> list[bytes]:
    """Each password, plain and inside any HTTP Basic value with a known username."""
    needles = [p.encode() for p in passwords]
    for password in passwords:
        for user in username_hints:
            needles.append(base64.b64encode(f"{user}:{password}".encode()))
    return needles
