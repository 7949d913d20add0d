"""The standalone issuer's tokens: bound to one audience, bounded in life, issuer-checked."""

from __future__ import annotations

import time
from pathlib import Path

import jwt
import pytest

from connectors.api.errors import TokenError, UsageError
from connectors.auth import tokens
from connectors.auth.authenticator import LocalAuthenticator
from connectors.auth.keys import KeyRing

AUDIENCE = "http://127.0.0.1:8080/namespaces/demo/connectors/pypi"


@pytest.fixture
def ring(tmp_path: Path) -> KeyRing:
    return KeyRing.open(tmp_path / "keys")


def test_a_token_verifies_for_its_audience_with_its_subject_and_expiry(ring: KeyRing):
    now = time.time()
    token = tokens.issue(ring, audience=AUDIENCE, subject="alice", ttl_seconds=600, now=now)
    identity = tokens.verify(ring, token, audience=AUDIENCE)
    assert identity.subject == "alice"
    assert identity.expires_at == int(now) + 600
    assert identity.scopes == frozenset(tokens.ALL_SCOPES)


def test_a_token_for_another_connector_is_refused(ring: KeyRing):
    token = tokens.issue(ring, audience=AUDIENCE + "-other", subject="alice")
    with pytest.raises(TokenError, match="different connector"):
        tokens.verify(ring, token, audience=AUDIENCE)


def test_an_expired_token_is_refused_beyond_the_leeway(ring: KeyRing):
    past = time.time() - 600 - tokens.LEEWAY_SECONDS - 2
    token = tokens.issue(ring, audience=AUDIENCE, subject="a", ttl_seconds=600, now=past)
    with pytest.raises(TokenError, match="expired"):
        tokens.verify(ring, token, audience=AUDIENCE)


def test_clock_skew_within_the_leeway_is_tolerated(ring: KeyRing):
    future = time.time() + tokens.LEEWAY_SECONDS - 2  # issued by a clock slightly ahead
    token = tokens.issue(ring, audience=AUDIENCE, subject="a", ttl_seconds=600, now=future)
    assert tokens.verify(ring, token, audience=AUDIENCE).subject == "a"


def test_a_token_from_another_issuer_is_refused(ring: KeyRing, tmp_path: Path):
    stranger = KeyRing.open(tmp_path / "stranger")
    token = tokens.issue(stranger, audience=AUDIENCE, subject="mallory")
    with pytest.raises(TokenError, match="not signed by this issuer"):
        tokens.verify(ring, token, audience=AUDIENCE)


def test_a_forged_signature_under_a_known_key_id_is_refused(ring: KeyRing, tmp_path: Path):
    genuine = tokens.issue(ring, audience=AUDIENCE, subject="alice")
    header, payload, _ = genuine.split(".")
    forged_sig = tokens.issue(KeyRing.open(tmp_path / "x"), audience=AUDIENCE, subject="m")
    forged = f"{header}.{payload}.{forged_sig.split('.')[2]}"
    with pytest.raises(TokenError, match="not valid"):
        tokens.verify(ring, forged, audience=AUDIENCE)


@pytest.mark.parametrize("garbage", ["", "abc", "a.b.c", "x" * 5000, "é.é.é"])
def test_garbage_is_refused_as_a_token_error(ring: KeyRing, garbage: str):
    with pytest.raises(TokenError):
        tokens.verify(ring, garbage, audience=AUDIENCE)


def test_tokens_from_a_rotated_out_key_keep_working_until_the_key_is_retired(ring: KeyRing):
    old = tokens.issue(ring, audience=AUDIENCE, subject="a")
    ring.rotate()
    newer = tokens.issue(ring, audience=AUDIENCE, subject="b")
    assert tokens.verify(ring, old, audience=AUDIENCE).subject == "a"
    assert ring.retire_expired(24 * 3600) == []  # the old key may still have live tokens
    assert ring.retire_all_but_signer()
    with pytest.raises(TokenError, match="unknown key"):
        tokens.verify(ring, old, audience=AUDIENCE)
    assert tokens.verify(ring, newer, audience=AUDIENCE).subject == "b"


