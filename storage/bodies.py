"""Request and response bodies kept compact: one zstd frame per logged request, with a
dictionary trained on the log's own bodies once there are enough of them.

A ``requests`` row written by the log keeps both bodies in one blob, ``bodies``: the request's
length in bytes (a varint), then one zstd frame (without zstd's 4-byte magic number) of the
request's UTF-8 text followed by the response's. ``request_json`` is then ``''``, and
``response_json`` is ``''`` when the row has a response (so SQL can still ask which rows do)
and NULL when it has none. Two older layouts read as they are: rows logged between migrations
``0009_compact_bodies`` and ``0015_one_body_frame`` kept a frame per body in ``request_body``
/ ``response_body``, and rows logged before that kept their text in ``request_json`` /
``response_json``; migration ``0015_one_body_frame`` converts both. Readers never see the
difference: :func:`decode_row` (:func:`decode_rows` for many) puts the text back in
``request_json`` / ``response_json``.

A frame compressed with a dictionary names it by zstd's own dictionary id (a random 32-bit
number chosen when it is trained), and the dictionary is stored in ``body_dictionaries`` under
that id: a frame is read with the dictionary it was written with, whichever process trained
it. The rows a writer compressed before the first dictionary existed are compressed again with
it once it is trained (at most :data:`SAMPLE_BODIES` rows, once). Dictionaries are never
deleted (64 KiB each, one per :data:`RETRAIN_ROWS` bodies a writer compresses: 21 for 5M
logged requests), so retention deletes rows and nothing else.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterable, Iterator
from typing import Any, Protocol

import zstandard

from understudy.storage import names
from understudy.storage.engine import Database

log = logging.getLogger("understudy.storage")

LEVEL = 3
"""zstd's compression level: fast enough for the writer thread, within a few percent of 19."""
DICT_SIZE = 64 * 1024
"""Bytes of a trained dictionary (64 KiB beat 16 and 32 KiB on demo traffic and transcripts)."""
SAMPLE_BODIES = 1000
"""Rows' bodies collected to train a dictionary."""
RETRAIN_ROWS = 250_000
"""Rows compressed with one dictionary before a new one is trained from recent bodies."""
BODY_COLUMNS = (("request_json", "request_body"), ("response_json", "response_body"))
"""Each text column of a ``requests`` row and the column its frame went to before ``0015``."""
CONVERT_BATCH = 500
"""Rows migration ``0015_one_body_frame`` converts per statement."""

_FORMAT = zstandard.FORMAT_ZSTD1_MAGICLESS
"""Frames in ``bodies`` leave out zstd's magic number (4 bytes a row): the column says what
they are."""


class Reads(Protocol):
    """What reading bodies needs of a connection: ``Database`` and ``sqlite3.Connection``
    both do."""

    def execute(self, sql: str, parameters: Any = ..., /) -> Any: ...


_dictionaries: dict[int, zstandard.ZstdCompressionDict] = {}
"""Dictionaries read so far, by zstd dictionary id (ids are random: one cache serves every
database a process opens)."""


def decompress(db: Reads, frame: bytes, *, magicless: bool = False) -> bytes:
    """The bytes of one frame, with the dictionary it names read from ``db`` when needed."""
    fmt = _FORMAT if magicless else zstandard.FORMAT_ZSTD1
    dict_id = zstandard.get_frame_parameters(frame, format=fmt).dict_id
    dictionary = _dictionary(db, dict_id) if dict_id else None
    return zstandard.ZstdDecompressor(dict_data=dictionary, format=fmt).decompress(frame)


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


def pack(compressor: zstandard.ZstdCompressor, request: bytes, response: bytes) -> bytes:
    """The ``bodies`` blob of a request and its response (UTF-8 bytes)."""
    return _varint(len(request)) + compressor.compress(request + response)


def unpack(db: Reads, blob: bytes) -> tuple[str, str]:
    """The request and response text of a ``bodies`` blob."""
    size, start = _read_varint(blob)
    content = decompress(db, blob[start:], magicless=True)
    return content[:size].decode("utf-8"), content[size:].decode("utf-8")


def _varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _read_varint(data: bytes) -> tuple[int, int]:
    """The number at the start of ``data`` and where it ends."""
    n = shift = i = 0
    while True:
        byte = data[i]
        n |= (byte & 0x7F) << shift
        i += 1
        if byte < 0x80:
            return n, i
        shift += 7


def decode_row(db: Reads, row: dict[str, Any]) -> dict[str, Any]:
    """``row`` with its bodies as text in ``request_json`` / ``response_json`` and the
    ``bodies`` / ``*_body`` columns taken out, its coded names as names
    (:func:`storage.names.decode_row`). Columns the row was not selected with are left alone."""
    names.decode_row(db, row)
    blob = row.pop("bodies", None)
    if blob is not None:
        request, response = unpack(db, bytes(blob))
        row["request_json"] = request
        if row.get("response_json") is not None:
            row["response_json"] = response
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


BODY_SELECT = "request_json, response_json, bodies, request_body, response_body"
"""What a query selects to read both bodies of a ``requests`` row (then :func:`decode_row`)."""
HAS_RESPONSE = "(response_body is not null or response_json is not null)"
"""SQL: the row has a response body (in ``bodies``, its own frame or, for older rows, text)."""


