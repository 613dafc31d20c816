"""One request on its way through serving: which endpoint, who asked, the validated body and
the log row being filled in."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from understudy.gateway.protocol import (
    WireRequest,
    validate_chat,
    validate_completion,
    validate_responses,
)
from understudy.storage.records import RequestRecord


@dataclass(frozen=True)
class Endpoint:
    name: str  # "chat.completions", "completions" or "responses": the log's endpoint column
    path: str  # the teacher path
    validate: Callable[[dict[str, Any]], WireRequest]


CHAT = Endpoint("chat.completions", "/chat/completions", validate_chat)
COMPLETIONS = Endpoint("completions", "/completions", validate_completion)
RESPONSES = Endpoint("responses", "/responses", validate_responses)


@dataclass
class RequestContext:
    request_id: str
    authorization: str | None
    api_key_id: str | None
    task_header: str | None
    forward_headers: dict[str, str]
    started: float = field(default_factory=time.perf_counter)
    created_at: float = field(default_factory=time.time)
    teacher_s: float = 0.0  # time spent waiting on the teacher
    student_s: float = 0.0  # time spent generating the student's answer

    def elapsed_ms(self) -> float:
        return (time.perf_counter() - self.started) * 1000


@dataclass
class Call:
    """One request on its way through the pipeline."""

    endpoint: Endpoint
    ctx: RequestContext
    raw: bytes
    body: dict[str, Any]  # as the client sent it: unknown fields go to the teacher untouched
    req: WireRequest
    record: RequestRecord
    headers: dict[str, str]  # the response headers gathered so far
    # Responses: the body the teacher gets when not ``raw`` (a chain expanded), the
    # conversation as the student reads it, and why the student may not answer, if known early.
    upstream: bytes | None = None
    messages: list[dict[str, Any]] | None = None
    no_student: str | None = None

    @property
    def teacher_body(self) -> bytes:
        return self.raw if self.upstream is None else self.upstream
