"""Request and response bodies kept compact: zstd frames, with a dictionary trained on the
log's own bodies once there are enough of them.

A ``requests`` row written by the log keeps its bodies in ``request_body`` / ``response_body``
(zstd frames; ``request_json`` is then ``''`` and ``response_json`` NULL). Rows logged before
migration ``0009_compact_bodies`` keep their text in ``request_json`` / ``response_json`` and are
read as they are. Readers never see the difference: :func:`decode_row` (:func:`decode_rows` for
many) puts the text back in ``request_json`` / ``response_json``.

A frame compressed with a dictionary names it by zstd's own dictionary id (a random 32-bit
number chosen when it is trained), and the dictionary is stored in ``body_dictionaries`` under
that id: a frame is read with the dictionary it was written with, whichever process trained
it. Dictionaries are never deleted (64 KiB each, one per :data:`RETRAIN_ROWS` bodies a writer
compresses: 37 for 5M logged requests), so retention deletes rows and nothing else.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from typing import Any, Protocol

import zstandard

from understudy.storage.engine import Database

log = logging.getLogger("understudy.storage")

LEVEL = 3
"""zstd's compression level: fast enough for the writer thread, within a few percent of 19."""
DICT_SIZE = 64 * 1024
"""Bytes of a trained dictionary (64 KiB beat 16 and 32 KiB on demo traffic and transcripts)."""
SAMPLE_BODIES = 1000
"""Bodies collected to train a dictionary."""
RETRAIN_ROWS = 250_000
"""Bodies compressed with one dictionary before a new one is trained from recent bodies."""
BODY_COLUMNS = (("request_json", "request_body"), ("response_json", "response_body"))
"""Each text column of a ``requests`` row and the column its compressed body goes to."""


class Reads(Protocol):
    """What reading bodies needs of a connection: ``Database`` and ``sqlite3.Connection``
    both do."""

    def execute(self, sql: str, parameters: Any = ..., /) -> Any: ...


_dictionaries: dict[int, zstandard.ZstdCompressionDict] = {}
"""Dictionaries read so far, by zstd dictionary id (ids are random: one cache serves every
database a process opens)."""


def decompress(db: Reads, frame: bytes) -> bytes:
    """The bytes of one frame, with the dictionary it names read from ``db`` when needed."""
    dict_id = zstandard.get_frame_parameters(frame).dict_id
    dictionary = _dictionary(db, dict_id) if dict_id else None
    return zstandard.ZstdDecompressor(dict_data=dictionary).decompress(frame)


def _dictionary(db: Reads, dict_id: int) -> zstandard.ZstdCompressionDict:
    found = _dictionaries.get(dict_id)
    if found is None:
        row = db.execute(
            "select dictionary from body_dictionaries where id = ?", [dict_id]
        ).fetchone()
        if row is None:
            raise LookupError(f"body dictionary {dict_id} is not in the database")
        found = zstandard.ZstdCompressionDict(bytes(row[0]))
        _dictionaries[dict_id] = found
    return found


def body_text(db: Reads, text: str | None, frame: bytes | None) -> str | None:
    """A body as text: the frame's when there is one, else the row's text (older rows)."""
    if frame is None:
        return text
    return decompress(db, bytes(frame)).decode("utf-8")


def decode_row(db: Reads, row: dict[str, Any]) -> dict[str, Any]:
    """``row`` with its bodies as text in ``request_json`` / ``response_json`` and the
    ``*_body`` columns taken out. Columns the row was not selected with are left alone."""
    for text_col, body_col in BODY_COLUMNS:
        if body_col in row:
            frame = row.pop(body_col)
            if frame is not None:
                row[text_col] = body_text(db, None, frame)
    return row


def decode_rows(db: Reads, rows: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """:func:`decode_row` over rows as they come (nothing held)."""
    for row in rows:
        yield decode_row(db, row)


BODY_SELECT = "request_json, request_body, response_json, response_body"
"""What a query selects to read both bodies of a ``requests`` row (then :func:`decode_row`)."""
HAS_RESPONSE = "(response_body is not null or response_json is not null)"
"""SQL: the row has a response body (compressed or, for older rows, as text)."""


class BodyEncoder:
    """Compresses the bodies of rows the log writes; owned by the writer thread.

    Until a dictionary exists, frames are plain zstd and bodies are sampled; with
    :data:`SAMPLE_BODIES` of them a dictionary is trained, stored and used from then on (one
    another process stored meanwhile is taken instead). After :data:`RETRAIN_ROWS` bodies a
    new one is trained from recent bodies, so the dictionary follows the traffic.
    """

    def __init__(self) -> None:
        self.dictionary: zstandard.ZstdCompressionDict | None = None
        self._compressor = zstandard.ZstdCompressor(level=LEVEL, write_checksum=False)
        self._samples: list[bytes] = []
        self._since_trained = 0
        self._loaded = False

    def encode(self, db: Database, row: dict[str, Any]) -> dict[str, Any]:
        """``row`` (for ``requests``) with its non-empty bodies compressed into the ``*_body``
        columns. Text that is not valid UTF-8 raises ``UnicodeEncodeError`` (the writer then
        cleans the row and tries again)."""
        if not self._loaded:
            self._load(db)
        out = dict(row)
        for text_col, body_col in BODY_COLUMNS:
            text = out.get(text_col)
            out[body_col] = None  # every row of a batch has the same columns
            if not isinstance(text, str) or not text:
                continue
            data = text.encode("utf-8")
            out[body_col] = self._compressor.compress(data)
            out[text_col] = "" if text_col == "request_json" else None
            self._sample(data)
        return out

    def maybe_train(self, db: Database) -> None:
        """Train (and store) a dictionary when enough bodies were sampled; after a commit."""
        if len(self._samples) < SAMPLE_BODIES:
            return
        samples, self._samples = self._samples, []
        if self.dictionary is None and self._load(db):
            return  # another process trained one meanwhile
        try:
            trained = zstandard.train_dictionary(DICT_SIZE, list[Any](samples), level=LEVEL)
        except zstandard.ZstdError as exc:  # too little or too uniform data: go on without
            log.info("body dictionary not trained (%s)", exc)
            self._since_trained = 0
            return
        with db.conn:
            db.execute(
                "insert into body_dictionaries (id, created_at, samples, dictionary)"
                " values (?, ?, ?, ?) on conflict (id) do nothing",
                [trained.dict_id(), time.time(), len(samples), trained.as_bytes()],
            )
        self._use(trained)
        log.info("body dictionary %d trained on %d bodies", trained.dict_id(), len(samples))

    def _sample(self, data: bytes) -> None:
        self._since_trained += 1
        if self.dictionary is None or self._since_trained > RETRAIN_ROWS - SAMPLE_BODIES:
            self._samples.append(data)

    def _load(self, db: Database) -> bool:
        """Use the newest stored dictionary; False when there is none."""
        self._loaded = True
        row = db.execute(
            "select id, dictionary from body_dictionaries order by created_at desc limit 1"
        ).fetchone()
        if row is None:
            return False
        dictionary = zstandard.ZstdCompressionDict(bytes(row[1]))
        _dictionaries[int(row[0])] = dictionary
        self._use(dictionary)
        return True

    def _use(self, dictionary: zstandard.ZstdCompressionDict) -> None:
        dictionary.precompute_compress(level=LEVEL)
        _dictionaries[dictionary.dict_id()] = dictionary
        self.dictionary = dictionary
        self._compressor = zstandard.ZstdCompressor(
            level=LEVEL, dict_data=dictionary, write_checksum=False
        )
        self._since_trained = 0
        self._samples = []
