"""The wire side of a pass-through call: which headers cross the gateway each way, the path's
family and label, and what a JSON body says about its model and usage (read as it streams,
never held whole)."""

from __future__ import annotations

import json
import re
import zlib
from collections.abc import Iterable, Mapping
from typing import Any

import msgspec

from understudy.gateway.teacher.client import clamp_retry_after

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
    }
)
# Never sent to the teacher: the gateway's own (its key among them), what httpx sets itself,
# the client's cookies, and the encodings (set below to what the gateway can read).
_NOT_TO_TEACHER = frozenset({"host", "authorization", "cookie", "expect", "accept-encoding"})
# Never sent back: the teacher's cookies, its id of the call (the gateway's own is sent), and
# what the gateway's server writes itself or that names the teacher's host.
_NOT_TO_CLIENT = frozenset({"set-cookie", "x-request-id", "date", "server", "alt-svc"})
READABLE_ENCODINGS = ("gzip", "deflate")

WHOLE_BYTES = 256 * 1024  # a body of known length up to this size is read whole, not streamed
HEAD_BYTES = 1024 * 1024  # a JSON body up to this size is read whole for its usage
TAIL_BYTES = 16 * 1024  # of a larger one, the last bytes (where ``usage`` sits)
_INFLATE_STEP = 256 * 1024

_WORD = re.compile(r"^[a-z]+(?:_[a-z]+)*$")
# OpenAI's collections: the segment after one is an id (unless it is a collection itself).
COLLECTIONS = frozenset(
    {
        "assistants",
        "batches",
        "checkpoints",
        "completions",
        "containers",
        "conversations",
        "evals",
        "file_batches",
        "files",
        "items",
        "jobs",
        "messages",
        "models",
        "output_items",
        "permissions",
        "projects",
        "runs",
        "steps",
        "threads",
        "uploads",
        "users",
        "vector_stores",
        "videos",
    }
)


def family(path: str) -> str:
    """The endpoint family of a ``/v1/...`` path: its first segment (``embeddings``,
    ``files``, ``audio``, ``vector_stores``)."""
    segment = path.removeprefix("/v1/").split("/", 1)[0]
    return segment if _WORD.match(segment) else "other"


def path_label(path: str) -> str:
    """``path`` with every id replaced by ``{id}``: a segment that is not a lower-case word,
    or that follows a collection and is not one itself (``/v1/files/file-abc123/content`` ->
    ``/v1/files/{id}/content``, ``/v1/models/gpt-4o`` -> ``/v1/models/{id}``)."""
    parts = path.split("/")  # ["", "v1", ...]
    out = parts[:2]
    for i, part in enumerate(parts[2:], 2):
        named = parts[i - 1] in COLLECTIONS and part not in COLLECTIONS
        word = _WORD.match(part) is not None and len(part) <= 32
        out.append("{id}" if part and (named or not word) else part)
    return "/".join(out)


