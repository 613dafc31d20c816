"""The fastest stand-in upstream we can write: a raw asyncio HTTP/1.1 server that answers every
POST with one fixed ``chat.completion`` (or, for ``"stream": true``, a fixed SSE stream; on
``/embeddings``, a fixed embeddings list), so its cost is small and equal for direct and
proxied runs. ``python bench/_upstream.py --port N``."""

from __future__ import annotations

import argparse
import asyncio
import json

COMPLETION = json.dumps(
    {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 0,
        "model": "bench-teacher-2024",
        "system_fingerprint": "fp",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "card_arrival"},
                "finish_reason": "stop",
                "logprobs": None,
            }
        ],
        "usage": {"prompt_tokens": 20, "completion_tokens": 3, "total_tokens": 23},
    }
).encode()


def _chunk(delta: dict, finish: str | None = None, usage: dict | None = None) -> bytes:
    obj = {
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": "bench-teacher-2024",
        "choices": [] if usage else [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    if usage:
        obj["usage"] = usage
    return b"data: " + json.dumps(obj).encode() + b"\n\n"


STREAM_EVENTS = [
    _chunk({"role": "assistant", "content": ""}),
    _chunk({"content": "card"}),
    _chunk({"content": "_arr"}),
    _chunk({"content": "ival"}),
    _chunk({}, "stop"),
]
USAGE_EVENT = _chunk({}, usage={"prompt_tokens": 20, "completion_tokens": 3, "total_tokens": 23})
DONE = b"data: [DONE]\n\n"
EMBEDDINGS = json.dumps(
    {
        "object": "list",
        "data": [{"object": "embedding", "index": 0, "embedding": [0.0123] * 256}],
        "model": "text-embedding-3-small",
        "usage": {"prompt_tokens": 12, "total_tokens": 12},
    }
).encode()
MODELS = (
    b'{"object":"list","data":[{"id":"bench-teacher","object":"model","created":0,'
    b'"owned_by":"bench"}]}'
)


def _http_chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


class Upstream(asyncio.Protocol):
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self.transport = transport
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buffer[:end].decode("latin-1")
            length = 0
            for line in head.split("\r\n")[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            if len(self.buffer) < end + 4 + length:
                return
            body = self.buffer[end + 4 : end + 4 + length]
            self.buffer = self.buffer[end + 4 + length :]
            self.respond(head.split(" ", 2)[1], body)

    def respond(self, path: str, body: bytes) -> None:
        if path.endswith("/models"):
            self._send(b"application/json", MODELS)
            return
        if path.endswith("/embeddings"):
            self._send(b"application/json", EMBEDDINGS)
            return
        if b'"stream":true' in body.replace(b" ", b""):
            events = list(STREAM_EVENTS)
            if b'"include_usage":true' in body.replace(b" ", b""):
                events.append(USAGE_EVENT)
            events.append(DONE)
            out = (
                b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                b"transfer-encoding: chunked\r\n\r\n"
            )
            out += b"".join(_http_chunk(e) for e in events) + b"0\r\n\r\n"
            self.transport.write(out)
            return
        self._send(b"application/json", COMPLETION)

    def _send(self, ctype: bytes, payload: bytes) -> None:
        self.transport.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: "
            + ctype
            + b"\r\ncontent-length: "
            + str(len(payload)).encode()
            + b"\r\n\r\n"
            + payload
        )


async def serve(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Upstream, "127.0.0.1", port, backlog=4096)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(serve(args.port))


if __name__ == "__main__":
    main()
