"""A teacher answer's bytes, decoded as they come and never past a limit.

The teacher is asked for ``gzip`` or ``deflate`` at most; each raw chunk is inflated in steps of
:data:`STEP` bytes, so a small compressed body that expands to gigabytes (a gzip bomb) is
refused once its decoded size passes the limit, having held one step at a time.
"""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterable, Iterator

from understudy.gateway.errors import UpstreamError

ACCEPTED_ENCODINGS = "gzip, deflate"
"""What the gateway asks the teacher for (``accept-encoding``)."""
STEP = 256 * 1024


class AnswerTooLarge(UpstreamError):
    """The teacher's answer decoded to more than ``teacher.max_answer_bytes``."""


class BodyDecoder:
    """Feed raw bytes; get back decoded pieces of at most :data:`STEP` bytes each. Raises
    :class:`UpstreamError` for an encoding the gateway did not ask for or a corrupt one, and
    :class:`AnswerTooLarge` once more than ``limit`` decoded bytes came."""

    def __init__(self, encoding: str | None, limit: int) -> None:
        self.limit = limit
        self.size = 0
        name = (encoding or "identity").strip().lower()
        if name not in ("identity", "", "gzip", "x-gzip", "deflate"):
            raise UpstreamError(f"the teacher answered in an encoding it was not asked for: {name}")
        self._raw_deflate = False
        self._inflate = None
        if name in ("gzip", "x-gzip"):
            self._inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif name == "deflate":
            self._inflate = zlib.decompressobj()
            self._raw_deflate = True  # may turn out to lack the zlib header

    def feed(self, raw: bytes) -> Iterator[bytes]:
        if self._inflate is None:
            yield self._count(raw)
            return
        data = raw
        while data:
            try:
                piece = self._inflate.decompress(data, STEP)
            except zlib.error:
                if self._raw_deflate and self.size == 0:
                    self._raw_deflate = False
                    self._inflate = zlib.decompressobj(-zlib.MAX_WBITS)
                    continue
                raise UpstreamError("the teacher's compressed answer is corrupt") from None
            self._raw_deflate = False
            if piece:
                yield self._count(piece)
            data = self._inflate.unconsumed_tail
            if self._inflate.eof:
                return

    def _count(self, piece: bytes) -> bytes:
        self.size += len(piece)
        if self.size > self.limit:
            raise AnswerTooLarge(
                f"the teacher's answer is larger than {self.limit} bytes (teacher.max_answer_bytes)"
            )
        return piece


async def read_body(chunks: AsyncIterable[bytes], encoding: str | None, limit: int) -> bytes:
    """The whole decoded body of ``chunks`` (raw bytes as they come), within ``limit``."""
    decoder = BodyDecoder(encoding, limit)
    parts: list[bytes] = []
    try:
        async for raw in chunks:
            parts.extend(decoder.feed(raw))
    except BaseException:
        # The error's traceback keeps this frame alive until a cyclic collection: let go of
        # what was read now, or every refused answer holds up to ``limit`` bytes until then.
        parts.clear()
        raise
    return b"".join(parts)
