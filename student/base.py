"""The one interface every student engine implements.

A backend turns a chat (or plain-prompt) request into a :class:`StudentAnswer` carrying the
text, the token ids, each generated token's log-probability (and top-k alternatives where the
engine gives them), usage and latency. The router judges the answer from these alone.
"""

from __future__ import annotations

import abc
import contextlib
import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class StudentModel:
    """Which weights answer: a base model (hub id or path) and optionally a LoRA adapter.

    ``name`` is the immutable serving name, e.g. ``"support-intent@v3"``; it is never reused.
    """

    name: str
    base: str
    adapter_path: str | None = None


@dataclass
class StudentRequest:
    """What the student is asked: chat ``messages`` or a plain ``prompt`` (completions)."""

    model: StudentModel
    messages: list[dict[str, Any]] | None = None
    prompt: str | None = None
    max_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    top_logprobs: int = 5


@dataclass
class TokenAlternative:
    token: str
    logprob: float


@dataclass
class StudentAnswer:
    text: str
    token_ids: list[int]
    tokens: list[str]
    logprobs: list[float]
    # top_logprobs[i] are the k most likely tokens at step i (may be empty lists).
    top_logprobs: list[list[TokenAlternative]]
    finish_reason: str  # "stop" or "length"
    prompt_tokens: int
    completion_tokens: int
    latency_ms: float


class StudentBackend(abc.ABC):
    """A student engine. Implementations must never block the event loop."""

    name: str = "abstract"

    @abc.abstractmethod
    async def generate(self, request: StudentRequest) -> StudentAnswer:
        """Generate one answer (greedy unless temperature > 0) with token log-probabilities."""

    async def load(self, model: StudentModel) -> None:  # noqa: B027 - optional hook
        """Make ``model`` ready to serve (warm it up, load its adapter). Idempotent."""

    async def unload(self, model: StudentModel) -> None:  # noqa: B027 - optional hook
        """Release ``model``. Idempotent; unloading an unknown model is not an error."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release every resource the backend holds."""

    async def swap(
        self,
        old: StudentModel | None,
        new: StudentModel,
        switch: Callable[[], Awaitable[None] | None] | None = None,
    ) -> None:
        """Promote ``new`` over ``old``: load ``new``, call ``switch``, then unload ``old``.

        Requests switched by ``switch`` always find their model loaded. If it raises,
        ``new`` is unloaded again and ``old`` keeps serving. An error while unloading ``old``
        is raised after ``new`` already serves: it only means ``old`` is still loaded.
        """
        await self.load(new)
        if switch is not None:
            try:
                result = switch()
                if inspect.isawaitable(result):
                    await result
            except Exception:
                if old is None or old.name != new.name:
                    # The switch's own error is the one worth raising.
                    with contextlib.suppress(StudentError):
                        await self.unload(new)
                raise
        if old is not None and old.name != new.name:
            await self.unload(old)


class StudentError(Exception):
    """The student could not produce an answer (the request then goes to the teacher)."""
