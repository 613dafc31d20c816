"""Offline commands: ``tasks``, ``export`` and ``mode`` (the database), ``tiny-model``."""

from __future__ import annotations

import datetime as dt
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from understudy.distiller.command_checks import existing_store, require_known_task
from understudy.distiller.dataset import log_turns
from understudy.gateway.accounting import fmt
from understudy.gateway.accounting.summary import Summary, describe_window
from understudy.report import DEFAULT_WINDOW_S, build_summary
from understudy.settings import Settings
from understudy.storage.database import Store
from understudy.storage.queries import iter_teacher_pairs, list_tasks
from understudy.storage.registry import set_mode
from understudy.student.conversation import Turn, fine_tuning_example
from understudy.student.tiny import build_tiny_model


def _store(settings: Settings) -> Store:
    """The settings' database, its schema brought up to date; refused when it does not exist."""
    store = existing_store(settings.data_dir, settings.db_path)
    store.migrate()
    return store


def print_tasks(
    settings: Settings,
    *,
    as_json: bool = False,
    window_s: float = DEFAULT_WINDOW_S,
    out: IO[str] | None = None,
) -> int:
    """Every logged task with its figures over the window, from the same summary as
    ``understudy report`` (same window, same definitions); tasks idle in the window are
    listed with zeros and their last request."""
    out = out or sys.stdout
    with _store(settings).read() as db:
        logged = {r["task"]: r.get("last_at") for r in list_tasks(db)}
    summary = build_summary(settings, window_s)
    rows = task_rows(summary, logged)
    if as_json:
        body = {
            "window": describe_window(summary),
            "since": summary.since,
            "until": summary.until,
            "definitions": summary.definitions,
            "tasks": rows,
        }
        out.write(json.dumps(body, indent=2) + "\n")
        return 0
    if not rows:
        out.write(f"no requests logged yet in {settings.db_path}\n")
        return 0
    out.write(f"tasks: {describe_window(summary)}, as in `understudy report`\n\n")
    header = (
        "task",
        "requests",
        "student",
        "coverage",
        "deferred",
        "shadow checks",
        "failed",
        "saved",
        "mode",
        "last request (UTC)",
    )
    table = [header] + [
        (
            r["task"],
            fmt.count(r["requests"]),
            fmt.count(r["student"]),
            fmt.pct(r["coverage"] if r["requests"] else None),
            fmt.count(r["deferred"]),
            fmt.count(r["shadow_calls"]),
            fmt.count(r["failed"]),
            fmt.usd(r["saved_usd"]),
            r["mode"],
            _utc(r["last_at"]),
        )
        for r in rows
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        cells = [
            cell.ljust(w) if i in (0, 8, 9) else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        ]
        out.write("  ".join(cells).rstrip() + "\n")
    terms = {k: v for k, v in summary.definitions.items() if k in ("requests", "coverage")}
    out.write("\n" + "\n".join(f"{k}: {v}" for k, v in terms.items()) + "\n")
    return 0


def task_rows(summary: Summary, logged: dict[str, float | None]) -> list[dict[str, Any]]:
    """One row per task: the summary's figures in its window (zeros for a task idle in it)
    and its last request ever; most recent first."""
    rows = []
    for t in summary.tasks:
        last = logged.get(t.task) or t.last_at
        rows.append(
            {
                "task": t.task,
                "requests": t.requests,
                "student": t.student,
                "teacher": t.teacher,
                "coverage": t.coverage,
                "deferred": t.deferred,
                "shadow_calls": t.shadow_calls,
                "failed": t.failed,
                "saved_usd": t.saved_usd,
                "mode": t.mode,
                "champion": t.champion,
                "last_at": last,
            }
        )
    seen = {t.task for t in summary.tasks}
    for task, last in logged.items():
        if task not in seen:
            rows.append(
                {
                    "task": task,
                    **dict.fromkeys(("requests", "student", "teacher", "deferred"), 0),
                    **dict.fromkeys(("shadow_calls", "failed"), 0),
                    "coverage": 0.0,
                    "saved_usd": 0.0,
                    "mode": "-",
                    "champion": None,
                    "last_at": last,
                }
            )
    rows.sort(key=lambda r: (-(r["last_at"] or 0.0), r["task"]))
    return rows


def set_task_mode(settings: Settings, *, task: str, mode: str) -> int:
    with _store(settings).write() as db:
        require_known_task(db, task)
        state = set_mode(db, task, mode, reason="command line")
    champion = state.champion_id or "no student yet"
    print(
        f"task {task}: mode {state.mode} ({champion}); a running gateway applies it within "
        f"{settings.student.reload_interval_s:g} s"
    )
    return 0


def tiny_model(
    path: str,
    *,
    texts_file: str | None = None,
    hidden: int = 128,
    layers: int = 2,
    vocab_size: int = 2048,
    context: int = 256,
    seed: int = 0,
) -> int:
    """Build a tiny Llama-architecture student and its tokenizer at ``path``."""
    texts = None
    if texts_file:
        lines = Path(texts_file).read_text(encoding="utf-8").splitlines()
        texts = [line for line in lines if line.strip()]
        if not texts:
            print(f"understudy: {texts_file} has no text", file=sys.stderr)
            return 2
    out = build_tiny_model(
        path,
        texts,
        hidden=hidden,
        layers=layers,
        vocab_size=vocab_size,
        max_positions=context,
        seed=seed,
    )
    print(f"tiny model written to {out}")
    return 0


def export(settings: Settings, *, task: str, fmt: str = "jsonl", output: str | None = None) -> int:
    count = 0
    target: IO[str]
    with _store(settings).read() as db:
        require_known_task(db, task)  # before the output file is created
    with (
        _store(settings).read() as db,
        Path(output).open("w", encoding="utf-8") if output else _stdout() as target,
    ):
        for example in training_examples(iter_teacher_pairs(db, task), log_turns(db)):
            target.write(json.dumps(example, ensure_ascii=False) + "\n")
            count += 1
    noun = "example" if count == 1 else "examples"
    print(f"exported {count} {noun} of task {task!r}", file=sys.stderr)
    return 0


def training_examples(
    pairs: Iterator[dict[str, Any]], turns: Callable[[str], Turn | None] = lambda _: None
) -> Iterator[dict[str, Any]]:
    """Logged pairs in OpenAI fine-tuning format: chat ``messages`` (+ ``tools``), or
    ``prompt``/``completion`` for the legacy completions endpoint. A Responses API exchange is
    written as chat, its ``previous_response_id`` chain expanded through ``turns``."""
    for pair in pairs:
        request, response = pair["request"], pair["response"]
        if pair["endpoint"] == "responses":
            example = fine_tuning_example(request, response, turns)
            if example is not None:
                yield example
            continue
        choices = response.get("choices") or []
        if not choices:
            continue
        choice = choices[0]
        if pair["endpoint"] == "completions":
            prompt = request.get("prompt")
            if isinstance(prompt, str):
                yield {"prompt": prompt, "completion": choice.get("text") or ""}
            continue
        message = {
            k: v
            for k, v in (choice.get("message") or {}).items()
            if k in ("role", "content", "tool_calls") and v is not None
        }
        example: dict[str, Any] = {"messages": [*request.get("messages", []), message]}
        if request.get("tools"):
            example["tools"] = request["tools"]
        if request.get("parallel_tool_calls") is not None:
            example["parallel_tool_calls"] = request["parallel_tool_calls"]
        yield example


class _stdout:
    def __enter__(self) -> IO[str]:
        return sys.stdout

    def __exit__(self, *exc: object) -> None:
        sys.stdout.flush()


def _utc(ts: float | None) -> str:
    if ts is None:
        return "-"
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
