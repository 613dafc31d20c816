"""Step 1: the training and held-out sets of one task, built from the request log.

Teacher answers (served and shadow; chat, completions and Responses API exchanges alike, a
Responses chain expanded into its whole conversation) are read in time order; errored, cut,
truncated, empty, tool-calling and (for JSON tasks) unparsable answers are filtered out;
feedback is applied (a correction replaces the answer, a negative score drops the example);
secrets and configured PII are scrubbed; exact and near-duplicate prompts are removed (the
newest copy is kept); the newest slice of examples drawn uniformly from traffic becomes the
held-out set (audits, teacher answers logged while no student routed the task, and shadow
checks weighted by the inverse of their chance to be drawn, :mod:`distiller.sampling`; never
deferrals, which are the hard requests). Failure cases carry
``weight = failure_weight``.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from understudy.distiller.config import DatasetConfig
from understudy.distiller.dedupe import near_duplicates, normalise
from understudy.distiller.sampling import UNIFORM, Draws, how_drawn
from understudy.distiller.scrub import Scrubber
from understudy.storage.distill_queries import failure_request_ids, iter_log_rows, latest_feedback
from understudy.storage.responses import find_response
from understudy.student.conversation import (
    Turn,
    exchange_answer,
    exchange_messages,
    requested_format,
)

if TYPE_CHECKING:
    import sqlite_utils


@dataclass
class Example:
    """One prompt and the answer the student should give."""

    id: str
    created_at: float
    answer: str
    messages: list[dict[str, str]] | None = None
    """The chat prompt (every message before the answer); None for completions."""
    prompt: str | None = None
    """The completions prompt; None for chat."""
    source: str = "teacher"
    """``teacher``, ``shadow``, ``correction`` (a client's, through ``/v1/feedback``),
    ``reviewed`` (a correction given with the admin key) or ``synthetic``."""
    failure: bool = False
    weight: int = 1
    response_format: dict[str, Any] | None = None
    uniform: bool = True
    """Drawn from the task's traffic regardless of the router: an audit, a shadow check, or a
    teacher answer logged while no student routed the task. Only these are held out to
    calibrate and judge a student."""
    sample_weight: float = 1.0
    """Inverse of the chance it was drawn, relative to an audit (:mod:`distiller.sampling`):
    below 1 for audits and shadow checks of requests the student served."""
    teacher: str | None = None
    """The model that gave the answer (the teacher's ``model``), None when no teacher did (a
    correction of a student answer) or the log does not say."""

    def prompt_text(self) -> str:
        if self.messages is None:
            return self.prompt or ""
        return "\n".join(f"{m['role']}: {m['content']}" for m in self.messages)

    def variable_text(self) -> str:
        """The part of the prompt that varies between requests (not the system prompt)."""
        if self.messages is None:
            return self.prompt or ""
        return "\n".join(m["content"] for m in self.messages if m["role"] not in _FIXED_ROLES)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Example:
        return cls(**data)


@dataclass
class Dataset:
    task: str
    kind: str
    """How answers are compared: ``label``, ``json`` or ``text``."""
    train: list[Example]
    eval: list[Example]
    stats: dict[str, Any] = field(default_factory=dict)
    system_prompt: str | None = None
    """The task's most common system prompt (given to golden inputs that have none)."""

    def training_rows(self) -> list[Example]:
        """The training set with each example repeated ``weight`` times, in time order."""
        return repeated(self.train)


def repeated(examples: Iterable[Example]) -> list[Example]:
    """``examples`` with each one repeated ``weight`` times, in order."""
    return [ex for ex in examples for _ in range(max(1, ex.weight))]


_FIXED_ROLES = ("system", "developer")


def build_dataset(
    db: sqlite_utils.Database, task: str, config: DatasetConfig, *, kind: str = "auto"
) -> Dataset:
    """Read the log of ``task`` and return its deduplicated, filtered, split dataset."""
    stats: Counter[str] = Counter()
    failures = failure_request_ids(db, task)
    feedback = latest_feedback(db, task)
    # Rows are streamed: only the examples made of them are held, never the rows themselves.
    rows = _counted(iter_log_rows(db, task, limit=config.max_examples), stats)
    draws = Draws()
    examples = list(_examples(rows, failures, feedback, config, stats, log_turns(db), draws))
    for ex in examples:
        ex.sample_weight = draws.weight(ex.id) or 1.0
    if kind == "auto":
        kind = infer_kind(examples)
    if kind == "json":
        kept = [ex for ex in examples if parses_json(ex.answer)]
        stats["dropped_invalid_json"] = len(examples) - len(kept)
        examples = kept
    examples = _dedupe(examples, config.near_duplicate_threshold, stats)
    teachers = live_teachers(examples)
    train, held_out = split_by_time(examples, config, teachers)
    # A client's correction may train, but never judges: the held-out slice is what the gates
    # certify with, and a client could otherwise relabel it.
    unreviewed = [ex for ex in held_out if ex.source == "correction"]
    if unreviewed:
        held_out = [ex for ex in held_out if ex.source != "correction"]
        train = train + unreviewed
        stats["corrections_kept_out_of_eval"] = len(unreviewed)
    for ex in train:
        ex.weight = config.failure_weight if ex.failure else 1
    dataset = Dataset(task, kind, train, held_out, system_prompt=common_system_prompt(examples))
    dataset.stats = {
        **dict(stats),
        "kind": kind,
        "examples": len(examples),
        "train": len(train),
        "train_rows": len(dataset.training_rows()),
        "eval": len(held_out),
        "failures_in_train": sum(ex.failure for ex in train),
        "uniform": sum(ex.uniform for ex in examples),
        "teacher": newest_teacher(examples),
        "live_teachers": sorted(teachers),
        "uniform_other_teachers": sum(ex.uniform and not judges(ex, teachers) for ex in examples),
        "corrections": sum(ex.source in ("correction", "reviewed") for ex in examples),
        "corrections_reviewed": sum(ex.source == "reviewed" for ex in examples),
        "sources": dict(Counter(ex.source for ex in examples)),
        "window": _window(train, held_out),
    }
    return dataset


def split_by_time(
    examples: list[Example], config: DatasetConfig, teachers: frozenset[str] | None = None
) -> tuple[list[Example], list[Example]]:
    """The newest slice of uniform examples (:attr:`Example.uniform`) of the live teachers
    (``teachers``, default :func:`live_teachers` of ``examples``) is held out; the rest
    trains. Input must be in time order."""
    n = len(examples)
    n_eval = max(config.eval_min, round(n * config.eval_fraction))
    n_eval = min(n_eval, config.eval_max, n // 2)
    if teachers is None:
        teachers = live_teachers(examples)
    uniform = [i for i, ex in enumerate(examples) if judges(ex, teachers)]
    held = set(uniform[len(uniform) - n_eval :]) if n_eval else set()
    train = [ex for i, ex in enumerate(examples) if i not in held]
    return train, [ex for i, ex in enumerate(examples) if i in held]


GONE_CHANCE = 0.001
"""How unlikely a model's silence since its last answer must be, at the share of the answers it
gave until then, before :func:`live_teachers` counts it as replaced."""


def live_teachers(examples: Sequence[Example]) -> frozenset[str]:
    """The teacher models the traffic gets now: the model of the newest teacher answer that
    names one, and each other model whose silence since its last answer is still likely at the
    share of the named answers it gave until then (``(1 - share) ** answers_since`` at least
    :data:`GONE_CHANCE`). Models that answer side by side (clients asking for several under
    one task, a canary) are all live; a model replaced by another stops being live a few
    answers after it (one that gave all the answers before: at the next). Empty when no answer
    names its model."""
    models = [ex.teacher for ex in sorted(examples, key=lambda ex: ex.created_at) if ex.teacher]
    last = {model: i for i, model in enumerate(models)}
    given = Counter(models)
    live = set()
    for model, i in last.items():
        since = len(models) - 1 - i
        share = given[model] / (i + 1)
        if (1 - share) ** since >= GONE_CHANCE:
            live.add(model)
    return frozenset(live)


def newest_teacher(examples: Sequence[Example]) -> str | None:
    """The model of the newest teacher answer that names one (None when none does)."""
    named = [ex for ex in examples if ex.teacher]
    return max(named, key=lambda ex: ex.created_at).teacher if named else None


def judges(ex: Example, teachers: frozenset[str]) -> bool:
    """Whether ``ex`` may be held out to calibrate and judge a student: drawn regardless of the
    router, and answered by one of ``teachers`` (the live ones, :func:`live_teachers`) when
    the log names any. A student is certified against the teachers that answer the traffic
    now, never an earlier one (a teacher model changed, or a log imported from elsewhere): its
    answers only train."""
    return ex.uniform and (not teachers or ex.teacher in teachers)


def widened(dataset: Dataset, n: int) -> tuple[list[Example], list[Example]]:
    """The training and held-out examples with ``n`` held out where the log allows (at most
    half of them): the run's held-out slice and, before it, the newest uniform training
    examples of the live teachers (teacher answers, audits, shadow checks; never a correction
    or a synthetic one), each list in time order."""
    total = len(dataset.train) + len(dataset.eval)
    need = min(n, total // 2) - len(dataset.eval)
    if need <= 0:
        return dataset.train, dataset.eval
    teachers = live_teachers([*dataset.train, *dataset.eval])
    movable = [
        i
        for i, ex in enumerate(dataset.train)
        if judges(ex, teachers) and ex.source not in ("correction", "synthetic")
    ]
    moved = set(movable[-need:])
    train = [ex for i, ex in enumerate(dataset.train) if i not in moved]
    return train, [dataset.train[i] for i in sorted(moved)] + dataset.eval


def infer_kind(examples: Iterable[Example]) -> str:
    """``json`` when answers are JSON objects/arrays or JSON was asked for; ``label`` when the
    answers are short and repeat; else ``text``."""
    examples = list(examples)
    answers = [ex.answer for ex in examples]
    asked_json = any(_wants_json(ex.response_format) for ex in examples)
    if answers and (asked_json or sum(map(_is_json_container, answers)) >= 0.95 * len(answers)):
        return "json"
    short = [a for a in answers if len(a) <= 64 and len(a.split()) <= 6]
    distinct = len({normalise(a) for a in answers})
    if answers and len(short) >= 0.95 * len(answers) and distinct <= max(2, 0.5 * len(answers)):
        return "label"
    return "text"


# -- internals -----------------------------------------------------------------------------


def _counted(rows: Iterable[dict[str, Any]], stats: Counter[str]) -> Iterator[dict[str, Any]]:
    """``rows`` as they come, counted in ``stats["log_rows"]``."""
    stats["log_rows"] += 0  # reported even when the log has none
    for row in rows:
        stats["log_rows"] += 1
        yield row


def _examples(
    rows: Iterable[dict[str, Any]],
    failures: set[str],
    feedback: dict[str, dict[str, Any]],
    config: DatasetConfig,
    stats: Counter[str],
    turns: Callable[[str], Turn | None],
    draws: Draws | None = None,
) -> Iterable[Example]:
    scrubber = Scrubber.build(
        secrets=config.scrub_secrets, pii=config.scrub_pii, extra=config.pii_patterns
    )
    for row in rows:
        if draws is not None:
            draws.add(row)
        origin = _shadow_origin(row)
        fb = feedback.get(row["id"]) or (feedback.get(origin) if origin else None)
        if fb is not None and fb["score"] is not None and fb["score"] < 0:
            stats["dropped_negative_feedback"] += 1
            continue
        correction = fb["correction"] if fb is not None else None
        if row["served_by"] == "student" and not correction:
            continue  # no teacher answer on this row (its shadow row has it, if any)
        request = _loads(row["request_json"])
        prompt = _prompt(row["endpoint"], request, turns)
        if prompt is None:
            stats["dropped_unsupported_prompt"] += 1
            continue
        if correction:
            answer, reason = correction, None
            stats["corrected_by_feedback"] += 1
        elif row["status"] != "ok":
            answer, reason = None, f"dropped_status_{row['status']}"
        else:
            answer, reason = _answer(row["endpoint"], _loads(row["response_json"]))
        if reason is None and (answer is None or not answer.strip()):
            reason = "dropped_empty"
        if reason is None and len(answer) > config.max_answer_chars:
            reason = "dropped_too_long"
        if reason is not None:
            stats[reason] += 1
            continue
        ex = Example(
            id=row["id"],
            created_at=row["created_at"],
            answer=answer.strip(),
            source=_source(row, fb) if correction else row["served_by"],
            failure=row["id"] in failures or (origin in failures if origin else False),
            response_format=_response_format(row["endpoint"], request),
            uniform=is_uniform(row),
            teacher=row.get("teacher_model") if row["served_by"] != "student" else None,
            **prompt,
        )
        if scrubber:
            stats["scrubbed"] += _scrub(ex, scrubber)
        yield ex


def _source(row: Mapping[str, Any], fb: Mapping[str, Any]) -> str:
    """``reviewed`` for a correction given with the admin key, else ``correction``."""
    return "reviewed" if fb.get("reviewed") else "correction"


def is_uniform(row: Mapping[str, Any]) -> bool:
    """A teacher row drawn from the task's traffic regardless of the router: an audit, a
    shadow check, a shadow-mode answer, or one logged while no student routed the task."""
    return how_drawn(row) in UNIFORM


def _shadow_origin(row: Mapping[str, Any]) -> str | None:
    reason = row.get("route_reason") or ""
    if row["served_by"] == "shadow" and reason.startswith("shadow of "):
        return reason.removeprefix("shadow of ").strip()
    return None


def _loads(text: str | None) -> Any:
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return None


def log_turns(db: sqlite_utils.Database) -> Callable[[str], Turn | None]:
    """Responses the log holds, by id, as turns of a conversation (a chain's links)."""

    def lookup(response_id: str) -> Turn | None:
        row = find_response(db, response_id)
        if row is None:
            return None
        response = _loads(row["response_json"])
        request = _loads(row["request_json"])
        if not isinstance(request, dict) or not isinstance(response, dict):
            return None
        return Turn(response_id, request, response, row["served_by"])

    return lookup


def _response_format(endpoint: str, request: Any) -> dict[str, Any] | None:
    if not isinstance(request, dict):
        return None
    if endpoint == "responses":
        return requested_format(request)
    return request.get("response_format")


def _prompt(
    endpoint: str, request: Any, turns: Callable[[str], Turn | None]
) -> dict[str, Any] | None:
    if not isinstance(request, dict):
        return None
    if endpoint == "responses":
        chat = exchange_messages(request, turns)
        if chat is None or any(m.get("tool_calls") or m["role"] == "tool" for m in chat):
            return None  # as for chat: a conversation with tool calls is not learned from
        return {"messages": chat} if chat else None
    if endpoint == "completions":
        prompt = request.get("prompt")
        return {"prompt": prompt} if isinstance(prompt, str) and prompt else None
    messages = []
    for message in request.get("messages") or []:
        content = _text_content(message.get("content")) if isinstance(message, dict) else None
        if content is None or message.get("tool_calls") or message.get("role") == "tool":
            return None
        messages.append({"role": str(message.get("role")), "content": content})
    return {"messages": messages} if messages else None


def _text_content(content: Any) -> str | None:
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(
        isinstance(p, dict) and p.get("type") == "text" for p in content
    ):
        return "".join(str(p.get("text", "")) for p in content)
    return None


def _answer(endpoint: str, response: Any) -> tuple[str | None, str | None]:
    if endpoint == "responses":
        return (
            exchange_answer(response) if isinstance(response, dict) else (None, "dropped_no_answer")
        )
    choices = response.get("choices") if isinstance(response, dict) else None
    if not choices or not isinstance(choices[0], dict):
        return None, "dropped_no_answer"
    choice = choices[0]
    if choice.get("finish_reason") == "length":
        return None, "dropped_truncated"
    if endpoint == "completions":
        return choice.get("text"), None
    message = choice.get("message") or {}
    if message.get("tool_calls") or message.get("function_call"):
        return None, "dropped_tool_call"
    if message.get("refusal"):
        return None, "dropped_refusal"
    return message.get("content"), None


def _scrub(ex: Example, scrubber: Scrubber) -> int:
    ex.answer, total = scrubber.scrub(ex.answer)
    if ex.prompt is not None:
        ex.prompt, n = scrubber.scrub(ex.prompt)
        total += n
    for message in ex.messages or []:
        message["content"], n = scrubber.scrub(message["content"])
        total += n
    return total


def _dedupe(examples: list[Example], threshold: float, stats: Counter[str]) -> list[Example]:
    """Keep the newest copy of each prompt; a duplicate's failure flag passes to the kept one."""
    newest_first = examples[::-1]
    kept: dict[str, Example] = {}
    unique: list[Example] = []
    for ex in newest_first:
        key = normalise(ex.prompt_text())
        if key in kept:
            kept[key].failure |= ex.failure
            stats["dropped_exact_duplicate"] += 1
            continue
        kept[key] = ex
        unique.append(ex)
    matches = near_duplicates([ex.variable_text() for ex in unique], threshold)
    out = []
    for ex, match in zip(unique, matches, strict=True):
        if match is None:
            out.append(ex)
        else:
            unique[match].failure |= ex.failure
            stats["dropped_near_duplicate"] += 1
    return out[::-1]


def common_system_prompt(examples: Iterable[Example]) -> str | None:
    """The system prompt most of ``examples`` carry (None: none carries one)."""
    prompts = Counter(
        m["content"] for ex in examples for m in ex.messages or [] if m["role"] == "system"
    )
    return prompts.most_common(1)[0][0] if prompts else None


def _window(train: list[Example], held_out: list[Example]) -> dict[str, float | None]:
    return {
        "train_from": train[0].created_at if train else None,
        "train_to": train[-1].created_at if train else None,
        "eval_from": held_out[0].created_at if held_out else None,
        "eval_to": held_out[-1].created_at if held_out else None,
    }


def _wants_json(response_format: Any) -> bool:
    return isinstance(response_format, dict) and response_format.get("type") in (
        "json_object",
        "json_schema",
    )


def _is_json_container(text: str) -> bool:
    stripped = text.strip()
    return stripped[:1] in ("{", "[") and parses_json(stripped)


def parses_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True
