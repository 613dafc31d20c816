"""The stand-in teacher's ASGI app and its state: the table, the fault script, what it
received. ``tests/teacher_stub.py`` runs it; the docstring there describes the behaviour."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import math
import secrets
import time
import zlib
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import msgspec

from tests.stub_answers import (
    Choice,
    Table,
    chat_key,
    chat_prompt_tokens,
    decide,
    default_answer,
    pieces,
)
from tests.stub_faults import Controls, Fault, error_body, parse_fault
from tests.stub_http import SSE, Exchange, read_body
from tests.stub_misbehave import Misbehaviour, alter, alter_events, parse_misbehaviour
from tests.stub_misbehave import answer as misbehave_answer
from tests.stub_passthrough import StubPassthrough
from tests.stub_responses import RESPONSES, StubResponses, response_events
from tests.stub_wire import (
    Reply,
    chat_completion,
    chat_events,
    check_request,
    text_completion,
    text_events,
)

DEFAULT_MODEL = "gpt-4o-mini-2024-07-18"
CHAT, TEXT = "/v1/chat/completions", "/v1/completions"
LEGACY_MAX_TOKENS = 16  # OpenAI's default for /v1/completions


class StubApp:
    """The server's behaviour, without the server.

    ``latency_ms`` delays every generation answer (before the first byte); ``chunk_delay_ms``
    separates stream events; ``timeout_s`` is how long a ``timeout`` or ``stall`` fault hangs;
    ``controls`` is the startup fault script that ``control(reset=True)`` returns to.
    """

    def __init__(
        self,
        table: Mapping[str, Any] | None = None,
        model: str = DEFAULT_MODEL,
        latency_ms: float = 0.0,
        *,
        models: Sequence[str] | None = None,
        chunk_delay_ms: float = 0.0,
        timeout_s: float = 30.0,
        controls: Mapping[str, Any] | None = None,
        max_requests: int = 1000,
        retry_after_s: float = 1.0,
        default: Callable[[str], str] = default_answer,
    ) -> None:
        self._table = Table(dict(table or {}), default)
        self.model = model
        self.models = list(models or [model])
        self.latency_ms = latency_ms
        self.max_requests = max_requests
        self.retry_after_s = retry_after_s
        self.fingerprint = f"fp_{zlib.crc32(model.encode()):010x}"
        self.responses = StubResponses()
        self.requests: list[dict[str, Any]] = []
        self.counts: Counter[str] = Counter()
        self._initial = {"chunk_delay_ms": chunk_delay_ms, "timeout_s": timeout_s}
        self._initial.update(controls or {})
        self.controls = Controls()
        self.control(reset=True)
        self._tag = secrets.token_hex(4)
        self._serial = itertools.count(1)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping = asyncio.Event()
        self.passthrough = StubPassthrough(
            self._new_id, lambda ex, status, obj: ex.json(status, obj, [self._request_id()])
        )

    # -- configuration and inspection ----------------------------------------------------------

    @property
    def table(self) -> dict[str, Any]:
        """The answer table; edits take effect on the next request."""
        return self._table.source

    @table.setter
    def table(self, value: Mapping[str, Any]) -> None:
        self._table = Table(dict(value), self._table.default)

    def control(self, reset: bool = False, **changes: Any) -> dict[str, Any]:
        """Change the fault script (``reset`` first restores the startup one); returns it.

        ``control(fail_next=[500, 500])``: the next two generation requests get 500s.
        """
        controls = Controls() if reset else dataclasses.replace(self.controls)
        if reset:
            controls.update(self._initial)
        controls.update(changes)
        self.controls = controls
        return controls.describe()

    @property
    def served(self) -> int:
        """Generation requests answered in full with a 200."""
        return self.counts["answered"]

    def bodies(self, path: str = CHAT) -> list[Any]:
        """The JSON bodies received on ``path``, oldest first."""
        return [r["json"] for r in self.requests if r["path"] == path]

    def clear(self) -> None:
        """Forget the recorded requests and counters."""
        self.requests.clear()
        self.counts.clear()

    # -- ASGI ----------------------------------------------------------------------------------

    async def app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        raw = b"" if StubPassthrough.reads_body(scope) else await read_body(receive)
        exchange = Exchange(receive, send, self._stopping)
        try:
            if scope["path"].startswith("/_"):
                await self._admin(exchange, scope, raw)
            else:
                await self._serve(exchange, scope, raw)
        finally:
            exchange.close()

    async def _serve(self, ex: Exchange, scope: dict[str, Any], raw: bytes) -> None:
        method, path = scope["method"], scope["path"]
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        body = self._record(method, path, scope, headers, raw)
        try:
            fault = parse_fault(headers["x-stub-fail"]) if "x-stub-fail" in headers else None
            delay_ms = float(headers.get("x-stub-delay-ms") or 0)
        except ValueError as exc:
            return await self._error(ex, 400, str(exc))
        try:
            mis = (
                parse_misbehaviour(headers["x-stub-misbehave"])
                if "x-stub-misbehave" in headers
                else None
            )
        except ValueError as exc:
            return await self._error(ex, 400, str(exc))
        keys = self.controls.accept_keys
        if keys is not None and headers.get("authorization") not in {f"Bearer {k}" for k in keys}:
            return await self._error(ex, 401, "Incorrect API key provided.", code="invalid_api_key")
        generation = method == "POST" and path in (CHAT, TEXT, RESPONSES)
        stream = generation and isinstance(body, dict) and body.get("stream") is True
        if generation:
            fault = fault or self.controls.next_fault(stream)
            mis = mis or self.controls.next_misbehaviour()
            delay_ms += self.latency_ms + self.controls.delay_ms
        if not await ex.sleep(delay_ms / 1000):
            return await ex.abort()
        if mis is not None:
            self.counts[f"misbehave:{mis.name}"] += 1
            if mis.whole or (mis.name == "sse_html" and not stream):  # a whole answer: HTML
                return await self._misbehave(ex, mis, method, path, body, headers, stream)
        if fault is not None:
            self.counts[f"fault:{_label(fault)}"] += 1
            if fault.kind not in ("cut", "stall"):
                return await self._fail(ex, fault, lambda: self._route(ex, method, path, body))
        await self._route(ex, method, path, body, fault, headers, mis)

    async def _misbehave(
        self,
        ex: Exchange,
        mis: Misbehaviour,
        method: str,
        path: str,
        body: Any,
        headers: dict[str, str],
        stream: bool,
    ) -> None:
        """Answer with ``mis`` (``tests/stub_misbehave.py``) instead of the real answer."""
        valid = b""
        if mis.name == "drip" and method == "POST" and path == CHAT and isinstance(body, dict):
            valid = self._valid_chat(body)
        await misbehave_answer(
            ex,
            mis,
            stream=stream,
            authorization=headers.get("authorization"),
            request_id=self._request_id(),
            valid=valid or b'{"object": "list", "data": []}',
        )

    async def _route(
        self,
        ex: Exchange,
        method: str,
        path: str,
        body: Any,
        cut: Fault | None = None,
        headers: dict[str, str] | None = None,
        mis: Misbehaviour | None = None,
    ) -> None:
        if method == "POST" and path in (CHAT, TEXT):
            return await self._generate(ex, path == CHAT, body, cut, mis)
        if path == RESPONSES or path.startswith(RESPONSES + "/"):
            return await self._respond(ex, method, path, body, cut, mis)
        if method == "GET" and path == "/v1/models":
            data = [_model(m) for m in self.models]
            return await self._json(ex, 200, {"object": "list", "data": data}, cut)
        if method == "GET" and path.startswith("/v1/models/"):
            name = path.removeprefix("/v1/models/")
            if name in self.models:
                return await self._json(ex, 200, _model(name), cut)
            message = f"The model `{name}` does not exist or you do not have access to it."
            return await self._error(ex, 404, message)
        if await self.passthrough.route(ex, method, path, body, headers or {}):
            return
        await self._error(ex, 404, f"Invalid URL ({method} {path})", code="unknown_url")

    async def _fail(self, ex: Exchange, fault: Fault, answer: Callable[[], Any]) -> None:
        if fault.kind == "drop":
            return await ex.abort()
        if fault.kind == "timeout":  # answer only if the client is still there after it
            if await ex.sleep(self.controls.timeout_s):
                return await answer()
            return await ex.abort()
        headers = []
        if fault.status == 429:
            headers = [
                (b"retry-after", str(math.ceil(self.retry_after_s)).encode()),
                (b"retry-after-ms", str(int(self.retry_after_s * 1000)).encode()),
            ]
        await ex.json(fault.status, error_body(fault.status), [self._request_id(), *headers])

    async def _break(self, ex: Exchange, fault: Fault) -> None:
        """End a started response early: ``stall`` hangs first, then the connection closes."""
        if fault.kind == "stall":
            await ex.sleep(self.controls.timeout_s)
        await ex.abort()

    # -- answers -------------------------------------------------------------------------------

    async def _generate(
        self,
        ex: Exchange,
        chat: bool,
        body: Any,
        cut: Fault | None,
        mis: Misbehaviour | None = None,
    ) -> None:
        problem = check_request(body, chat)
        if problem is not None:
            self.counts["invalid"] += 1
            return await self._error(ex, 400, problem.message, problem.param, problem.code)
        reply = Reply(
            id=self._new_id("chatcmpl-" if chat else "cmpl-"),
            created=int(time.time()),
            model=self.model,
            fingerprint=self.fingerprint,
            new_call_id=lambda: self._new_id("call_"),
        )
        choices, prompt_tokens, offsets = (
            self._chat_choices(body) if chat else self._text_choices(body)
        )
        if body.get("stream") is True:
            if chat:
                events = chat_events(reply, choices, body, prompt_tokens)
            else:
                events = text_events(reply, choices, body, prompt_tokens, offsets)
            return await self._stream(ex, events if mis is None else alter_events(mis, events), cut)
        if chat:
            obj = chat_completion(reply, choices, body, prompt_tokens)
        else:
            obj = text_completion(reply, choices, body, prompt_tokens, offsets)
        await self._json(ex, 200, obj if mis is None else alter(mis, obj), cut)
        if cut is None:
            self.counts["answered"] += 1

    async def _respond(
        self,
        ex: Exchange,
        method: str,
        path: str,
        body: Any,
        cut: Fault | None,
        mis: Misbehaviour | None = None,
    ) -> None:
        """The Responses API (``tests/stub_responses.py``)."""
        if method == "POST" and path == RESPONSES:
            status, obj = self.responses.answer(body, self._table, self.model, self._new_id)
            if status == 200 and body.get("stream") is True:
                events = response_events(obj)
                return await self._stream(
                    ex, events if mis is None else alter_events(mis, events), cut
                )
            await self._json(
                ex, status, obj if mis is None or status != 200 else alter(mis, obj), cut
            )
            self.counts["answered" if status == 200 and cut is None else "invalid"] += 1
            return None
        found = self.responses.route(method, path)
        if found is None:
            return await self._error(ex, 404, f"Invalid URL ({method} {path})", code="unknown_url")
        await self._json(ex, *found)

    def _valid_chat(self, body: dict[str, Any]) -> bytes:
        """The real answer to a chat request, encoded (what ``drip`` sends byte by byte)."""
        if check_request(body, True) is not None:
            return b""
        reply = Reply(
            id=self._new_id("chatcmpl-"),
            created=int(time.time()),
            model=self.model,
            fingerprint=self.fingerprint,
            new_call_id=lambda: self._new_id("call_"),
        )
        choices, prompt_tokens, _ = self._chat_choices(body)
        if body.get("stream") is True:
            return b"".join(chat_events(reply, choices, body, prompt_tokens))
        return msgspec.json.encode(chat_completion(reply, choices, body, prompt_tokens))

    def _chat_choices(self, body: dict[str, Any]) -> tuple[list[Choice], int, list[int]]:
        """The choices, prompt tokens and (for chat, no) prompt offsets of one request."""
        messages = body["messages"]
        tools = bool(body.get("tools") or body.get("functions"))
        tools = tools and body.get("tool_choice") != "none"
        choice = decide(self._table.lookup(chat_key(messages), tools), body, tools, None)
        return [choice] * (body.get("n") or 1), chat_prompt_tokens(messages), []

    def _text_choices(self, body: dict[str, Any]) -> tuple[list[Choice], int, list[int]]:
        """Legacy completions: ``n`` choices per prompt; a prompt of token ids gets the default
        answer."""
        prompt = body["prompt"]
        batch = isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt)
        n = body.get("n") or 1
        choices: list[Choice] = []
        offsets: list[int] = []
        prompt_tokens = 0
        for item in prompt if batch else [prompt]:
            text = item if isinstance(item, str) else ""
            entry = self._table.lookup(text, False)
            choices += [decide(entry, body, False, LEGACY_MAX_TOKENS)] * n
            offsets += [len(text)] * n
            prompt_tokens += len(item) if isinstance(item, list) else len(pieces(text))
        return choices, prompt_tokens, offsets

    async def _stream(self, ex: Exchange, events: list[bytes], cut: Fault | None) -> None:
        await ex.start(200, [SSE, self._request_id()])
        stop_at = None
        if cut is not None:
            after = len(events) // 2 if cut.after is None else cut.after
            stop_at = min(after, len(events) - 1)  # never [DONE]
        gap = self.controls.chunk_delay_ms / 1000
        for i, event in enumerate(events):
            if i == stop_at:
                return await self._break(ex, cut)
            if i and gap and not await ex.sleep(gap):
                return await ex.abort()
            await ex.body(event, more=True)
        await ex.body(b"")
        self.counts["answered"] += 1

    async def _json(self, ex: Exchange, status: int, obj: Any, cut: Fault | None = None) -> None:
        if cut is None:
            await ex.json(status, obj, [self._request_id()])
            return
        size = len(msgspec.json.encode(obj))
        keep = min(size // 2 if cut.after is None else cut.after, size - 1)
        await ex.json(status, obj, [self._request_id()], keep=keep)
        await self._break(ex, cut)

    async def _error(
        self,
        ex: Exchange,
        status: int,
        message: str,
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        await ex.json(status, error_body(status, message, param, code), [self._request_id()])

    # -- bookkeeping ---------------------------------------------------------------------------

    def _record(
        self,
        method: str,
        path: str,
        scope: dict[str, Any],
        headers: dict[str, str],
        raw: bytes,
    ) -> Any:
        """Keep the request (the last ``max_requests``); return its parsed JSON body or None."""
        try:
            body = msgspec.json.decode(raw) if raw else None
        except msgspec.DecodeError:
            body = None
        entry = {
            "method": method,
            "path": path,
            "query": scope.get("query_string", b"").decode("latin-1"),
            "headers": headers,
            "json": body,
            "time": time.time(),
        }
        if raw and body is None:
            entry["raw"] = raw.decode("utf-8", "replace")
        self.requests.append(entry)
        if len(self.requests) > self.max_requests:
            del self.requests[: len(self.requests) - self.max_requests]
        self.counts["requests"] += 1
        return body

    def _new_id(self, prefix: str) -> str:
        return f"{prefix}{self._tag}{next(self._serial):012x}"

    def _request_id(self) -> tuple[bytes, bytes]:
        return (b"x-request-id", self._new_id("req_").encode())

    async def _admin(self, ex: Exchange, scope: dict[str, Any], raw: bytes) -> None:
        method, path = scope["method"], scope["path"]
        if path == "/_control" and method == "POST":
            try:
                changes = msgspec.json.decode(raw) if raw else {}
                if not isinstance(changes, dict):
                    raise ValueError("the control body must be a JSON object")
                state = self.control(**changes)
            except (ValueError, TypeError, msgspec.DecodeError) as exc:
                return await self._error(ex, 400, str(exc))
            return await ex.json(200, {"controls": state})
        if path == "/_control" and method == "GET":
            return await ex.json(200, {"controls": self.controls.describe()})
        if path == "/_requests" and method == "GET":
            listing = {"object": "list", "data": list(self.requests), "counts": dict(self.counts)}
            return await ex.json(200, listing)
        if path == "/_requests" and method == "DELETE":
            self.clear()
            return await ex.json(200, {"cleared": True})
        await self._error(ex, 404, f"Invalid URL ({method} {path})", code="unknown_url")


def _model(name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": 1721172741, "owned_by": "system"}


def _label(fault: Fault) -> str:
    return str(fault.status) if fault.kind == "status" else fault.kind
