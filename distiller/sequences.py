"""Training sequences: each example tokenized as the student will see it, cut to fit.

The prompt is rendered and tokenized the way the student's generation does it (the chat
template with the assistant turn opened, or the plain prompt), the answer is what follows it
(with the end-of-turn or end-of-text token). An example longer than ``max_length`` loses the
start of its prompt, never its answer, so no example ends up with nothing to learn from (trl
would drop those silently); one whose answer alone does not fit is left out and counted.
Generation keeps the end of a long prompt in the same way (:mod:`student.generation`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass
class Fitted:
    """How the examples fitted ``max_length``."""

    rows: list[dict[str, list[int]]]
    """trl's tokenized form: ``input_ids`` and ``completion_mask`` (1 on the answer)."""
    shortened: int = 0
    """Examples whose prompt lost its start."""
    too_long: int = 0
    """Examples left out: the answer alone is longer than ``max_length`` allows."""


def fit_sequences(rows: Sequence[Mapping[str, Any]], tokenizer: Any, max_length: int) -> Fitted:
    """``rows`` (prompt-completion, as :func:`distiller.train.training_rows` makes them) as
    token ids of at most ``max_length``: the prompt's end and the whole answer."""
    fitted = Fitted([])
    for row in rows:
        prompt, answer = encode(row, tokenizer)
        room = max_length - len(answer)
        if room < 1:  # not even one prompt token would be left
            fitted.too_long += 1
            continue
        if len(prompt) > room:
            prompt = prompt[-room:]
            fitted.shortened += 1
        fitted.rows.append(
            {
                "input_ids": prompt + answer,
                "completion_mask": [0] * len(prompt) + [1] * len(answer),
            }
        )
    return fitted


def encode(row: Mapping[str, Any], tokenizer: Any) -> tuple[list[int], list[int]]:
    """Prompt and answer token ids of one prompt-completion row."""
    if isinstance(row["prompt"], list):  # conversational: the chat template renders both
        prompt_text = tokenizer.apply_chat_template(
            row["prompt"], add_generation_prompt=True, tokenize=False
        )
        full_text = tokenizer.apply_chat_template(row["prompt"] + row["completion"], tokenize=False)
        special = False
    else:
        prompt_text = row["prompt"]
        full_text = prompt_text + row["completion"] + (tokenizer.eos_token or "")
        special = True
    prompt_ids = list(tokenizer(prompt_text, add_special_tokens=special)["input_ids"])
    full_ids = list(tokenizer(full_text, add_special_tokens=special)["input_ids"])
    shared = _common_prefix(prompt_ids, full_ids)
    return full_ids[:shared], full_ids[shared:]


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n
