"""The misbehaving teacher: answers outside the OpenAI contract, on demand.

A misbehaviour is written ``name`` or ``name:arg`` and chosen per request with the header
``x-stub-misbehave`` (any path) or by the control script (``misbehave``: every generation
request; ``misbehave_next``: a list, one per generation request).

Whole answers in place of the real one:

- ``html[:status]``: an HTML page (status 200 unless given), ``text/html``
- ``not_json``: text that is not JSON, sent as ``application/json``
- ``array``: a JSON array, 200
- ``status:N``: a bare status (a 3xx without ``Location``; 1xx is not sendable)
- ``deep[:levels]``: a JSON object nested 100,000 levels deep (or ``levels``)
- ``drip[:ms]``: a JSON answer whose headers come at once and its bytes one every ``ms``
  (default 2000); for a stream, the events' bytes dripped the same way
- ``keepalive[:ms]``: a 200 event stream sending only ``: keep-alive`` comments, one every ``ms``
  (default 200), until the client leaves
- ``gzip_bomb[:mib]``: a gzip body expanding to ``mib`` MiB (default 1024) of JSON text
- ``huge[:mib]``: a valid chat completion whose content is ``mib`` MiB (default 200)
- ``echo_auth[:status]``: an OpenAI error (status 500 unless given) whose message repeats the
  request's ``Authorization`` header
- ``surrogate``: a 500 OpenAI error whose message holds a lone ``\\ud83d`` escape

The real answer, altered (generation paths, whole or streamed):

- ``usage_str``: ``usage.prompt_tokens`` (``input_tokens``) as the string ``"12"``
- ``usage_obj``: ``usage.total_tokens`` an object
- ``usage_huge``: ``usage.prompt_tokens`` (``input_tokens``) 10**20
- ``model_obj``: ``model`` an object
- ``sse_html``: a stream with an HTML page as its second event's data (whole: as ``html``)
"""

from __future__ import annotations

import asyncio
import functools
import struct
import zlib
from dataclasses import dataclass
from typing import Any

import msgspec

from tests.stub_faults import error_body
from tests.stub_http import SSE, Exchange

_JSON = (b"content-type", b"application/json")
_HTML = b"<html><head><title>Welcome</title></head><body><h1>It works!</h1></body></html>"

WHOLE = frozenset(
    {
        "html",
        "not_json",
        "array",
        "status",
        "deep",
        "drip",
        "keepalive",
        "gzip_bomb",
        "huge",
        "echo_auth",
        "surrogate",
    }
)
ALTERED = frozenset({"usage_str", "usage_obj", "usage_huge", "model_obj", "sse_html"})
NAMES = WHOLE | ALTERED


@dataclass(frozen=True, slots=True)
class Misbehaviour:
    name: str
    arg: int | None = None

    @property
    def whole(self) -> bool:
        """Replaces the answer (rather than altering the real one)."""
        return self.name in WHOLE

    def spec(self) -> str:
        return self.name if self.arg is None else f"{self.name}:{self.arg}"


def parse_misbehaviour(value: str) -> Misbehaviour:
    """``"html"``, ``"status:501"``, ``"drip:500"``, ..."""
    name, colon, arg = str(value).strip().lower().partition(":")
    if name not in NAMES or (colon and not arg.isdigit()):
        raise ValueError(f"unknown misbehaviour {value!r}: use one of {', '.join(sorted(NAMES))}")
    if name == "status" and not colon:
        raise ValueError("status needs a code: status:N")
    return Misbehaviour(name, int(arg) if colon else None)


# -- whole answers ---------------------------------------------------------------------------


async def answer(
    ex: Exchange,
    mis: Misbehaviour,
    *,
    stream: bool,
    authorization: str | None,
    request_id: tuple[bytes, bytes],
    valid: bytes,
) -> None:
    """Send ``mis`` in place of an answer; ``valid`` is a real answer's bytes (for ``drip``)."""
    name, arg = mis.name, mis.arg
    if name in _FIXED:
        status, content_type, body = _FIXED[name]
        return await _send(ex, arg or status, body, [(b"content-type", content_type), request_id])
    if name == "status":
        return await _status(ex, arg or 200, request_id)
    if name == "deep":
        levels = arg or 100_000
        return await _send(ex, 200, b'{"a":' + b"[" * levels + b"]" * levels + b"}", [_JSON])
    if name == "drip":
        return await _drip(ex, valid, stream, (arg or 2000) / 1000, request_id)
    if name == "keepalive":
        return await _keepalive(ex, (arg or 200) / 1000, request_id)
    if name == "gzip_bomb":
        headers = [_JSON, (b"content-encoding", b"gzip"), request_id]
        return await _send(ex, 200, gzip_bomb(arg or 1024), headers)
    if name == "huge":
        return await _send(ex, 200, huge_answer(arg or 200), [_JSON, request_id])
    if name == "echo_auth":
        status = arg or 500
        message = f"Invalid header: Authorization: {authorization}"
        body = msgspec.json.encode(error_body(status, message))
        return await _send(ex, status, body, [_JSON, request_id])
    raise ValueError(f"{name} alters an answer; it does not replace one")


