"""Server-sent events: split a byte stream into events as they arrive, and rebuild the full
response object from the chunks so a streamed answer is logged like a non-streamed one (chat
and completions chunks; the Responses API's typed events)."""

from __future__ import annotations

from typing import Any

import httpx

from understudy.gateway.teacher.contract import check_part

DONE = b"[DONE]"


MAX_EVENT_BYTES = 1024 * 1024
"""Largest server-sent event taken from the teacher (OpenAI's chunks are a few KiB): a larger
one breaks the stream off (the client gets an error event, then ``[DONE]``)."""


class EventTooLarge(httpx.RemoteProtocolError):
    """The teacher sent an event larger than :data:`MAX_EVENT_BYTES` (a broken stream)."""


class EventSplitter:
    """Feed raw bytes; get back complete events (each ending in a blank line).

    Linear in the bytes fed: each byte is searched once and ``\r\n`` is normalised as it
    arrives; an event growing past ``max_event_bytes`` raises :class:`EventTooLarge`."""

    def __init__(self, max_event_bytes: int = MAX_EVENT_BYTES) -> None:
        self.max_event_bytes = max_event_bytes
        self._buffer = bytearray()
        self._scanned = 0  # bytes of the buffer already searched for a blank line
        self._cr = False  # the last chunk ended in "\r": it may start a "\r\n"

    def feed(self, data: bytes) -> list[bytes]:
        if self._cr:
            data, self._cr = b"\r" + data, False
        if data.endswith(b"\r"):
            data, self._cr = data[:-1], True
        self._buffer += data.replace(b"\r\n", b"\n")
        events: list[bytes] = []
        start = 0
        search = max(self._scanned - 1, 0)
        while (cut := self._buffer.find(b"\n\n", search)) >= 0:
            event = bytes(self._buffer[start:cut])
            if event.strip():
                events.append(event + b"\n\n")
            start = search = cut + 2
        if start:
            del self._buffer[:start]
        self._scanned = len(self._buffer)
        if self._scanned > self.max_event_bytes:
            raise EventTooLarge(
                f"the teacher sent an event over {self.max_event_bytes} bytes without an end"
            )
        return events

    @property
    def pending(self) -> bytes:
        return bytes(self._buffer) + (b"\r" if self._cr else b"")


def event_data(event: bytes) -> bytes | None:
    """The ``data:`` payload of one event (joined if multi-line), or None."""
    lines = [ln[5:].lstrip(b" ") for ln in event.split(b"\n") if ln.startswith(b"data:")]
    return b"\n".join(lines) if lines else None


class StreamAssembler:
    """Merge ``chat.completion.chunk`` / ``text_completion`` chunks into one response object."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self.meta: dict[str, Any] = {}
        self.choices: dict[int, dict[str, Any]] = {}
        self.usage: dict[str, Any] | None = None
        self.error: dict[str, Any] | None = None
        self.done = False
        self.chunks = 0

    def add(self, payload: bytes) -> dict[str, Any] | None:
        """Take one event's data; return the parsed chunk (None for ``[DONE]``). A chunk that
        is not one of this endpoint's raises :class:`TeacherContractError`."""
        if payload.strip() == DONE:
            self.done = True
            return None
        chunk = check_part(self.endpoint, payload)
        self.chunks += 1
        if "error" in chunk:
            self.error = (
                chunk["error"]
                if isinstance(chunk["error"], dict)
                else {"message": str(chunk["error"])}
            )
            return chunk
        for key in ("id", "created", "model", "system_fingerprint", "service_tier"):
            if chunk.get(key) is not None:
                self.meta[key] = chunk[key]
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        for choice in chunk.get("choices") or []:
            self._merge_choice(choice)
        return chunk

    def _merge_choice(self, choice: dict[str, Any]) -> None:
        index = choice.get("index", 0)
        slot = self.choices.setdefault(index, {"index": index, "finish_reason": None})
        if choice.get("finish_reason") is not None:
            slot["finish_reason"] = choice["finish_reason"]
        if self.endpoint == "completions":
            slot["text"] = slot.get("text", "") + (choice.get("text") or "")
            _merge_logprobs_completion(slot, choice.get("logprobs"))
            return
        message = slot.setdefault("message", {"role": "assistant", "content": None})
        delta = choice.get("delta") or {}
        if delta.get("role"):
            message["role"] = delta["role"]
        for key in ("content", "refusal", "reasoning_content"):
            if delta.get(key):
                message[key] = (message.get(key) or "") + delta[key]
        for call in delta.get("tool_calls") or []:
            _merge_tool_call(message, call)
        if delta.get("function_call"):
            fc = message.setdefault("function_call", {"name": "", "arguments": ""})
            fc["name"] += delta["function_call"].get("name") or ""
            fc["arguments"] += delta["function_call"].get("arguments") or ""
        logprobs = choice.get("logprobs")
        if logprobs:
            slot_lp = slot.setdefault("logprobs", {"content": []})
            for key in ("content", "refusal"):
                if logprobs.get(key):
                    slot_lp.setdefault(key, [])
                    slot_lp[key].extend(logprobs[key])

    def result(self) -> dict[str, Any]:
        obj = "text_completion" if self.endpoint == "completions" else "chat.completion"
        out: dict[str, Any] = {
            "id": self.meta.get("id"),
            "object": obj,
            "created": self.meta.get("created"),
            "model": self.meta.get("model"),
            "choices": [self.choices[i] for i in sorted(self.choices)],
        }
        if "system_fingerprint" in self.meta:
            out["system_fingerprint"] = self.meta["system_fingerprint"]
        if self.usage is not None:
            out["usage"] = self.usage
        return out


