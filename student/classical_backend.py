"""Serving classical students, beside the configured engine.

:class:`ClassicalBackend` answers with a :class:`~understudy.student.classical.ClassicalModel`
(or, cross-fitted, the model of the request's fold) in this process: the label, one "token"
carrying its log-probability, the next labels as alternatives. :class:`EngineSwitch` is the
backend serving uses: a model whose directory is a classical student goes to the classical
backend, any other to the configured engine (local transformers or vLLM), which is only built
when such a model first needs it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

from understudy.student.base import (
    StudentAnswer,
    StudentBackend,
    StudentError,
    StudentModel,
    StudentRequest,
    TokenAlternative,
)
from understudy.student.classical import Classifier, is_classical, load_classical, prompt_text


class ClassicalBackend(StudentBackend):
    """Classical students in this process (loading in a worker thread; answering takes well
    under a millisecond, so it runs on the event loop)."""

    name = "classical"

    def __init__(self) -> None:
        self.models: dict[str, Classifier] = {}

    async def load(self, model: StudentModel) -> None:
        if model.name in self.models:
            return
        try:
            self.models[model.name] = await asyncio.to_thread(load_classical, model.base)
        except Exception as exc:  # any loading failure means "cannot serve it"
            raise StudentError(f"could not load the classical student {model.base}: {exc}") from exc

    async def unload(self, model: StudentModel) -> None:
        self.models.pop(model.name, None)

    async def generate(self, request: StudentRequest) -> StudentAnswer:
        classifier = self.models.get(request.model.name)
        if classifier is None:
            await self.load(request.model)
            classifier = self.models[request.model.name]
        return answer(classifier, request)

    async def close(self) -> None:
        self.models.clear()


def answer(classifier: Classifier, request: StudentRequest) -> StudentAnswer:
    """The most likely label as a one-token answer with its alternatives."""
    started = time.perf_counter()
    text = prompt_text(request.messages, request.prompt)
    ranked = classifier.predict([text], top_k=max(1, request.top_logprobs))[0]
    label, logprob = ranked[0]
    return StudentAnswer(
        text=label,
        token_ids=[classifier.labels.index(label)],
        tokens=[label],
        logprobs=[logprob],
        top_logprobs=[[TokenAlternative(name, lp) for name, lp in ranked]],
        finish_reason="stop",
        prompt_tokens=len(text.split()),
        completion_tokens=1,
        latency_ms=(time.perf_counter() - started) * 1000,
    )


class ClassicalGenerator:
    """Offline answering for evaluation, shaped like the local engine's generator."""

    device = "cpu"

    def __init__(self, path: str | Path) -> None:
        try:
            self.model = load_classical(path)
        except Exception as exc:
            raise StudentError(f"could not load the classical student {path}: {exc}") from exc

    def generate_each(self, requests: list[StudentRequest]) -> list[StudentAnswer]:
        return [answer(self.model, r) for r in requests]


class EngineSwitch(StudentBackend):
    """Classical students to the classical backend, the others to the configured engine."""

    def __init__(self, make_primary: Callable[[], StudentBackend]) -> None:
        self.classical = ClassicalBackend()
        self._make_primary = make_primary
        self._primary: StudentBackend | None = None
        self.name = "switch"

    @property
    def primary(self) -> StudentBackend:
        if self._primary is None:
            self._primary = self._make_primary()
            self.name = self._primary.name
        return self._primary

    def _for(self, model: StudentModel) -> StudentBackend:
        return self.classical if _is_classical(model) else self.primary

    async def load(self, model: StudentModel) -> None:
        await self._for(model).load(model)

    async def unload(self, model: StudentModel) -> None:
        if _is_classical(model):
            await self.classical.unload(model)
        elif self._primary is not None:
            await self._primary.unload(model)

    async def generate(self, request: StudentRequest) -> StudentAnswer:
        return await self._for(request.model).generate(request)

    async def close(self) -> None:
        await self.classical.close()
        if self._primary is not None:
            await self._primary.close()

    def __getattr__(self, name: str) -> object:
        return getattr(self.primary, name)


def _is_classical(model: StudentModel) -> bool:
    return model.adapter_path is None and is_classical(Path(model.base))
