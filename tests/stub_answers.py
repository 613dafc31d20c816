"""What the stand-in teacher answers: table entries, the stop and length rules, token counts
and deterministic logprobs. Plain data in, plain data out; no I/O."""

from __future__ import annotations

import json
import re
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

_PIECE = re.compile(r"\s*\S+|\s+$")
ARG_FRAGMENT = 6  # characters of tool-call arguments per streamed fragment (one "token")
_MISSING = object()


def pieces(text: str) -> tuple[str, ...]:
    """Word pieces carrying their leading whitespace (the stub's tokens); they join to ``text``."""
    return tuple(_PIECE.findall(text))


def default_answer(key: str) -> str:
    """The answer to a prompt the table does not know: ``"ok: "`` and its first three words."""
    return "ok: " + " ".join(key.split()[:3])


@dataclass(frozen=True, slots=True)
class ToolCall:
    name: str
    arguments: str  # JSON text, as OpenAI sends it

    @property
    def fragments(self) -> tuple[str, ...]:
        """The argument text in the small pieces a stream carries."""
        args = self.arguments
        return tuple(args[i : i + ARG_FRAGMENT] for i in range(0, len(args), ARG_FRAGMENT))


@dataclass(frozen=True, slots=True)
class Entry:
    """One answer, split once: text (None for a tool-call-only entry) and tool calls."""

    text: str | None
    pieces: tuple[str, ...] = ()
    tool_calls: tuple[ToolCall, ...] = ()


def entry_from(value: Any) -> Entry:
    """A table value: a string; ``{"tool_call": {...}}`` / ``{"tool_calls": [...]}`` (with an
    optional ``"content"`` used when the request offers no tools); anything else as JSON text."""
    if isinstance(value, Mapping) and ("tool_call" in value or "tool_calls" in value):
        specs = value.get("tool_calls") or [value["tool_call"]]
        calls = tuple(_tool_call(spec) for spec in specs)
        text = value.get("content")
        return Entry(text, pieces(text) if text is not None else (), calls)
    text = value if isinstance(value, str) else json.dumps(value)
    return Entry(text, pieces(text))


def _tool_call(spec: Mapping[str, Any]) -> ToolCall:
    args = spec.get("arguments", {})
    return ToolCall(str(spec["name"]), args if isinstance(args, str) else json.dumps(args))


class Table:
    """Exact-match answers; ``source`` stays the caller's dict, so edits to it take effect."""

    def __init__(
        self, source: dict[str, Any], default: Callable[[str], str] = default_answer
    ) -> None:
        self.source = source
        self.default = default
        self._cache: dict[str, tuple[Any, Entry]] = {}

    def lookup(self, key: str, tools: bool) -> Entry:
        """The entry for ``key``; a tool-call entry only when the request offers tools."""
        value = self.source.get(key, _MISSING)
        if value is not _MISSING:
            cached = self._cache.get(key)
            if cached is None or cached[0] is not value:
                cached = self._cache[key] = (value, entry_from(value))
            entry = cached[1]
            if entry.text is not None or (tools and entry.tool_calls):
                return entry
        return entry_from(self.default(key))


@dataclass(frozen=True, slots=True)
class Choice:
    """One generated choice: content pieces or tool calls, and why it ended."""

    pieces: tuple[str, ...]
    tool_calls: tuple[ToolCall, ...]
    finish_reason: str

    @property
    def text(self) -> str:
        return "".join(self.pieces)

    @property
    def tokens(self) -> int:
        return len(self.pieces) + sum(len(c.fragments) + 1 for c in self.tool_calls)


def decide(entry: Entry, body: Mapping[str, Any], tools: bool, max_tokens: int | None) -> Choice:
    """Apply ``stop`` (cut before the first stop string) and ``max_tokens`` (-> "length")."""
    if tools and entry.tool_calls:
        return Choice((), entry.tool_calls, "tool_calls")
    text, parts = entry.text or "", entry.pieces
    cut = _before_stop(text, body.get("stop"))
    if cut != text:
        parts = pieces(cut)
    limit = body.get("max_completion_tokens") or body.get("max_tokens") or max_tokens
    if isinstance(limit, int) and 0 < limit < len(parts):
        return Choice(parts[:limit], (), "length")
    return Choice(parts, (), "stop")


def _before_stop(text: str, stop: Any) -> str:
    stops = [stop] if isinstance(stop, str) else stop or []
    ends = [text.find(s) for s in stops if isinstance(s, str) and s]
    ends = [i for i in ends if i >= 0]
    return text[: min(ends)] if ends else text


def text_of(content: Any) -> str:
    """A message's text: a string, or its ``{"type": "text"}`` parts joined by newlines."""
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence):
        parts = [p.get("text", "") for p in content if isinstance(p, Mapping)]
        return "\n".join(p for p in parts if isinstance(p, str))
    return ""


def chat_key(messages: Sequence[Any]) -> str:
    """The table key of a chat request: the last user message's text."""
    for message in reversed(messages):
        if isinstance(message, Mapping) and message.get("role") == "user":
            return text_of(message.get("content"))
    return ""


def chat_prompt_tokens(messages: Sequence[Any]) -> int:
    """A cheap deterministic count: word pieces plus 4 per message and 3 for the reply."""
    total = 3
    for message in messages:
        content = message.get("content") if isinstance(message, Mapping) else None
        total += 4 + len(pieces(text_of(content)))
    return total


def token_logprob(piece: str) -> float:
    """A fixed logprob in (-0.25, 0] per token text, so answers look confident but vary."""
    return -round((zlib.crc32(piece.encode()) % 1000) / 4000, 4)


def chat_logprobs(parts: Sequence[str], top: int) -> dict[str, Any]:
    """Chat ``logprobs``: one entry per token; ``top_logprobs`` holds ``top`` entries, the sampled
    token first, then alternatives ``"<token>#j"`` each ``j`` nats less likely."""
    return {"content": [_chat_token(p, top) for p in parts], "refusal": None}


def _chat_token(piece: str, top: int) -> dict[str, Any]:
    logprob = token_logprob(piece)
    raw = list(piece.encode())
    alternatives = [{"token": piece, "logprob": logprob, "bytes": raw}]
    for j in range(1, top):
        alt = f"{piece}#{j}"
        alternatives.append({"token": alt, "logprob": logprob - j, "bytes": list(alt.encode())})
    return {"token": piece, "logprob": logprob, "bytes": raw, "top_logprobs": alternatives}


def text_logprobs(parts: Sequence[str], top: int, offset: int) -> dict[str, Any]:
    """Legacy completions ``logprobs`` (tokens, token_logprobs, top_logprobs, text_offset)."""
    logprobs = [token_logprob(p) for p in parts]
    offsets, position = [], offset
    for piece in parts:
        offsets.append(position)
        position += len(piece)
    tops = [
        {p: lp, **{f"{p}#{j}": lp - j for j in range(1, top)}} if top else None
        for p, lp in zip(parts, logprobs, strict=True)
    ]
    return {
        "tokens": list(parts),
        "token_logprobs": logprobs,
        "top_logprobs": tops,
        "text_offset": offsets,
    }


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
    """OpenAI's ``usage`` object, details included."""
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }
