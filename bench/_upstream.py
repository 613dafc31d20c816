"""The fastest stand-in upstream we can write: a raw asyncio HTTP/1.1 server that answers every
POST with one fixed ``chat.completion`` (or, for ``"stream": true``, a fixed SSE stream; on
``/embeddings``, a fixed embeddings list; on ``/responses``, a fixed ``response`` or its typed
events), so its cost is small and equal for direct and
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
RESPONSE = {
    "id": "resp_bench",
    "object": "response",
    "created_at": 0,
    "status": "completed",
    "model": "bench-teacher-2024",
    "output": [
        {
            "id": "msg_bench",
            "type": "message",
            "status": "completed",
            "role": "assistant",
            "content": [{"type": "output_text", "text": "card_arrival", "annotations": []}],
        }
    ],
    "usage": {
        "input_tokens": 20,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": 3,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 23,
    },
}


def _typed(kind: str, n: int, **fields: object) -> bytes:
    data = json.dumps({"type": kind, "sequence_number": n, **fields})
    return f"event: {kind}\ndata: {data}\n\n".encode()


_PART = {"item_id": "msg_bench", "output_index": 0, "content_index": 0}
RESPONSE_EVENTS = [
    _typed("response.created", 0, response={**RESPONSE, "status": "in_progress", "output": []}),
    _typed("response.output_item.added", 1, output_index=0, item={**RESPONSE["output"][0]}),
    _typed("response.output_text.delta", 2, delta="card", **_PART),
    _typed("response.output_text.delta", 3, delta="_arr", **_PART),
    _typed("response.output_text.delta", 4, delta="ival", **_PART),
    _typed("response.output_text.done", 5, text="card_arrival", **_PART),
    _typed("response.output_item.done", 6, output_index=0, item=RESPONSE["output"][0]),
    _typed("response.completed", 7, response=RESPONSE),
]
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
        stream = b'"stream":true' in body.replace(b" ", b"")
        if path.endswith("/responses"):
            if stream:
                self._send_events(RESPONSE_EVENTS)
            else:
                self._send(b"application/json", json.dumps(RESPONSE).encode())
            return
        if stream:
            events = list(STREAM_EVENTS)
            if b'"include_usage":true' in body.replace(b" ", b""):
                events.append(USAGE_EVENT)
            events.append(DONE)
            self._send_events(events)
            return
        self._send(b"application/json", COMPLETION)

    def _send_events(self, events: list[bytes]) -> None:
        out = (
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
            b"transfer-encoding: chunked\r\n\r\n"
        )
        out += b"".join(_http_chunk(e) for e in events) + b"0\r\n\r\n"
        self.transport.write(out)

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
