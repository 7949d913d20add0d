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
            try:
                piece = self._inflater.decompress(pending, self.step)
            except zlib.error as exc:
                raise RegistryDataError(f"the index page's compression is corrupt: {exc}") from exc
            pending = self._inflater.unconsumed_tail
            yield self._counted(piece)
            if not piece and not pending:
                break

    def finish(self) -> Iterator[bytes]:
        if self._inflater is None:
            return
        while True:
            try:
                piece = self._inflater.decompress(self._inflater.unconsumed_tail, self.step)
            except zlib.error as exc:
                raise RegistryDataError(f"the index page's compression is corrupt: {exc}") from exc
            if not piece:
                break
            yield self._counted(piece)
        if not self._inflater.eof:
            raise RegistryDataError("the index page's compressed body ended early")

    def _counted(self, piece: bytes) -> bytes:
        self.decoded += len(piece)
        if self.decoded > self.limit:
            raise RegistryDataError(
                f"the registry's index page is larger than {self.limit} bytes once decoded"
            )
        return piece
