"""The standalone issuer's signing keys, kept as PEM files in the state directory.

Keys are Ed25519 (asymmetric: what can verify a token cannot mint one). The newest key
signs; every key still on disk verifies, so rotating keys does not cut off tokens already
handed out. A retired key is removed once no token it signed can still be valid.

A file in the directory that is not a key (a stray `.pem`, a directory) is skipped and
reported, never fatal: the keys that are there must keep working, and a key removed from
disk must stop verifying, whatever else lies beside them. `generation` changes whenever
the set of keys does, so whoever caches a decision made with a key can tell it is stale.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import secrets
import time
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from connectors.api.errors import StateError


@dataclasses.dataclass(frozen=True)
class SigningKey:
    kid: str
    created: float
    private: ed25519.Ed25519PrivateKey

    def __repr__(self) -> str:
        return f"SigningKey(kid={self.kid!r})"

    @property
    def public(self) -> ed25519.Ed25519PublicKey:
        return self.private.public_key()


class KeyRing:
    """All keys in one directory; loaded on construction, reloaded by `refresh()`."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._keys: dict[str, SigningKey] = {}
        self._listing: frozenset[str] = frozenset()
        self.generation = 0
        self.problems: tuple[str, ...] = ()  # files skipped by the last refresh, and why
        self.refresh()

    @classmethod
    def open(cls, directory: Path) -> KeyRing:
        """The key ring in `directory`, creating the directory and a first key if needed."""
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        ring = cls(directory)
        if not ring._keys:
            ring.rotate()
        return ring

    def refresh(self) -> None:
        """Load every key on disk; skip (and list in `problems`) files that are not keys."""
        keys: dict[str, SigningKey] = {}
        problems: list[str] = []
        paths = self._paths()
        for path in paths:
            try:
                keys[path.stem] = _read_key(path)
            except StateError as exc:
                problems.append(str(exc))
        self._set(keys)
        self.problems = tuple(problems)
        self._listing = frozenset(p.stem for p in paths)

    def refresh_if_changed(self) -> bool:
        """Reload when keys were added or removed by another process (`connectors keys
        rotate`); cheap enough to call every second. True when something changed."""
        listing = frozenset(p.stem for p in self._paths())
        if listing == self._listing:
            return False
        self.refresh()
        return True

    def __len__(self) -> int:
        return len(self._keys)

    def _paths(self) -> list[Path]:
        return sorted(self.directory.glob("*.pem")) if self.directory.is_dir() else []

    def _set(self, keys: dict[str, SigningKey]) -> None:
        changed = keys.keys() != self._keys.keys()
        self._keys = keys
        if changed:  # only after the keys are in place: a reader of the new generation
            self.generation += 1  # never verifies with the old keys

    def rotate(self) -> SigningKey:
        """Make a new signing key; older keys keep verifying."""
        kid = f"{int(time.time())}-{secrets.token_hex(4)}"
        private = ed25519.Ed25519PrivateKey.generate()
        pem = private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        path = self.directory / f"{kid}.pem"
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(pem)
        tmp.replace(path)
        key = SigningKey(kid=kid, created=path.stat().st_mtime, private=private)
        self._set({**self._keys, kid: key})
        self._listing = self._listing | {kid}
        return key

    def retire_expired(self, max_token_seconds: float) -> list[str]:
        """Remove the keys no token of which can still be valid: those a newer key replaced
        more than `max_token_seconds` ago (the longest a token lives)."""
        ordered = sorted(self._keys.values(), key=lambda k: (k.created, k.kid))
        now = time.time()
        stale = [
            older.kid
            for older, newer in itertools.pairwise(ordered)
            if now - newer.created > max_token_seconds
        ]
        return self._remove(stale)

    def retire_all_but_signer(self) -> list[str]:
        """Remove every key but the newest at once (a key was exposed): every token it
        signed is refused from now on."""
        signer = self.signer()
        return self._remove([kid for kid in self._keys if kid != signer.kid])

    def _remove(self, kids: list[str]) -> list[str]:
        for kid in kids:
            (self.directory / f"{kid}.pem").unlink(missing_ok=True)
        self._set({kid: key for kid, key in self._keys.items() if kid not in kids})
        self._listing = self._listing - set(kids)
        return kids

    def signer(self) -> SigningKey:
        if not self._keys:
            raise StateError(
                f"no signing key in {self.directory}: start `connectors serve` once to create one"
            )
        return max(self._keys.values(), key=lambda k: (k.created, k.kid))

    def verifier(self, kid: str) -> ed25519.Ed25519PublicKey | None:
        key = self._keys.get(kid)
        if key is None:
            # A key made by another process (`keys rotate`) is usable at once. Only a
            # changed listing is read again: anyone can send a token naming an unknown key,
            # and that must cost a directory listing, not parsing every key.
            self.refresh_if_changed()
            key = self._keys.get(kid)
        return key.public if key else None


def _read_key(path: Path) -> SigningKey:
    try:
        private = serialization.load_pem_private_key(path.read_bytes(), password=None)
        created = path.stat().st_mtime
    except (OSError, ValueError, TypeError) as exc:
        raise StateError(
            f"{path} is not a signing key ({exc.__class__.__name__}): remove it from the "
            "key directory; it is ignored"
        ) from exc
    if not isinstance(private, ed25519.Ed25519PrivateKey):
        raise StateError(f"{path} is not an Ed25519 signing key: remove it; it is ignored")
    return SigningKey(kid=path.stem, created=created, private=private)
