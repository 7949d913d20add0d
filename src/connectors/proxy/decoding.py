"""Undo a content encoding of an index page, bounded by the decoded size.

The proxy asks registries for identity, but a registry may compress anyway, by accident or
to attack: a 1 MiB gzip body can hold a gigabyte. Decoding is incremental and every call
produces at most `step` bytes, so the decoded size is checked as it grows and no single
call does unbounded work.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator

from connectors.api.errors import RegistryDataError

_DECODABLE = frozenset({"gzip", "x-gzip", "deflate"})


class BoundedDecoder:
    def __init__(self, encoding: str, limit: int, step: int = 256 * 1024) -> None:
        encoding = encoding.strip().lower()
        if encoding not in _DECODABLE and encoding not in ("", "identity"):
            raise RegistryDataError(
                f"the registry sent an index page in content encoding {encoding[:40]!r}, "
                "which the proxy cannot read (it asks for identity)"
            )
        # zlib with MAX_WBITS|32 reads both the gzip and the zlib ("deflate") framing.
        self._inflater = zlib.decompressobj(zlib.MAX_WBITS | 32) if encoding in _DECODABLE else None
        self.limit = limit
        self.step = step
        self.decoded = 0

    def feed(self, data: bytes) -> Iterator[bytes]:
        """The decoded bytes of `data`, in pieces of at most `step` bytes."""
        if self._inflater is None:
            yield self._counted(data)
            return
        pending = data
        while pending:
            if self._inflater.eof:
                pending = self._next_member(pending)
            try:
                piece = self._inflater.decompress(pending, self.step)
            except zlib.error as exc:
                raise RegistryDataError(f"the index page's compression is corrupt: {exc}") from exc
            pending = self._inflater.unconsumed_tail or self._inflater.unused_data
            yield self._counted(piece)

    def finish(self) -> Iterator[bytes]:
        if self._inflater is None:
            return
        yield from self.feed(b"")
        if not self._inflater.eof:
            raise RegistryDataError("the index page's compressed body ended early")

    def _next_member(self, data: bytes) -> bytes:
        """gzip allows several members one after another; anything else after the end
        of the compressed body is corrupt, not to be ignored."""
        if not data.startswith(b"\x1f\x8b"):
            raise RegistryDataError("the index page has bytes after its compressed body")
        self._inflater = zlib.decompressobj(zlib.MAX_WBITS | 32)
        return data

    def _counted(self, piece: bytes) -> bytes:
        self.decoded += len(piece)
        if self.decoded > self.limit:
            raise RegistryDataError(
                f"the registry's index page is larger than {self.limit} bytes once decoded"
            )
        return piece