TERMINAL_EVENTS = ("response.completed", "response.incomplete", "response.failed")


class ResponsesAssembler:
    """The Responses API's typed events: the terminal one (``response.completed``,
    ``response.incomplete`` or ``response.failed``) carries the whole response; until it
    arrives the output items are kept as they finish, so a cut stream logs what it had."""

    def __init__(self) -> None:
        self.response: dict[str, Any] = {}
        self.items: dict[int, dict[str, Any]] = {}
        self.error: dict[str, Any] | None = None
        self.done = False
        self.chunks = 0
        self.sequence_number = -1

    @property
    def usage(self) -> dict[str, Any] | None:
        usage = self.response.get("usage")
        return usage if isinstance(usage, dict) else None

    def add(self, payload: bytes) -> dict[str, Any] | None:
        """Take one event's data; return it parsed. An event that is not one of this API's
        raises :class:`TeacherContractError`."""
        event = check_part("responses", payload)
        self.chunks += 1
        number = event.get("sequence_number")
        if isinstance(number, int):
            self.sequence_number = max(self.sequence_number, number)
        kind = event.get("type")
        response = event.get("response")
        if isinstance(response, dict):
            self.response = response
        if kind in TERMINAL_EVENTS:
            self.done = True
            if kind == "response.failed":
                error = self.response.get("error")
                self.error = error if isinstance(error, dict) else {"message": "response failed"}
        elif kind == "response.output_item.done" and isinstance(event.get("item"), dict):
            self.items[int(event.get("output_index") or 0)] = event["item"]
        elif kind == "error":
            self.error = {k: event.get(k) for k in ("message", "code", "param")}
            self.done = True
        return event

    def result(self) -> dict[str, Any]:
        out = dict(self.response)
        if not self.done or not out.get("output"):
            out["output"] = [self.items[i] for i in sorted(self.items)] or out.get("output", [])
        return out


def assembler_for(endpoint: str) -> StreamAssembler | ResponsesAssembler:
    """The assembler of ``endpoint``'s stream."""
    return ResponsesAssembler() if endpoint == "responses" else StreamAssembler(endpoint)


def _merge_tool_call(message: dict[str, Any], call: dict[str, Any]) -> None:
    calls = message.setdefault("tool_calls", [])
    index = call.get("index", len(calls))
    while len(calls) <= index:
        calls.append({"id": None, "type": "function", "function": {"name": "", "arguments": ""}})
    slot = calls[index]
    if call.get("id"):
        slot["id"] = call["id"]
    if call.get("type"):
        slot["type"] = call["type"]
    fn = call.get("function") or {}
    slot["function"]["name"] += fn.get("name") or ""
    slot["function"]["arguments"] += fn.get("arguments") or ""


def _merge_logprobs_completion(slot: dict[str, Any], logprobs: dict[str, Any] | None) -> None:
    if not logprobs:
        return
    merged = slot.setdefault(
        "logprobs", {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
    )
    for key in merged:
        if logprobs.get(key):
            merged[key].extend(logprobs[key])
