"""Undoing a registry's content encoding of an index page: exact for what is honest,
bounded by the decoded size however it is fed, and a clear RegistryDataError (a 502 to
the client) for everything else."""

from __future__ import annotations

import gzip
import zlib

import pytest

from connectors.api.errors import RegistryDataError
from connectors.proxy.decoding import BoundedDecoder

PAGE = b"<html><body>" + b'<a href="/p/x-1.0.whl">x</a>\n' * 2000 + b"</body></html>\n"


def decoded(encoding: str, body: bytes, *, limit: int = 1 << 20, chunk: int = 997) -> bytes:
    """Feed `body` in chunks of `chunk` bytes, as it comes off the wire."""
    decoder = BoundedDecoder(encoding, limit, step=4096)
    pieces = [p for i in range(0, len(body), chunk) for p in decoder.feed(body[i : i + chunk])]
    pieces += list(decoder.finish())
    if encoding.strip() not in ("", "identity"):  # inflating: no step does unbounded work
        assert all(len(p) <= 4096 for p in pieces)
    return b"".join(pieces)


@pytest.mark.parametrize(
    ("encoding", "encode"),
    [
        ("", lambda b: b),
        ("identity", lambda b: b),
        ("gzip", gzip.compress),
        ("x-gzip", gzip.compress),
        ("deflate", zlib.compress),
        (" GZIP ", gzip.compress),
    ],
)
def test_each_encoding_decodes_exactly_whatever_the_chunking(encoding, encode):
    for chunk in (1, 7, 997, 1 << 20):
        assert decoded(encoding, encode(PAGE), chunk=chunk) == PAGE


def test_gzip_members_one_after_another_are_one_page():
    half = len(PAGE) // 2
    assert decoded("gzip", gzip.compress(PAGE[:half]) + gzip.compress(PAGE[half:])) == PAGE


def test_a_compression_bomb_stops_at_the_bound_not_at_its_size():
    bomb = gzip.compress(b"\0" * (64 << 20))  # 64 MiB in about 64 KiB
    decoder = BoundedDecoder("gzip", 1 << 20, step=64 * 1024)
    seen = 0
    with pytest.raises(RegistryDataError, match="larger than 1048576 bytes once decoded"):
        for piece in decoder.feed(bomb):
            seen += len(piece)
    assert seen <= (1 << 20) + 64 * 1024  # it stopped within a step of the bound


def test_an_identity_page_over_the_bound_is_refused_too():
    with pytest.raises(RegistryDataError, match="larger than 100 bytes"):
        decoded("identity", PAGE, limit=100)


@pytest.mark.parametrize(
    ("encoding", "body", "says"),
    [
        ("gzip", gzip.compress(PAGE)[:-20], "ended early"),
        ("gzip", b"\x1f\x8b" + b"\xff" * 50, "compression is corrupt"),
        ("gzip", gzip.compress(PAGE) + b"trailing junk", "bytes after its compressed body"),
        ("br", PAGE, "content encoding 'br'"),
        ("compress", PAGE, "which the proxy cannot read"),
    ],
)
def test_what_cannot_be_decoded_is_a_registry_data_error_that_says_why(encoding, body, says):
    with pytest.raises(RegistryDataError, match=says):
        decoded(encoding, body)
