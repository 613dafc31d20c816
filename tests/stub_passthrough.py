"""The stand-in teacher's other OpenAI endpoints, the ones the gateway relays as they are:
embeddings (float and base64), moderations, files (multipart upload, list, retrieve, content,
delete), audio speech (binary, sent in pieces) and transcriptions (multipart), batches.

Uploads are read as they arrive and never held whole: each file part is counted and hashed
(``sha256``), and only a small one (up to :data:`KEEP_BYTES`) is kept to serve its content.
"""

from __future__ import annotations

import base64
import hashlib
import re
import struct
import time
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from tests.stub_answers import pieces
from tests.stub_faults import error_body
from tests.stub_http import Exchange

KEEP_BYTES = 1024 * 1024
EMBEDDING_DIMENSIONS = 8
SPEECH_CHUNK = 4096
FLAGGED_WORDS = ("kill", "hate")

_FILE = re.compile(r"^/v1/files/([^/]+)$")
_FILE_CONTENT = re.compile(r"^/v1/files/([^/]+)/content$")
_BATCH = re.compile(r"^/v1/batches/([^/]+)$")
_BATCH_CANCEL = re.compile(r"^/v1/batches/([^/]+)/cancel$")
_MULTIPART_PATHS = ("/v1/files", "/v1/audio/transcriptions", "/v1/audio/translations")


@dataclass
class Part:
    """One part of a multipart body: a field's value, or a file's size and hash."""

    name: str
    filename: str | None = None
    size: int = 0
    sha256: str = ""
    content: bytes | None = None  # kept when small
    _hash: Any = field(default_factory=hashlib.sha256, repr=False)
    _kept: bytearray | None = field(default_factory=bytearray, repr=False)

    def add(self, data: bytes) -> None:
        self.size += len(data)
        self._hash.update(data)
        if self._kept is not None:
            self._kept += data
            if len(self._kept) > KEEP_BYTES:
                self._kept = None

    def finish(self) -> None:
        self.sha256 = self._hash.hexdigest()
        self.content = bytes(self._kept) if self._kept is not None else None

    @property
    def text(self) -> str:
        return (self.content or b"").decode("utf-8", "replace")


class MultipartReader:
    """A ``multipart/form-data`` body parsed chunk by chunk; only a delimiter's worth of bytes
    is ever held back."""

    def __init__(self, boundary: bytes) -> None:
        self.delimiter = b"\r\n--" + boundary
        self.buffer = bytearray(b"\r\n")  # the first delimiter has no CRLF before it
        self.parts: list[Part] = []
        self.part: Part | None = None
        self.state = "preamble"
        self.total = 0

    def feed(self, chunk: bytes) -> None:
        self.total += len(chunk)
        self.buffer += chunk
        progress = True
        while progress and self.state != "done":
            progress = getattr(self, f"_{self.state}")()

    def _preamble(self) -> bool:
        at = self.buffer.find(self.delimiter)
        if at < 0:
            return False
        del self.buffer[: at + len(self.delimiter)]
        self.state = "after_delimiter"
        return True

    def _after_delimiter(self) -> bool:
        if len(self.buffer) < 2:
            return False
        end = bytes(self.buffer[:2]) == b"--"
        del self.buffer[:2]
        self.state = "done" if end else "headers"
        return True

    def _headers(self) -> bool:
        at = self.buffer.find(b"\r\n\r\n")
        if at < 0:
            return False
        head = bytes(self.buffer[:at]).decode("utf-8", "replace")
        del self.buffer[: at + 4]
        name = re.search(r'name="([^"]*)"', head)
        filename = re.search(r'filename="([^"]*)"', head)
        self.part = Part(name.group(1) if name else "", filename.group(1) if filename else None)
        self.state = "data"
        return True

    def _data(self) -> bool:
        assert self.part is not None
        at = self.buffer.find(self.delimiter)
        if at < 0:
            keep = len(self.delimiter) - 1
            if len(self.buffer) > keep:
                self.part.add(bytes(self.buffer[:-keep]))
                del self.buffer[:-keep]
            return False
        self.part.add(bytes(self.buffer[:at]))
        self.part.finish()
        self.parts.append(self.part)
        del self.buffer[: at + len(self.delimiter)]
        self.state = "after_delimiter"
        return True

    def field(self, name: str) -> str | None:
        return next((p.text for p in self.parts if p.name == name and p.filename is None), None)

    def file(self) -> Part | None:
        return next((p for p in self.parts if p.filename is not None), None)


async def read_multipart(receive: Any, content_type: str) -> MultipartReader | None:
    """The request's multipart body, read as it arrives (None: not multipart)."""
    match = re.search(r'boundary="?([^";]+)"?', content_type)
    if not content_type.startswith("multipart/form-data") or match is None:
        while (await receive()).get("more_body"):
            pass
        return None
    reader = MultipartReader(match.group(1).encode())
    while True:
        message = await receive()
        reader.feed(message.get("body", b""))
        if not message.get("more_body"):
            return reader


