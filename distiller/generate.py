"""Offline generation for evaluating a student: the serving engine, in batches.

Prompts go through the same code the ``local`` student serves with
(:mod:`understudy.student.generation`): the tokenizer's chat template, greedy decoding that stops
at the end-of-turn token, each generated token's log-probability and the top alternatives of
the first, so the features the router is calibrated on are the ones it sees when serving.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from understudy.student.base import StudentAnswer, StudentModel, StudentRequest

TOP_K = 5


@dataclass
class Generation:
    text: str
    logprobs: list[float]
    """Log-probability of each generated token (the end-of-turn token excluded)."""
    first_alternatives: list[float]
    """Log-probabilities of the ``TOP_K`` most likely first tokens."""
    finish_reason: str
    """``stop`` (end-of-turn reached) or ``length``."""

    @classmethod
    def from_answer(cls, answer: StudentAnswer) -> Generation:
        first = answer.top_logprobs[0] if answer.top_logprobs else []
        return cls(
            text=answer.text.strip(),
            logprobs=list(answer.logprobs),
            first_alternatives=[alt.logprob for alt in first],
            finish_reason=answer.finish_reason,
        )


@dataclass
class Prompt:
    messages: list[dict[str, str]] | None = None
    prompt: str | None = None


class StudentRunner:
    """A loaded student (full model, or base plus LoRA adapter) that generates in batches."""

    def __init__(self, weights: str, adapter_path: str | None = None, device: str = "auto"):
        from understudy.student.classical import is_classical
        from understudy.student.classical_backend import ClassicalGenerator
        from understudy.student.generation import load_generator

        self.model = StudentModel(name="offline", base=weights, adapter_path=adapter_path)
        self.generator: Any
        if adapter_path is None and is_classical(weights):
            self.generator = ClassicalGenerator(weights)
        else:
            self.generator = load_generator(weights, adapter_path, device)
        self.device = self.generator.device

    def request(self, prompt: Prompt, max_new_tokens: int) -> StudentRequest:
        if prompt.messages is not None:
            return StudentRequest(
                self.model, messages=prompt.messages, max_tokens=max_new_tokens, top_logprobs=TOP_K
            )
        return StudentRequest(
            self.model, prompt=prompt.prompt or "", max_tokens=max_new_tokens, top_logprobs=TOP_K
        )

    def generate(
        self,
        prompts: Sequence[Prompt],
        *,
        max_new_tokens: int = 64,
        batch_size: int = 32,
        on_batch: Callable[[int], None] | None = None,
    ) -> list[Generation]:
        """Answers to ``prompts`` in batches; ``on_batch`` hears how many are done after each."""
        out: list[Generation] = []
        for start in range(0, len(prompts), batch_size):
            out += self._batch(prompts[start : start + batch_size], max_new_tokens)
            if on_batch is not None:
                on_batch(len(out))
        return out

    def latency_ms(self, prompts: Sequence[Prompt], *, max_new_tokens: int = 64) -> dict[str, Any]:
        """Single-request generation time over ``prompts`` (p50, p95, mean in ms)."""
        times = []
        for prompt in prompts:
            started = time.perf_counter()
            self._batch([prompt], max_new_tokens)
            times.append((time.perf_counter() - started) * 1000)
        if not times:
            return {"p50": None, "p95": None, "mean": None, "n": 0}
        ordered = sorted(times)
        return {
            "p50": round(statistics.median(ordered), 2),
            "p95": round(ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))], 2),
            "mean": round(statistics.fmean(ordered), 2),
            "n": len(ordered),
        }

    def _batch(self, prompts: Sequence[Prompt], max_new_tokens: int) -> list[Generation]:
        """A prompt the student cannot take gets an empty answer: it fails the validity
        checks, as the router would send it to the teacher. (A prompt longer than the
        student's context keeps its end, as in training.)"""
        requests = [self.request(p, max_new_tokens) for p in prompts]
        return [
            Generation.from_answer(result)
            if isinstance(result, StudentAnswer)
            else Generation("", [], [], "length")
            for result in self.generator.generate_each(requests)
        ]