@pytest.mark.parametrize("ttl", [tokens.MIN_TTL_SECONDS - 1, tokens.MAX_TTL_SECONDS + 1])
def test_lifetimes_outside_the_bounds_are_refused(ring: KeyRing, ttl: int):
    with pytest.raises(TokenError, match="outside the allowed"):
        tokens.issue(ring, audience=AUDIENCE, subject="a", ttl_seconds=ttl)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30m", 1800), ("1h", 3600), ("90s", 90), ("600", 600), ("1h30m", 5400), ("1.5h", 5400),
     ("10m0s", 600), ("2h45m30s", 9930), ("1500ms", 1)],
)  # fmt: skip
def test_durations_read_as_written(text: str, seconds: int):
    assert tokens.parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["soon", "", "1d", "h", "30m 1h", "-5m", "1h30"])
def test_an_unreadable_duration_says_which_forms_work(text: str):
    with pytest.raises(UsageError, match="90s, 30m or 1h30m"):
        tokens.parse_duration(text)


def test_a_validly_signed_token_living_longer_than_the_maximum_is_refused(ring: KeyRing):
    now = int(time.time())
    key = ring.signer()
    claims = {
        "iss": tokens.ISSUER, "sub": "mallory", "aud": [AUDIENCE], "iat": now, "nbf": now,
        "exp": now + tokens.MAX_TTL_SECONDS + 3600, "scope": "download upload",
    }  # fmt: skip
    forever = jwt.encode(claims, key.private, algorithm=tokens.ALGORITHM, headers={"kid": key.kid})
    with pytest.raises(TokenError, match="longer than the issuer's maximum of 86400s"):
        tokens.verify(ring, forever, audience=AUDIENCE)
    claims["exp"] = now + tokens.MAX_TTL_SECONDS  # exactly the maximum is fine
    longest = jwt.encode(claims, key.private, algorithm=tokens.ALGORITHM, headers={"kid": key.kid})
    assert tokens.verify(ring, longest, audience=AUDIENCE).subject == "mallory"


def test_a_stray_file_among_the_keys_is_skipped_and_reported_and_the_keys_keep_working(
    ring: KeyRing,
):
    token = tokens.issue(ring, audience=AUDIENCE, subject="alice")
    (ring.directory / "backup.pem").write_text("not a key\n")
    (ring.directory / "folder.pem").mkdir()
    assert ring.refresh_if_changed()
    assert tokens.verify(ring, token, audience=AUDIENCE).subject == "alice"
    assert sorted(p.split(" is not")[0].rpartition("/")[2] for p in ring.problems) == [
        "backup.pem",
        "folder.pem",
    ]
    assert not ring.refresh_if_changed()  # reported once, not re-read every second
    again = KeyRing(ring.directory)  # as `connectors token` and `keys rotate` open it
    assert again.signer().kid == ring.signer().kid


async def test_a_cached_decision_dies_when_its_key_is_retired_by_another_process(
    ring: KeyRing,
):
    authenticator = LocalAuthenticator(ring)
    token = tokens.issue(ring, audience=AUDIENCE, subject="alice")

    async def ask() -> tokens.Identity:
        return await authenticator.authorize(
            token, audience=AUDIENCE, namespace="demo", name="pypi", upload=False
        )

    assert (await ask()).subject == "alice"
    assert (await ask()).subject == "alice" and authenticator.cache.hits == 1
    other = KeyRing(ring.directory)  # `connectors keys rotate --retire-now`
    other.rotate()
    other.retire_all_but_signer()
    assert ring.refresh_if_changed()  # what the server's key loop does every second
    with pytest.raises(TokenError, match="unknown key"):
        await ask()
