"""Cost accounting: pure functions over token counts and prices, no I/O.

Prices are USD per million tokens. For each logged request:

* teacher-served (or a shadow call): ``teacher_cost`` = what the teacher charged for its usage;
* student-served: ``avoided`` = the teacher cost the request would have had, estimated from the
  student's token counts scaled by the task's learned teacher/student token ratio, and
  ``student_cost`` = what the student's work cost;
* ``saved`` = avoided - student cost - shadow teacher cost. A deferral (the student answered,
  the router sent the request to the teacher anyway) saves nothing and costs the student's time;
  a shadow call costs its whole teacher bill.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

PER_MILLION = 1_000_000


@dataclass(frozen=True)
class Price:
    """USD per million input (prompt) and output (completion) tokens."""

    input: float
    output: float

    def cost(self, prompt_tokens: float, completion_tokens: float) -> float:
        return (prompt_tokens * self.input + completion_tokens * self.output) / PER_MILLION


# List prices (USD per 1M tokens) of common teacher models when this table was written;
# override or extend them with ``[costs] prices``.
DEFAULT_PRICES: dict[str, Price] = {
    "gpt-4o": Price(2.50, 10.00),
    "gpt-4o-mini": Price(0.15, 0.60),
    "gpt-4.1": Price(2.00, 8.00),
    "gpt-4.1-mini": Price(0.40, 1.60),
    "gpt-4.1-nano": Price(0.10, 0.40),
    "o3": Price(2.00, 8.00),
    "o4-mini": Price(1.10, 4.40),
    "gpt-3.5-turbo": Price(0.50, 1.50),
    # Embeddings (relayed, metered): input tokens only.
    "text-embedding-3-small": Price(0.02, 0.0),
    "text-embedding-3-large": Price(0.13, 0.0),
    "text-embedding-ada-002": Price(0.10, 0.0),
}


def parse_price(text: str) -> Price:
    """``"2.50/10"`` (input/output USD per 1M tokens) -> :class:`Price`; ValueError if bad."""
    parts = [p.strip() for p in str(text).split("/")]
    if len(parts) != 2:
        raise ValueError(f"price {text!r} must be INPUT/OUTPUT USD per 1M tokens, e.g. 2.5/10")
    values = [float(p) for p in parts]
    if any(not math.isfinite(v) or v < 0 for v in values):
        raise ValueError(f"price {text!r} must be two non-negative numbers")
    return Price(values[0], values[1])


def price_table(overrides: Mapping[str, str]) -> dict[str, Price]:
    """The default table with ``overrides`` (model -> ``"in/out"``) on top."""
    return {**DEFAULT_PRICES, **{model: parse_price(v) for model, v in overrides.items()}}


DATED = re.compile(r"-(?:\d{4}-\d{2}-\d{2}|\d{4})")
"""What may follow a priced name for a dated snapshot to take its price: ``-2024-08-06``,
``-0613``."""


def find_price(table: Mapping[str, Price], model: str | None) -> Price | None:
    """The price of ``model``: an exact entry, else the entry it is a dated snapshot of
    (``gpt-4o-mini-2024-07-18`` is priced as ``gpt-4o-mini``); None when unknown. A longer
    name is never priced as a shorter one by its prefix alone: ``o3-pro`` is not ``o3``."""
    if not model:
        return None
    if model in table:
        return table[model]
    for name in sorted(table, key=len, reverse=True):
        if model.startswith(name) and DATED.fullmatch(model[len(name) :]):
            return table[name]
    return None


def highest_price(table: Mapping[str, Price]) -> Price:
    """The dearest input and the dearest output price of ``table``: what an unpriced model
    is charged while a USD budget is on, so a budget never fails open."""
    return Price(
        max((p.input for p in table.values()), default=0.0),
        max((p.output for p in table.values()), default=0.0),
    )


@dataclass(frozen=True)
class StudentCostModel:
    """What the student's work costs.

    ``per_million`` is charged on every student token (prompt and completion). With a
    ``gpu_hour`` price, the GPU time is charged too: tokens / throughput, where throughput is
    ``tokens_per_s`` when set, else the generation's own tokens per second (conservative:
    batched requests share the GPU). Both 0 (the default, a CPU box): the student is free.
    """

    per_million: float = 0.0
    gpu_hour: float = 0.0
    tokens_per_s: float = 0.0

    @property
    def free(self) -> bool:
        return self.per_million == 0 and self.gpu_hour == 0

    def cost(self, tokens: int, seconds: float) -> float:
        total = tokens * self.per_million / PER_MILLION
        if self.gpu_hour > 0 and tokens > 0:
            throughput = self.tokens_per_s or (tokens / seconds if seconds > 0 else 0.0)
            if throughput > 0:
                total += tokens / throughput * self.gpu_hour / 3600
        return total


@dataclass(frozen=True)
class TokenRatio:
    """Teacher tokens per student token for the same requests, learned from pairs."""

    prompt: float = 1.0
    completion: float = 1.0
    pairs: int = 0

    @classmethod
    def from_sums(
        cls,
        teacher_prompt: float,
        teacher_completion: float,
        student_prompt: float,
        student_completion: float,
        pairs: int,
    ) -> TokenRatio:
        """Ratios of summed tokens; 1.0 for a side with no student tokens (not known yet)."""
        prompt = teacher_prompt / student_prompt if student_prompt > 0 else 1.0
        completion = teacher_completion / student_completion if student_completion > 0 else 1.0
        return cls(prompt, completion, pairs)


UNKNOWN_RATIO = TokenRatio()


@dataclass(frozen=True)
class RequestCost:
    """The cost columns of one log row (USD)."""

    teacher_cost: float = 0.0
    student_cost: float = 0.0
    avoided: float = 0.0
    saved: float = 0.0
    estimated: bool = False
    """``avoided`` is an estimate: valued before the task's token ratio was learned."""