_SURROGATE = (
    b'{"error":{"message":"bad \\ud83d byte","type":"server_error","param":null,"code":null}}'
)
_FIXED: dict[str, tuple[int, bytes, bytes]] = {
    "html": (200, b"text/html", _HTML),
    "sse_html": (200, b"text/html", _HTML),
    "not_json": (200, b"application/json", b"this is not JSON {"),
    "array": (200, b"application/json", b"[1, 2, 3]"),
    "surrogate": (500, b"application/json", _SURROGATE),
}


async def _send(ex: Exchange, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    length = (b"content-length", str(len(body)).encode())
    await ex.start(status, [*headers, length])
    await ex.body(body)


async def _status(ex: Exchange, status: int, request_id: tuple[bytes, bytes]) -> None:
    if status >= 400:
        body = msgspec.json.encode(error_body(status))
        return await _send(ex, status, body, [_JSON, request_id])
    await _send(ex, status, b"", [request_id])


async def _drip(
    ex: Exchange, valid: bytes, stream: bool, gap: float, request_id: tuple[bytes, bytes]
) -> None:
    kind = SSE if stream else _JSON
    headers = [kind, request_id]
    if not stream:
        headers.append((b"content-length", str(len(valid)).encode()))
    await ex.start(200, headers)
    for i in range(len(valid)):
        await ex.body(valid[i : i + 1], more=True)
        if not await ex.sleep(gap):
            return await ex.abort()
    await ex.body(b"")


async def _keepalive(ex: Exchange, gap: float, request_id: tuple[bytes, bytes]) -> None:
    await ex.start(200, [SSE, request_id])
    while True:
        await ex.body(b": keep-alive\n\n", more=True)
        if not await ex.sleep(gap):
            return await ex.abort()
        await asyncio.sleep(0)


@functools.cache
def gzip_bomb(mib: int) -> bytes:
    """``{"a": "000...0"}`` of ``mib`` MiB, gzipped (about 1 KiB per MiB).

    Each MiB of zeros is deflated once after a full flush, which makes its bytes the same every
    time, and repeated: compressing the whole GiB took 5 s here (longer than the strict
    gateway's teacher deadline on a busy machine); this takes a quarter of a second.
    """
    squeezer = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    block = b"0" * (1024 * 1024)
    start, end = b'{"a": "', b'"}'
    head = squeezer.compress(start) + squeezer.flush(zlib.Z_FULL_FLUSH)
    one = squeezer.compress(block) + squeezer.flush(zlib.Z_FULL_FLUSH)
    tail = squeezer.compress(end) + squeezer.flush()
    crc = zlib.crc32(start)
    for _ in range(mib):
        crc = zlib.crc32(block, crc)
    crc = zlib.crc32(end, crc)
    size = (len(start) + mib * len(block) + len(end)) & 0xFFFFFFFF
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"  # gzip, deflate, no name, no mtime
    return header + head + one * mib + tail + struct.pack("<II", crc, size)


@functools.cache
def huge_answer(mib: int) -> bytes:
    """A valid chat completion whose content is ``mib`` MiB of text."""
    content = "x" * (mib * 1024 * 1024)
    return msgspec.json.encode(
        {
            "id": "chatcmpl-huge",
            "object": "chat.completion",
            "created": 0,
            "model": "gpt-4o-mini-2024-07-18",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }
    )


# -- the real answer, altered ----------------------------------------------------------------


def alter(mis: Misbehaviour, obj: Any) -> Any:
    """A whole answer (or one stream chunk or event), altered by ``mis``."""
    if not isinstance(obj, dict):
        return obj
    out = dict(obj)
    if mis.name == "model_obj" and "model" in out:
        out["model"] = {}
    for key in ("usage",):
        if isinstance(out.get(key), dict):
            out[key] = _alter_usage(mis, out[key])
    if isinstance(out.get("response"), dict):  # a Responses API event
        out["response"] = alter(mis, out["response"])
    return out


def _alter_usage(mis: Misbehaviour, usage: dict[str, Any]) -> dict[str, Any]:
    out = dict(usage)
    prompt = "prompt_tokens" if "prompt_tokens" in out else "input_tokens"
    if mis.name == "usage_str":
        out[prompt] = "12"
    elif mis.name == "usage_huge":
        out[prompt] = 10**20
    elif mis.name == "usage_obj":
        out["total_tokens"] = {}
    return out


def alter_events(mis: Misbehaviour, events: list[bytes]) -> list[bytes]:
    """A stream's events (``data: ...`` and ``event: ...`` lines), altered by ``mis``."""
    if mis.name == "sse_html":
        return [*events[:1], b"data: " + _HTML + b"\n\n", *events[1:]]
    out = []
    for event in events:
        lines = []
        for line in event.split(b"\n"):
            if line.startswith(b"data: {"):
                line = b"data: " + msgspec.json.encode(alter(mis, msgspec.json.decode(line[6:])))
            lines.append(line)
        out.append(b"\n".join(lines))
    return out
