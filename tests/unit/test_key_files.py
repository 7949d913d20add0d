"""The standalone issuer's signing keys are readable by their owner only."""

from __future__ import annotations

from pathlib import Path

from connectors.auth.keys import KeyRing


def test_signing_keys_are_private_to_their_owner(tmp_path: Path):
    ring = KeyRing.open(tmp_path / "keys")
    ring.rotate()
    assert (tmp_path / "keys").stat().st_mode & 0o777 == 0o700
    keys = list((tmp_path / "keys").glob("*.pem"))
    assert len(keys) == 2
    assert {path.stat().st_mode & 0o777 for path in keys} == {0o600}