def teacher_served(
    price: Price | None, prompt: int, completion: int, student_cost: float = 0.0
) -> RequestCost:
    """A request the teacher answered; ``student_cost`` > 0 when the student tried first
    (a deferral, or shadow mode): that work is lost."""
    teacher = price.cost(prompt, completion) if price else 0.0
    return RequestCost(teacher_cost=teacher, student_cost=student_cost, saved=-student_cost)


def student_served(
    price: Price | None, prompt: int, completion: int, ratio: TokenRatio, student_cost: float
) -> RequestCost:
    """A request the student answered: the teacher cost avoided, less the student's cost."""
    avoided = price.cost(prompt * ratio.prompt, completion * ratio.completion) if price else 0.0
    return RequestCost(student_cost=student_cost, avoided=avoided, saved=avoided - student_cost)


def student_served_estimate(
    price: Price | None,
    prompt: int,
    completion: int,
    teacher_mean: tuple[float, float] | None,
    student_cost: float,
) -> RequestCost:
    """A request the student answered before its task's token ratio is known, valued
    conservatively: each side's tokens at most the mean of the task's logged teacher answers
    (``teacher_mean``: prompt, completion), since the student's own counts (another tokenizer)
    can be several times the teacher's. Marked as an estimate."""
    if teacher_mean is not None:
        prompt_tokens = min(float(prompt), teacher_mean[0])
        completion_tokens = min(float(completion), teacher_mean[1])
    else:
        prompt_tokens, completion_tokens = float(prompt), float(completion)
    avoided = price.cost(prompt_tokens, completion_tokens) if price else 0.0
    return RequestCost(
        student_cost=student_cost, avoided=avoided, saved=avoided - student_cost, estimated=True
    )


def shadow_call(price: Price | None, prompt: int, completion: int) -> RequestCost:
    """A teacher call made only to check the student: all of it counts against savings."""
    teacher = price.cost(prompt, completion) if price else 0.0
    return RequestCost(teacher_cost=teacher, saved=-teacher)


def projected_monthly(saved: float, span_s: float, min_span_s: float = 86400.0) -> float:
    """Savings per 30 days at the rate of ``saved`` over ``span_s`` (at least ``min_span_s``,
    so a few minutes of traffic are not extrapolated into a fortune)."""
    return saved / max(span_s, min_span_s) * 30 * 86400
