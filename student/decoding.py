"""One decoding step at a time: how :mod:`understudy.student.generation` steers ``generate``.

:class:`Picker` is a logits processor that picks every row's next token itself (greedy, or
sampled with the row's own temperature, top-p and seed) from the model's unmodified
distribution, records its log-probability and the top alternatives, and leaves only that token
possible. :class:`Stopper` ends each row at its own ``max_tokens`` or stop strings.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from understudy.student.base import StudentRequest

if TYPE_CHECKING:  # torch is imported when a model is loaded, not with this module
    import torch
    from transformers import PreTrainedTokenizerBase


@dataclass
class Row:
    """One request of a batch, encoded, with what decides where it stops."""

    request: StudentRequest
    prompt_ids: list[int]
    limit: int
    """Most new tokens: the request's ``max_tokens``, cut to the model's context."""
    generator: torch.Generator | None = None
    """A seeded ``torch.Generator`` when the row samples."""


@dataclass
class Steps:
    """What the picker recorded at each step, for the whole batch (CPU tensors)."""

    ids: list[torch.Tensor] = field(default_factory=list)
    logprobs: list[torch.Tensor] = field(default_factory=list)
    top_ids: list[torch.Tensor] = field(default_factory=list)
    top_logprobs: list[torch.Tensor] = field(default_factory=list)


class Picker:
    """A logits processor that picks each row's token itself and records its log-probability
    and the top alternatives; it leaves only the picked token possible."""

    def __init__(self, rows: Sequence[Row], steps: Steps) -> None:
        self.rows = rows
        self.steps = steps
        self.k = max(max(0, row.request.top_logprobs) for row in rows)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.Tensor:
        import torch

        logprobs = scores.float().log_softmax(dim=-1)
        chosen = logprobs.argmax(dim=-1)
        for i, row in enumerate(self.rows):
            if row.generator is not None:
                chosen[i] = _sample(logprobs[i], row.request, row.generator)
        self.steps.ids.append(chosen.cpu())
        self.steps.logprobs.append(logprobs.gather(-1, chosen[:, None]).squeeze(-1).cpu())
        if self.k:
            top = logprobs.topk(min(self.k, logprobs.shape[-1]), dim=-1)
            self.steps.top_ids.append(top.indices.cpu())
            self.steps.top_logprobs.append(top.values.cpu())
        forced = torch.full_like(scores, float("-inf"))
        return forced.scatter_(1, chosen[:, None], 0.0)


def _sample(logprobs: torch.Tensor, request: StudentRequest, generator: torch.Generator) -> int:
    import torch

    probs = (logprobs.cpu() / request.temperature).softmax(dim=-1)
    if request.top_p < 1.0:
        ordered, order = probs.sort(descending=True)
        outside = ordered.cumsum(dim=-1) - ordered > request.top_p
        ordered[outside] = 0.0
        probs = torch.zeros_like(probs).scatter_(0, order, ordered)
    return int(torch.multinomial(probs, 1, generator=generator))


class Stopper:
    """Marks a row done at its own ``max_tokens`` or once its text holds a stop string."""

    def __init__(
        self, rows: Sequence[Row], prompt_width: int, tokenizer: PreTrainedTokenizerBase
    ) -> None:
        self.rows = rows
        self.width = prompt_width
        self.tokenizer = tokenizer
        # A stop string of n characters spans at most 4n byte-level tokens.
        self.tails = [4 * max((len(s) for s in row.request.stop), default=0) + 1 for row in rows]

    def __call__(
        self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any
    ) -> torch.Tensor:
        import torch

        generated = input_ids.shape[1] - self.width
        done = [generated >= row.limit for row in self.rows]
        for i, row in enumerate(self.rows):
            if done[i] or not row.request.stop:
                continue
            tail = input_ids[i, max(self.width, input_ids.shape[1] - self.tails[i]) :]
            text = self.tokenizer.decode(tail.tolist(), skip_special_tokens=True)
            done[i] = any(s and s in text for s in row.request.stop)
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)
