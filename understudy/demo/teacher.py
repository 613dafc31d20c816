"""The replay teacher: a small OpenAI-compatible server that answers from recorded answers.

``POST /v1/chat/completions`` answers the last user message with the answer recorded for it
(GPT-4's real answers on the Banking77 test split; the gold intent for the train split); a
message it has never seen gets the intent of the known message sharing the most words. Usage
is reported as an API bills it (about four characters a token), and the server keeps the bill.
``GET /v1/models`` lists its model. It runs on 127.0.0.1 in a background thread.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MODEL = "gpt-4-0613"
GOLD_LABELS = "banking77-gold-labels"
"""The model an answer recorded from the gold labels is given under (``labelled_by``): the log
then says it is not the teacher's, and a student is never judged against it."""
_WORD = re.compile(r"[a-z0-9']+")


def estimate_tokens(text: str) -> int:
    """Tokens an API would bill for ``text``: about four characters a token."""
    return max(1, math.ceil(len(text) / 4))


def prompt_tokens(messages: Iterable[Mapping[str, Any]]) -> int:
    """Prompt tokens of a chat: each message's text plus a few tokens of framing."""
    return 3 + sum(4 + estimate_tokens(str(m.get("content") or "")) for m in messages)


@dataclass
class Bill:
    """What the teacher was asked and charged."""

    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0


class ReplayTeacher:
    """Serve recorded answers; ``answers`` maps a user message to its answer, ``labelled_by``
    a message whose answer someone else gave to the model it is answered under."""

    def __init__(
        self,
        answers: Mapping[str, str],
        model: str = MODEL,
        labelled_by: Mapping[str, str] | None = None,
    ) -> None:
        self.answers = dict(answers)
        self.model = model
        self.labelled_by = dict(labelled_by or {})
        self.bill = Bill()
        self._lock = threading.Lock()
        self._last_call = 0.0
        self._index = _WordIndex(self.answers)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        assert self._server is not None, "the replay teacher is not running"
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def start(self, port: int = 0) -> str:
        """Serve from a background thread; returns the base URL (``.../v1``)."""
        server = ThreadingHTTPServer(("127.0.0.1", port), _handler(self))
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, name="replay-teacher", daemon=True
        )
        self._thread.start()
        return self.base_url

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> ReplayTeacher:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wait_idle(self, quiet_s: float = 0.25, timeout_s: float = 30.0) -> None:
        """Wait until no call has come for ``quiet_s`` (shadow checks the gateway sends off
        the response path have landed), so the calls counted do not depend on timing."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                quiet = time.monotonic() - self._last_call
            if quiet >= quiet_s:
                return
            time.sleep(quiet_s - quiet)

    def snapshot(self) -> Bill:
        """A copy of the bill so far."""
        with self._lock:
            return dataclasses.replace(self.bill)

    # -- answering ----------------------------------------------------------------------------

    def answer(self, message: str) -> str:
        known = self.answers.get(message.strip())
        return known if known is not None else self._index.nearest(message)

    def complete(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """The chat completion for a request body; the call is added to the bill."""
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise ValueError("'messages' must be a non-empty list")
        users = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"]
        content = str(users[-1].get("content") or "") if users else ""
        text = self.answer(content)
        usage = {
            "prompt_tokens": prompt_tokens(m for m in messages if isinstance(m, dict)),
            "completion_tokens": estimate_tokens(text),
        }
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        with self._lock:
            self._last_call = time.monotonic()
            self.bill.calls += 1
            self.bill.prompt_tokens += usage["prompt_tokens"]
            self.bill.completion_tokens += usage["completion_tokens"]
        return {
            "id": "chatcmpl-" + uuid.uuid4().hex[:24],
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.labelled_by.get(content.strip(), self.model),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text, "refusal": None},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": usage,
            "system_fingerprint": "fp_replay",
        }

    def models(self) -> dict[str, Any]:
        return {
            "object": "list",
            "data": [{"id": self.model, "object": "model", "created": 0, "owned_by": "replay"}],
        }


def stream_events(completion: Mapping[str, Any], include_usage: bool) -> bytes:
    """The completion as server-sent events, the way the OpenAI API streams one."""
    choice = completion["choices"][0]
    base = {k: completion[k] for k in ("id", "created", "model", "system_fingerprint")}
    base["object"] = "chat.completion.chunk"
    deltas = [
        {"role": "assistant", "content": ""},
        {"content": choice["message"]["content"]},
        {},
    ]
    chunks = []
    for i, delta in enumerate(deltas):
        finish = "stop" if i == len(deltas) - 1 else None
        chunks.append(base | {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
    if include_usage:
        chunks.append(base | {"choices": [], "usage": completion["usage"]})
    lines = [f"data: {json.dumps(c)}\n\n" for c in chunks] + ["data: [DONE]\n\n"]
    return "".join(lines).encode()


class _WordIndex:
    """Nearest known message by shared words, for messages the recording does not hold."""

    def __init__(self, answers: Mapping[str, str]) -> None:
        self.votes: dict[str, Counter[str]] = defaultdict(Counter)
        for message, answer in answers.items():
            for word in set(_WORD.findall(message.lower())):
                self.votes[word][answer] += 1
        self.fallback = Counter(answers.values()).most_common(1)[0][0] if answers else "unknown"

    def nearest(self, message: str) -> str:
        score: Counter[str] = Counter()
        for word in set(_WORD.findall(message.lower())):
            votes = self.votes.get(word)
            if votes:
                total = sum(votes.values())
                for answer, count in votes.items():
                    score[answer] += count / total
        return score.most_common(1)[0][0] if score else self.fallback


def _handler(teacher: ReplayTeacher) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            if self.path.rstrip("/") == "/v1/models":
                self._send(200, json.dumps(teacher.models()).encode())
            else:
                self._error(404, f"Unknown request URL: GET {self.path}.")

        def do_POST(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            raw = self.rfile.read(length) if length else b""
            if self.path.rstrip("/") != "/v1/chat/completions":
                self._error(404, f"Unknown request URL: POST {self.path}.")
                return
            try:
                body = json.loads(raw)
                completion = teacher.complete(body)
            except (ValueError, AttributeError) as exc:
                self._error(400, f"Invalid request: {exc}")
                return
            if body.get("stream"):
                options = body.get("stream_options") or {}
                events = stream_events(completion, bool(options.get("include_usage")))
                self._send(200, events, "text/event-stream")
            else:
                self._send(200, json.dumps(completion).encode())

        def _error(self, status: int, message: str) -> None:
            error = {"message": message, "type": "invalid_request_error", "param": None}
            self._send(status, json.dumps({"error": error | {"code": None}}).encode())

        def _send(self, status: int, payload: bytes, ctype: str = "application/json") -> None:
            self.send_response(status)
            self.send_header("content-type", ctype)
            self.send_header("content-length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: the demo prints its own progress."""

    return Handler