def embedding(text: str, dimensions: int) -> list[float]:
    """A deterministic vector for ``text`` (exact in float32)."""
    return [((zlib.crc32(f"{text}:{i}".encode()) % 2001) - 1000) / 1024 for i in range(dimensions)]


class StubPassthrough:
    """State and handlers of the relayed endpoints; ``route`` answers one request or returns
    False when the path is not one of them."""

    def __init__(self, new_id: Callable[[str], str], send_json: Callable[..., Awaitable[None]]):
        self.new_id = new_id
        self.send_json = send_json  # (exchange, status, obj)
        self.files: dict[str, dict[str, Any]] = {}
        self.contents: dict[str, bytes | None] = {}
        self.uploads: dict[str, Part] = {}  # file id -> the uploaded part (size, sha256)
        self.batches: dict[str, dict[str, Any]] = {}

    @staticmethod
    def reads_body(scope: dict[str, Any]) -> bool:
        """True for the uploads, whose bodies this module reads itself, as they arrive."""
        return scope["method"] == "POST" and scope["path"] in _MULTIPART_PATHS

    async def route(
        self, ex: Exchange, method: str, path: str, body: Any, headers: dict[str, str]
    ) -> bool:
        handler = self._handler(method, path)
        if handler is None:
            return False
        await handler(ex, path, body, headers)
        return True

    def _handler(self, method: str, path: str) -> Callable[..., Awaitable[None]] | None:
        table: dict[tuple[str, str], Callable[..., Awaitable[None]]] = {
            ("POST", "/v1/embeddings"): self._embeddings,
            ("POST", "/v1/moderations"): self._moderations,
            ("POST", "/v1/files"): self._upload,
            ("GET", "/v1/files"): self._list_files,
            ("POST", "/v1/audio/speech"): self._speech,
            ("POST", "/v1/audio/transcriptions"): self._transcription,
            ("POST", "/v1/batches"): self._create_batch,
            ("GET", "/v1/batches"): self._list_batches,
        }
        if (method, path) in table:
            return table[(method, path)]
        patterns = [
            ("GET", _FILE, self._get_file),
            ("DELETE", _FILE, self._delete_file),
            ("GET", _FILE_CONTENT, self._file_content),
            ("GET", _BATCH, self._get_batch),
            ("POST", _BATCH_CANCEL, self._cancel_batch),
        ]
        for verb, pattern, fn in patterns:
            if verb == method and pattern.match(path):
                return fn
        return None

    # -- embeddings and moderations -----------------------------------------------------------

    async def _embeddings(self, ex: Exchange, path: str, body: Any, headers: Any) -> None:
        if not isinstance(body, dict) or "input" not in body or "model" not in body:
            return await self._invalid(ex, "you must provide a model and an input", "input")
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        if not inputs or not all(isinstance(i, str) and i for i in inputs):
            return await self._invalid(ex, "'input' must be non-empty strings", "input")
        dims = body.get("dimensions") or EMBEDDING_DIMENSIONS
        b64 = body.get("encoding_format") == "base64"
        data = []
        for i, text in enumerate(inputs):
            vector: Any = embedding(text, dims)
            if b64:
                vector = base64.b64encode(struct.pack(f"<{dims}f", *vector)).decode()
            data.append({"object": "embedding", "index": i, "embedding": vector})
        tokens = sum(len(pieces(t)) for t in inputs)
        usage = {"prompt_tokens": tokens, "total_tokens": tokens}
        answer = {"object": "list", "data": data, "model": body["model"], "usage": usage}
        await self.send_json(ex, 200, answer)

    async def _moderations(self, ex: Exchange, path: str, body: Any, headers: Any) -> None:
        if not isinstance(body, dict) or "input" not in body:
            return await self._invalid(ex, "you must provide an input", "input")
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        results = []
        for text in inputs:
            flagged = any(w in str(text).lower() for w in FLAGGED_WORDS)
            results.append(
                {
                    "flagged": flagged,
                    "categories": {"violence": flagged, "hate": False},
                    "category_scores": {"violence": 0.9 if flagged else 0.01, "hate": 0.0},
                }
            )
        model = body.get("model") or "omni-moderation-latest"
        answer = {"id": self.new_id("modr-"), "model": model, "results": results}
        await self.send_json(ex, 200, answer)

    # -- files ----------------------------------------------------------------------------------

    async def _upload(self, ex: Exchange, path: str, body: Any, headers: dict[str, str]) -> None:
        form = await read_multipart(ex.receive, headers.get("content-type", ""))
        part = form.file() if form is not None else None
        purpose = form.field("purpose") if form is not None else None
        if form is None or part is None or not purpose:
            return await self._invalid(ex, "a multipart body with file and purpose", "file")
        file_id = self.new_id("file-")
        obj = {
            "id": file_id,
            "object": "file",
            "bytes": part.size,
            "created_at": int(time.time()),
            "filename": part.filename,
            "purpose": purpose,
            "status": "processed",
            "expires_at": None,
            "status_details": None,
        }
        self.files[file_id], self.contents[file_id], self.uploads[file_id] = obj, part.content, part
        await self.send_json(ex, 200, obj)

    async def _list_files(self, ex: Exchange, path: str, body: Any, headers: Any) -> None:
        data = list(self.files.values())
        await self.send_json(ex, 200, {"object": "list", "data": data, "has_more": False})

    async def _get_file(self, ex: Exchange, path: str, body: Any, headers: Any) -> None:
        file_id = _FILE.match(path).group(1)  # type: ignore[union-attr]
        if file_id not in self.files:
            return await self._missing(ex, f"No such File object: {file_id}")
        await self.send_json(ex, 200, self.files[file_id])

    async def _delete_file(self, ex: Exchange, path: str, body: Any, headers: Any) -> None:
        file_id = _FILE.match(path).group(1)  # type: ignore[union-attr]
        if self.files.pop(file_id, None) is None:
            return await self._missing(ex, f"No such File object: {file_id}")
        await self.send_json(ex, 200, {"id": file_id, "object": "file", "deleted": True})

    async def _file_content(self, ex: Exchange, path: str, body: Any, headers: Any) -> None:
        file_id = _FILE_CONTENT.match(path).group(1)  # type: ignore[union-attr]
        content = self.contents.get(file_id)
        if file_id not in self.files or content is None:
            return await self._missing(ex, f"No such File object: {file_id}")
        length = str(len(content)).encode()
        await ex.start(
            200, [(b"content-type", b"application/octet-stream"), (b"content-length", length)]
        )
        await ex.body(content)

    # -- audio ----------------------------------------------------------------------------------

    async def _speech(self, ex: Exchange, path: str, body: Any, headers: Any) -> None:
        if not isinstance(body, dict) or not body.get("input") or not body.get("voice"):
            return await self._invalid(ex, "you must provide an input and a voice", "input")
        audio = speech_bytes(body["input"])
        await ex.start(200, [(b"content-type", b"audio/mpeg")])  # chunked: no length
        for at in range(0, len(audio), SPEECH_CHUNK):
            await ex.body(audio[at : at + SPEECH_CHUNK], more=True)
        await ex.body(b"")

    async def _transcription(self, ex: Exchange, path: str, body: Any, headers: Any) -> None:
        form = await read_multipart(ex.receive, headers.get("content-type", ""))
        part = form.file() if form is not None else None
        if form is None or part is None or not form.field("model"):
            return await self._invalid(ex, "a multipart body with file and model", "file")
        text = f"{part.size} bytes of audio"
        usage = {"type": "tokens", "input_tokens": part.size // 100, "output_tokens": 4}
        usage["total_tokens"] = usage["input_tokens"] + 4
        await self.send_json(ex, 200, {"text": text, "usage": usage})

    # -- batches --------------------------------------------------------------------------------

    async def _create_batch(self, ex: Exchange, path: str, body: Any, headers: Any) -> None:
        if not isinstance(body, dict) or body.get("input_file_id") not in self.files:
            return await self._invalid(ex, "input_file_id must name an uploaded file", "input")
        batch_id = self.new_id("batch_")
        self.batches[batch_id] = {
            "id": batch_id,
            "object": "batch",
            "endpoint": body.get("endpoint"),
            "errors": None,
            "input_file_id": body["input_file_id"],
            "completion_window": body.get("completion_window", "24h"),
            "status": "validating",
            "output_file_id": None,
            "error_file_id": None,
            "created_at": int(time.time()),
            "request_counts": {"total": 0, "completed": 0, "failed": 0},
            "metadata": body.get("metadata"),
        }
        await self.send_json(ex, 200, self.batches[batch_id])

    async def _list_batches(self, ex: Exchange, path: str, body: Any, headers: Any) -> None:
        data = list(self.batches.values())
        await self.send_json(ex, 200, {"object": "list", "data": data, "has_more": False})

    async def _get_batch(self, ex: Exchange, path: str, body: Any, headers: Any) -> None:
        batch_id = _BATCH.match(path).group(1)  # type: ignore[union-attr]
        if batch_id not in self.batches:
            return await self._missing(ex, f"No such Batch object: {batch_id}")
        await self.send_json(ex, 200, self.batches[batch_id])

    async def _cancel_batch(self, ex: Exchange, path: str, body: Any, headers: Any) -> None:
        batch_id = _BATCH_CANCEL.match(path).group(1)  # type: ignore[union-attr]
        if batch_id not in self.batches:
            return await self._missing(ex, f"No such Batch object: {batch_id}")
        self.batches[batch_id]["status"] = "cancelling"
        await self.send_json(ex, 200, self.batches[batch_id])

    # -- errors ---------------------------------------------------------------------------------

    async def _invalid(self, ex: Exchange, message: str, param: str) -> None:
        await self.send_json(ex, 400, error_body(400, message, param, None))

    async def _missing(self, ex: Exchange, message: str) -> None:
        await self.send_json(ex, 404, error_body(404, message, "id", None))


def speech_bytes(text: str) -> bytes:
    """Deterministic "audio" for ``text``: an ID3 tag, then 1 KiB per word."""
    seed = hashlib.sha256(text.encode()).digest()
    return b"ID3\x03" + seed * (32 * max(1, len(text.split())))
