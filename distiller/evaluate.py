"""Step 4: judge a student on the held-out set and the golden set.

Agreement with the teacher uses the router's metric for the task's kind (normalised exact
match for labels, parsed equality for JSON, chrF for free text); validity uses the router's
checks (the answer ended on its own, is not empty, parses and fits the requested schema).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from understudy.distiller.classical import RATE_FOLDS
from understudy.distiller.config import GateConfig
from understudy.distiller.dataset import Example, parses_json
from understudy.distiller.generate import Generation, Prompt, StudentRunner
from understudy.router import answers_agree, extract_features, failed_check
from understudy.student.classical import fold_of, prompt_text


@dataclass
class ModelEval:
    """How one model did; lists follow the order of the held-out examples."""

    agreed: list[bool]
    valid: list[bool]
    features: list[dict[str, Any]]
    answers: list[str]
    golden: list[dict[str, Any]] = field(default_factory=list)
    latency_ms: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    weights: list[float] = field(default_factory=list)
    """Each held-out example's sample weight (the inverse of its chance to be drawn, see
    :attr:`Example.sample_weight`); empty: all 1."""

    def sample_weights(self) -> list[float]:
        """:attr:`weights`, or 1 for every example when none were recorded."""
        return list(self.weights) if self.weights else [1.0] * len(self.agreed)

    @property
    def agreement(self) -> float:
        return sum(self.agreed) / len(self.agreed) if self.agreed else 0.0

    @property
    def validity(self) -> float:
        return sum(self.valid) / len(self.valid) if self.valid else 0.0

    @property
    def golden_passed(self) -> list[bool]:
        return [bool(g["passed"]) for g in self.golden]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelEval:
        return cls(**data)


def golden_prompt(golden_input: Any, system_prompt: str | None) -> Prompt:
    """A golden input is a user message (the task's system prompt goes first) or messages."""
    if isinstance(golden_input, list):
        return Prompt(messages=[{"role": m["role"], "content": m["content"]} for m in golden_input])
    messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
    return Prompt(messages=[*messages, {"role": "user", "content": str(golden_input)}])


def evaluate_student(
    runner: StudentRunner,
    examples: Sequence[Example],
    golden: Sequence[Mapping[str, Any]],
    *,
    kind: str,
    config: GateConfig,
    system_prompt: str | None = None,
    latency_samples: int = 16,
    on_progress: Callable[[int, int], None] | None = None,
) -> ModelEval:
    """Generate answers for ``examples`` and ``golden`` and judge each one; ``on_progress``
    hears (answers generated, answers to generate) after each batch."""
    started = time.perf_counter()
    prompts = [Prompt(ex.messages, ex.prompt) for ex in examples]
    total = len(prompts) + len(golden)

    def done_by(offset: int) -> Callable[[int], None] | None:
        if on_progress is None:
            return None
        return lambda n: on_progress(offset + n, total)

    gens = runner.generate(
        prompts,
        max_new_tokens=config.max_new_tokens,
        batch_size=config.eval_batch_size,
        on_batch=done_by(0),
    )
    result = ModelEval(
        agreed=[
            answers_agree(g.text, ex.answer, kind) for g, ex in zip(gens, examples, strict=True)
        ],
        valid=[is_valid(g, kind, ex.response_format) for g, ex in zip(gens, examples, strict=True)],
        features=[_features(g, ex) for g, ex in zip(gens, examples, strict=True)],
        answers=[g.text for g in gens],
        weights=[ex.sample_weight for ex in examples],
    )
    golden_prompts = [golden_prompt(g["input"], system_prompt) for g in golden]
    golden_gens = runner.generate(
        golden_prompts,
        max_new_tokens=config.max_new_tokens,
        batch_size=config.eval_batch_size,
        on_batch=done_by(len(prompts)),
    )
    result.golden = [
        {
            "id": g["id"],
            "expected": g["expected"],
            "answer": gen.text,
            "passed": bool(answers_agree(gen.text, g["expected"], kind)),
        }
        for g, gen in zip(golden, golden_gens, strict=True)
    ]
    result.latency_ms = runner.latency_ms(
        prompts[:latency_samples], max_new_tokens=config.max_new_tokens
    )
    result.seconds = round(time.perf_counter() - started, 2)
    return result


def is_valid(gen: Generation, kind: str, response_format: Any = None) -> bool:
    """The router's validity checks (complete, not empty, JSON / schema when the request asked
    for it); a JSON task's answer must parse even when the request did not say so."""
    if failed_check(gen.text, gen.finish_reason, response_format) is not None:
        return False
    return kind != "json" or parses_json(gen.text)


def _features(gen: Generation, ex: Example) -> dict[str, Any]:
    return extract_features(
        fold=fold_of(prompt_text(ex.messages, ex.prompt), RATE_FOLDS),
        token_logprobs=gen.logprobs,
        first_token_alternatives=gen.first_alternatives,
        text=gen.text,
        finish_reason=gen.finish_reason,
        response_format=ex.response_format,
        tools=None,
    ).to_dict()
