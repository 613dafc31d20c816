"""A stand-in teacher: a small OpenAI-compatible server that answers from a table.

It can be told to misbehave, per request through ``POST /_control`` (or :meth:`control`):
``fail_next`` (a list of statuses such as 500/429/400/401, or ``"drop"`` to close the
connection), ``delay_ms`` (before answering), ``chunk_delay_ms`` (between stream events) and
``cut_stream_after`` (send that many events, then close without ``[DONE]``).

Run on its own: ``python -m tests.teacher_stub --port 9000 [--table table.json]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import uvicorn

from tests.asgi_server import ThreadedServer

DEFAULT_MODEL = "gpt-4o-mini-2024-07-18"
ERRORS = {
    400: ("invalid_request_error", "Invalid value for 'messages'."),
    401: ("invalid_request_error", "Incorrect API key provided."),
    404: ("invalid_request_error", "The model does not exist."),
    429: ("rate_limit_exceeded", "Rate limit reached."),
    500: ("server_error", "The server had an error while processing your request."),
    502: ("server_error", "Bad gateway."),
    503: ("server_error", "The engine is currently overloaded."),
}


class _Drop(Exception):
    """Close the connection without a response."""


def _tokens(text: str) -> list[str]:
    """Split into word pieces that add back up to the text."""
    out: list[str] = []
    for i, word in enumerate(text.split(" ")):
        out.append(word if i == 0 else " " + word)
    return [t for t in out if t]


class StubTeacher:
    def __init__(
        self,
        table: dict[str, Any] | None = None,
        model: str = DEFAULT_MODEL,
        latency_ms: float = 0.0,
    ) -> None:
        self.table = dict(table or {})
        self.model = model
        self.latency_ms = latency_ms
        self.requests: list[dict[str, Any]] = []
        self.served = 0
        self._state: dict[str, Any] = {}
        self.control(reset=True)
        self._runner: ThreadedServer | None = None
        self.port = 0

    # -- control ------------------------------------------------------------------------

    def control(self, reset: bool = False, **changes: Any) -> None:
        if reset:
            self._state = {
                "fail_next": [],
                "delay_ms": 0,
                "chunk_delay_ms": 0,
                "cut_stream_after": None,
            }
        for key, value in changes.items():
            if key not in self._state:
                raise ValueError(f"unknown control {key}")
            self._state[key] = list(value) if key == "fail_next" else value

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self, port: int = 0) -> str:
        self._runner = ThreadedServer(self.app)
        self.port = self._runner.start(port)
        return self.base_url

    def stop(self) -> None:
        if self._runner is not None:
            self._runner.stop()

    def __enter__(self) -> StubTeacher:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- ASGI ---------------------------------------------------------------------------

    async def app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        try:
            await self._handle(scope, receive, send)
        except _Status as exc:
            headers = [(b"retry-after", b"1")] if exc.status == 429 else []
            await _send_json(send, exc.status, _error(exc.status), headers)
        except _Drop:
            return  # no (more) response: the server closes the connection

    async def _handle(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        raw = b""
        while True:
            message = await receive()
            raw += message.get("body", b"")
            if not message.get("more_body"):
                break
        path, method = scope["path"], scope["method"]
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        if path == "/_control":
            self.control(**json.loads(raw or b"{}"))
            return await _send_json(send, 200, {"ok": True})
        body = json.loads(raw) if raw else None
        self.requests.append({"method": method, "path": path, "headers": headers, "json": body})
        await self._misbehave()
        if path == "/v1/models":
            data = [{"id": self.model, "object": "model", "created": 0, "owned_by": "stub"}]
            return await _send_json(send, 200, {"object": "list", "data": data})
        if path not in ("/v1/chat/completions", "/v1/completions") or method != "POST":
            return await _send_json(send, 404, _error(404))
        self.served += 1
        chat = path == "/v1/chat/completions"
        if body.get("stream"):
            return await self._stream(send, body, chat)
        return await _send_json(send, 200, self._completion(body, chat))

    async def _misbehave(self) -> None:
        state = self._state
        delay = state["delay_ms"] or self.latency_ms
        if delay:
            await asyncio.sleep(delay / 1000)
        if state["fail_next"]:
            failure = state["fail_next"].pop(0)
            if failure == "drop":
                raise _Drop
            raise _Status(int(failure))

    # -- answers ------------------------------------------------------------------------

    def _lookup(self, body: dict[str, Any], chat: bool) -> Any:
        if chat:
            users = [m for m in body.get("messages", []) if m.get("role") == "user"]
            key = users[-1].get("content") if users else ""
        else:
            key = body.get("prompt")
        if isinstance(key, str) and key in self.table:
            return self.table[key]
        words = key.split()[:3] if isinstance(key, str) else []
        return "ok: " + " ".join(words)

    def _answers(self, body: dict[str, Any], chat: bool) -> list[tuple[Any, str]]:
        """(content or tool call, finish_reason) per choice."""
        answer = self._lookup(body, chat)
        if isinstance(answer, dict) and "tool_call" in answer and body.get("tools"):
            return [(answer, "tool_calls")] * int(body.get("n") or 1)
        text = answer if isinstance(answer, str) else json.dumps(answer)
        finish = "stop"
        stops = body.get("stop") or []
        for stop in [stops] if isinstance(stops, str) else stops:
            if stop in text:
                text = text[: text.index(stop)]
        limit = body.get("max_completion_tokens") or body.get("max_tokens")
        pieces = _tokens(text)
        if limit and len(pieces) > limit:
            text, finish = "".join(pieces[:limit]), "length"
        return [(text, finish)] * int(body.get("n") or 1)

    def _completion(self, body: dict[str, Any], chat: bool) -> dict[str, Any]:
        choices = []
        completion_tokens = 0
        for index, (answer, finish) in enumerate(self._answers(body, chat)):
            if chat:
                message: dict[str, Any] = {"role": "assistant", "content": None, "refusal": None}
                if isinstance(answer, dict):
                    message["tool_calls"] = [_tool_call(answer["tool_call"])]
                else:
                    message["content"] = answer
                    completion_tokens += len(_tokens(answer))
                choice = {
                    "index": index,
                    "message": message,
                    "finish_reason": finish,
                    "logprobs": _logprobs(answer, body) if body.get("logprobs") else None,
                }
            else:
                choice = {"index": index, "text": answer, "finish_reason": finish, "logprobs": None}
                completion_tokens += len(_tokens(answer))
            choices.append(choice)
        return {
            "id": "chatcmpl-stub" if chat else "cmpl-stub",
            "object": "chat.completion" if chat else "text_completion",
            "created": int(time.time()),
            "model": self.model,
            "choices": choices,
            "system_fingerprint": "fp_stub",
            "usage": _usage(body, completion_tokens),
        }

    async def _stream(self, send: Any, body: dict[str, Any], chat: bool) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/event-stream")],
            }
        )
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        events = list(self._events(body, chat, include_usage))
        cut = self._state["cut_stream_after"]
        for i, event in enumerate(events):
            if cut is not None and i >= cut:
                raise _Drop  # uvicorn closes the connection mid-response
            if self._state["chunk_delay_ms"] and i:
                await asyncio.sleep(self._state["chunk_delay_ms"] / 1000)
            await send({"type": "http.response.body", "body": event, "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    def _events(self, body: dict[str, Any], chat: bool, include_usage: bool) -> Iterator[bytes]:
        base = {
            "id": "chatcmpl-stub",
            "object": "chat.completion.chunk" if chat else "text_completion",
            "created": int(time.time()),
            "model": self.model,
            "system_fingerprint": "fp_stub",
        }
        extra = {"usage": None} if include_usage else {}

        def event(choices: list[dict[str, Any]]) -> bytes:
            return (
                b"data: " + json.dumps({**base, "choices": choices, **extra}).encode() + (b"\n\n")
            )

        completion_tokens = 0
        answers = self._answers(body, chat)
        for index, (answer, finish) in enumerate(answers):
            if chat:
                yield event(
                    [
                        {
                            "index": index,
                            "delta": {"role": "assistant", "content": ""},
                            "logprobs": None,
                            "finish_reason": None,
                        }
                    ]
                )
            if isinstance(answer, dict):
                call = _tool_call(answer["tool_call"])
                args = call["function"]["arguments"]
                yield event(
                    [
                        {
                            "index": index,
                            "delta": {
                                "tool_calls": [
                                    {
                                        "index": 0,
                                        "id": call["id"],
                                        "type": "function",
                                        "function": {
                                            "name": call["function"]["name"],
                                            "arguments": "",
                                        },
                                    }
                                ]
                            },
                            "logprobs": None,
                            "finish_reason": None,
                        }
                    ]
                )
                for i in range(0, len(args), 8):
                    yield event(
                        [
                            {
                                "index": index,
                                "delta": {
                                    "tool_calls": [
                                        {"index": 0, "function": {"arguments": args[i : i + 8]}}
                                    ]
                                },
                                "logprobs": None,
                                "finish_reason": None,
                            }
                        ]
                    )
            else:
                for piece in _tokens(answer):
                    completion_tokens += 1
                    if chat:
                        lp = _logprobs(piece, body) if body.get("logprobs") else None
                        yield event(
                            [
                                {
                                    "index": index,
                                    "delta": {"content": piece},
                                    "logprobs": lp,
                                    "finish_reason": None,
                                }
                            ]
                        )
                    else:
                        yield event(
                            [
                                {
                                    "index": index,
                                    "text": piece,
                                    "finish_reason": None,
                                    "logprobs": None,
                                }
                            ]
                        )
            if chat:
                yield event(
                    [{"index": index, "delta": {}, "logprobs": None, "finish_reason": finish}]
                )
            else:
                yield event(
                    [{"index": index, "text": "", "finish_reason": finish, "logprobs": None}]
                )
        if include_usage:
            yield (
                b"data: "
                + json.dumps(
                    {**base, "choices": [], "usage": _usage(body, completion_tokens)}
                ).encode()
                + b"\n\n"
            )
        yield b"data: [DONE]\n\n"


class _Status(Exception):
    def __init__(self, status: int) -> None:
        self.status = status


def _error(status: int) -> dict[str, Any]:
    type_, message = ERRORS.get(status, ("server_error", "Error."))
    return {"error": {"message": message, "type": type_, "param": None, "code": None}}


async def _send_json(send: Any, status: int, obj: Any, headers: list | None = None) -> None:
    body = json.dumps(obj).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), *(headers or [])],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _tool_call(spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": "call_stub1",
        "type": "function",
        "function": {"name": spec["name"], "arguments": json.dumps(spec["arguments"])},
    }


def _logprobs(text: str, body: dict[str, Any]) -> dict[str, Any]:
    k = int(body.get("top_logprobs") or 0)
    content = []
    for piece in _tokens(text):
        top = [{"token": piece, "logprob": -0.01, "bytes": list(piece.encode())}]
        top += [{"token": f"alt{j}", "logprob": -3.0 - j, "bytes": None} for j in range(k - 1)]
        content.append(
            {
                "token": piece,
                "logprob": -0.01,
                "bytes": list(piece.encode()),
                "top_logprobs": top[:k],
            }
        )
    return {"content": content, "refusal": None}


def _usage(body: dict[str, Any], completion_tokens: int) -> dict[str, int]:
    prompt = json.dumps(body.get("messages") or body.get("prompt") or "")
    prompt_tokens = max(1, len(prompt) // 4)
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


@contextmanager
def running_stub(**kw: Any) -> Iterator[StubTeacher]:
    stub = StubTeacher(**kw)
    stub.start()
    try:
        yield stub
    finally:
        stub.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description="A stand-in OpenAI-compatible teacher.")
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--table", help="JSON file mapping prompts to answers")
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--model", default=DEFAULT_MODEL)
    args = parser.parse_args()
    table = json.loads(Path(args.table).read_text()) if args.table else {}
    stub = StubTeacher(table, model=args.model, latency_ms=args.latency_ms)
    uvicorn.run(
        stub.app,
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
        interface="asgi3",
        access_log=False,
    )


if __name__ == "__main__":
    main()