class BodyEncoder:
    """Compresses the bodies of rows the log writes; owned by the writer thread.

    Until a dictionary exists, frames are plain zstd and bodies are sampled; with
    :data:`SAMPLE_BODIES` of them a dictionary is trained, stored and used from then on (one
    another process stored meanwhile is taken instead), and the rows compressed without one
    are compressed again with it. After :data:`RETRAIN_ROWS` rows a new one is trained from
    recent bodies, so the dictionary follows the traffic.
    """

    def __init__(self) -> None:
        self.dictionary: zstandard.ZstdCompressionDict | None = None
        self._compressor = _compressor(None)
        self._samples: list[bytes] = []
        self._plain: list[str] = []
        self._since_trained = 0
        self._loaded = False

    def encode(self, db: Database, row: dict[str, Any]) -> dict[str, Any]:
        """``row`` (for ``requests``) with its non-empty bodies compressed into ``bodies``.
        Text that is not valid UTF-8 raises ``UnicodeEncodeError`` (the writer then cleans the
        row and tries again)."""
        if not self._loaded:
            self._load(db)
        out = dict(row)
        out["bodies"] = None  # every row of a batch has the same columns
        request, response = out.get("request_json"), out.get("response_json")
        request = request if isinstance(request, str) else ""
        response = response if isinstance(response, str) else None
        if not request and not response:
            return out
        data = request.encode("utf-8")
        answer = response.encode("utf-8") if response else b""
        out["bodies"] = pack(self._compressor, data, answer)
        if out.get("request_json") is not None:
            out["request_json"] = ""
        if response is not None:
            out["response_json"] = ""
        self._sample(data + answer)
        if self.dictionary is None and isinstance(out.get("id"), str):
            self._plain.append(out["id"])
        return out

    def maybe_train(self, db: Database, *, commit: bool = True) -> None:
        """Train (and store) a dictionary when enough bodies were sampled; after a commit. The
        writes are a transaction of their own, or part of the caller's with ``commit=False``."""
        if len(self._samples) < SAMPLE_BODIES:
            return
        samples, self._samples = self._samples, []
        if self.dictionary is None and self._load(db):
            self._recompress(db, commit)
            return  # another process trained one meanwhile
        try:
            trained = zstandard.train_dictionary(DICT_SIZE, list[Any](samples), level=LEVEL)
        except zstandard.ZstdError as exc:  # too little or too uniform data: go on without
            log.info("body dictionary not trained (%s)", exc)
            self._since_trained = 0
            self._plain.clear()
            return
        with db.conn if commit else contextlib.nullcontext():
            db.execute(
                "insert into body_dictionaries (id, created_at, samples, dictionary)"
                " values (?, ?, ?, ?) on conflict (id) do nothing",
                [trained.dict_id(), time.time(), len(samples), trained.as_bytes()],
            )
        self._use(trained)
        log.info("body dictionary %d trained on %d bodies", trained.dict_id(), len(samples))
        self._recompress(db, commit)

    def _recompress(self, db: Database, commit: bool) -> None:
        """Compress again, with the dictionary now in use, the rows compressed without one."""
        ids, self._plain = self._plain, []
        for start in range(0, len(ids), CONVERT_BATCH):
            chunk = ids[start : start + CONVERT_BATCH]
            marks = ", ".join("?" for _ in chunk)
            found = db.execute(
                f"select id, bodies from requests where id in ({marks}) and bodies is not null",
                chunk,
            ).fetchall()
            updates = []
            for request_id, blob in found:
                blob = bytes(blob)
                size, at = _read_varint(blob)
                if zstandard.get_frame_parameters(blob[at:], format=_FORMAT).dict_id:
                    continue
                content = decompress(db, blob[at:], magicless=True)
                updates.append([pack(self._compressor, content[:size], content[size:]), request_id])
            with db.conn if commit else contextlib.nullcontext():
                db.conn.executemany("update requests set bodies = ? where id = ?", updates)

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
        dictionary.precompute_compress(compression_params=_params())
        _dictionaries[dictionary.dict_id()] = dictionary
        self.dictionary = dictionary
        self._compressor = _compressor(dictionary)
        self._since_trained = 0
        self._samples = []


def _params() -> zstandard.ZstdCompressionParameters:
    return zstandard.ZstdCompressionParameters.from_level(
        LEVEL, format=_FORMAT, write_dict_id=True, write_checksum=False, write_content_size=True
    )


def _compressor(dictionary: zstandard.ZstdCompressionDict | None) -> zstandard.ZstdCompressor:
    return zstandard.ZstdCompressor(dict_data=dictionary, compression_params=_params())


def convert(db: Database, batch: int = CONVERT_BATCH) -> int:
    """Move every row's bodies into ``bodies`` (migration ``0015_one_body_frame``), ``batch``
    rows a statement in ``id`` order, within the caller's transaction; the rows converted."""
    encoder = BodyEncoder()
    after, converted = "", 0
    while True:
        rows = list(
            db.query(
                f"select id, {BODY_SELECT} from requests where id > ? and bodies is null"
                " order by id limit ?",
                [after, batch],
            )
        )
        if not rows:
            return converted
        after = rows[-1]["id"]
        updates = []
        for row in rows:
            text = decode_row(db, dict(row))
            encoded = encoder.encode(db, text)
            if encoded["bodies"] is not None:
                updates.append(
                    [
                        encoded["request_json"],
                        encoded["response_json"],
                        encoded["bodies"],
                        row["id"],
                    ]
                )
        db.conn.executemany(
            "update requests set request_json = ?, response_json = ?, bodies = ?,"
            " request_body = null, response_body = null where id = ?",
            updates,
        )
        converted += len(updates)
        encoder.maybe_train(db, commit=False)
