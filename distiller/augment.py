"""Step 2 (optional): synthetic examples when a task has too few.

The teacher writes new inputs in the style of logged ones (or of a task description), then
answers each one as it would a real request. Inputs that duplicate known ones and answers that
fail validation are dropped. Every teacher call counts against ``max_teacher_calls``.
"""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from understudy.distiller.config import AugmentConfig
from understudy.distiller.dataset import Example, parses_json
from understudy.distiller.dedupe import jaccard, normalise, shingles

Teacher = Callable[[list[dict[str, str]]], str]
"""Takes chat messages, returns the teacher's answer text."""

_WRITER = (
    "You write new inputs for a task. Each input must be realistic, different from the "
    "examples and from each other, and answerable the same way. Reply with a JSON array of "
    "strings and nothing else."
)


def augment(
    train: Sequence[Example],
    teacher: Teacher,
    config: AugmentConfig,
    *,
    kind: str,
    near_duplicate_threshold: float = 0.9,
    seed: int = 0,
) -> tuple[list[Example], dict[str, Any]]:
    """New synthetic examples (``source = "synthetic"``) and counts of what happened."""
    stats: Counter[str] = Counter()
    chat = [ex for ex in train if ex.messages and ex.messages[-1]["role"] == "user"]
    if not config.enabled or len(train) >= config.below or not chat:
        return [], {"teacher_calls": 0, "kept": 0}
    rng = random.Random(seed)
    known = [shingles(ex.variable_text()) for ex in train]
    labels = {normalise(ex.answer) for ex in train}
    out: list[Example] = []
    while stats["teacher_calls"] < config.max_teacher_calls and len(train) + len(out) < (
        config.target
    ):
        seeds = rng.sample(chat, min(config.seed_examples, len(chat)))
        stats["teacher_calls"] += 1
        inputs = _parse_inputs(teacher(_writer_prompt(seeds, config)))
        if not inputs:
            stats["rejected_unparsable_batch"] += 1
            continue
        for text in inputs:
            if stats["teacher_calls"] >= config.max_teacher_calls:
                break
            items = shingles(text)
            if any(jaccard(items, other) >= near_duplicate_threshold for other in known):
                stats["rejected_duplicate"] += 1
                continue
            messages = [*seeds[0].messages[:-1], {"role": "user", "content": text}]
            stats["teacher_calls"] += 1
            answer = teacher(messages).strip()
            if not _valid(answer, kind, labels):
                stats["rejected_invalid"] += 1
                continue
            known.append(items)
            out.append(
                Example(
                    id=f"synthetic-{len(out)}",
                    created_at=time.time(),
                    answer=answer,
                    messages=messages,
                    source="synthetic",
                )
            )
    return out, {**dict(stats), "kept": len(out)}


def _writer_prompt(seeds: Sequence[Example], config: AugmentConfig) -> list[dict[str, str]]:
    system = next((m["content"] for m in seeds[0].messages or [] if m["role"] == "system"), "")
    about = config.description or (f"The task's instructions: {system}" if system else "")
    examples = "\n".join(f"- {json.dumps(ex.messages[-1]['content'])}" for ex in seeds)
    return [
        {"role": "system", "content": _WRITER},
        {
            "role": "user",
            "content": f"{about}\n\nExample inputs:\n{examples}\n\n"
            f"Write {config.inputs_per_call} new inputs.",
        },
    ]


def _parse_inputs(reply: str) -> list[str]:
    start, end = reply.find("["), reply.rfind("]")
    try:
        items = json.loads(reply[start : end + 1]) if start >= 0 and end > start else None
    except ValueError:
        items = None
    if not isinstance(items, list):
        return []
    return [s.strip() for s in items if isinstance(s, str) and 0 < len(s.strip()) <= 2000]


def _valid(answer: str, kind: str, labels: set[str]) -> bool:
    if not answer:
        return False
    if kind == "json":
        return parses_json(answer)
    if kind == "label":
        return normalise(answer) in labels  # a label the task has never used is suspect
    return True