def teacher_headers(headers: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """The client's headers as the teacher gets them (authorization is the client's to set)."""
    sent = [
        (k, v)
        for k, v in headers
        if k not in HOP_BY_HOP and k not in _NOT_TO_TEACHER and not k.startswith("x-understudy-")
    ]
    asked = next((v for k, v in headers if k == "accept-encoding"), "")
    wanted = [e for e in READABLE_ENCODINGS if e in asked.lower()]
    sent.append(("accept-encoding", ", ".join(wanted) or "identity"))
    return sent


def client_headers(headers: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """The teacher's response headers as the client gets them; ``content-type`` is set by the
    response itself, ``retry-after`` clamped as on the teacher's own answers."""
    out = []
    for k, v in headers:
        name = k.lower()
        if name in HOP_BY_HOP or name in _NOT_TO_CLIENT or name == "content-type":
            continue
        if name in ("retry-after", "retry-after-ms"):
            clamped = clamp_retry_after(v, 1000 if name.endswith("-ms") else 1)
            if clamped is None:
                continue
            v = clamped
        out.append((name, v))
    return out


def usage_tokens(usage: Mapping[str, Any]) -> tuple[int | None, int | None, int | None]:
    """``(prompt, completion, total)`` tokens of a ``usage`` object, in either naming
    (``prompt_tokens`` or ``input_tokens``)."""

    def count(*names: str) -> int | None:
        for name in names:
            value = usage.get(name)
            if isinstance(value, int) and not isinstance(value, bool):
                return value
        return None

    prompt = count("prompt_tokens", "input_tokens")
    completion = count("completion_tokens", "output_tokens")
    total = count("total_tokens")
    if total is None and (prompt is not None or completion is not None):
        total = (prompt or 0) + (completion or 0)
    return prompt, completion, total


class BodyProbe:
    """What a JSON body says, read chunk by chunk: the first :data:`HEAD_BYTES` and the last
    :data:`TAIL_BYTES` of it (decoded when gzip or deflate), nothing else. ``kept`` is the
    whole body when it is at most ``keep`` bytes (0: never)."""

    def __init__(self, keep: int = 0, encoding: str | None = None) -> None:
        self.keep = keep
        self.size = 0
        self._head = bytearray()
        self._tail = bytearray()
        self._whole = True
        encoding = (encoding or "identity").strip().lower()
        self._inflate = zlib.decompressobj(32 + 15) if encoding in READABLE_ENCODINGS else None
        self._readable = encoding in ("identity", *READABLE_ENCODINGS)

    def feed(self, chunk: bytes) -> None:
        if not self._readable:
            return
        if self._inflate is None:
            self._take(chunk)
            return
        data = chunk
        try:
            while data:
                self._take(self._inflate.decompress(data, _INFLATE_STEP))
                data = self._inflate.unconsumed_tail
        except zlib.error:
            self._readable = False

    def _take(self, data: bytes) -> None:
        self.size += len(data)
        if self._whole:
            room = HEAD_BYTES - len(self._head)
            self._head += data[:room]
            if len(data) > room:
                self._whole = False
        self._tail += data
        del self._tail[:-TAIL_BYTES]

    @property
    def kept(self) -> str | None:
        if not self._readable or not self._whole or not 0 < self.size <= self.keep:
            return None
        return bytes(self._head).decode("utf-8", "replace")

    def parsed(self) -> Any:
        """The whole body decoded (None when it was too large or is not JSON)."""
        if not self._readable or not self._whole or not self._head:
            return None
        try:
            return msgspec.json.decode(bytes(self._head))
        except msgspec.DecodeError:
            return None

    def model_and_usage(self) -> tuple[str | None, Mapping[str, Any] | None]:
        """The answer's ``model`` and ``usage``: from the whole body, or from its last bytes
        when it was larger than :data:`HEAD_BYTES`."""
        if not self._readable:
            return None, None
        if self._whole:
            body = self.parsed()
            if not isinstance(body, dict):
                return None, None
            model, usage = body.get("model"), body.get("usage")
        else:
            tail = bytes(self._tail).decode("utf-8", "replace")
            model, usage = _last_value(tail, "model"), _last_value(tail, "usage")
        return (
            model if isinstance(model, str) else None,
            usage if isinstance(usage, dict) else None,
        )

    def error_text(self, status: int) -> str:
        body = self.parsed()
        error = body.get("error") if isinstance(body, dict) else None
        if isinstance(error, dict) and error.get("message"):
            return f"teacher HTTP {status}: {str(error['message'])[:1000]}"
        return f"teacher HTTP {status}"


def _last_value(text: str, key: str) -> Any:
    """The JSON value of the last ``"key":`` in ``text`` (None when absent or cut)."""
    at = text.rfind(f'"{key}"')
    if at < 0:
        return None
    colon = text.find(":", at + len(key) + 2)
    if colon < 0:
        return None
    start = colon + 1
    while start < len(text) and text[start] in " \t\r\n":
        start += 1
    try:
        value, _ = json.JSONDecoder().raw_decode(text, start)
    except ValueError:
        return None
    return value
