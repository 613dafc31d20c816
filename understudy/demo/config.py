"""The demo's options and the gateway config file it writes for them."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from understudy.demo.banking77 import Banking77
from understudy.demo.teacher import GOLD_LABELS

TASK = "banking77"
"""The task every demo request belongs to (sent as ``X-Understudy-Task``)."""
ADMIN_KEY = "demo-admin-key"
"""The demo gateway's admin key (admin API and dashboard); it listens on 127.0.0.1 only."""
TEACHER_KEY = "demo-teacher-key"


@dataclass
class DemoOptions:
    """What ``understudy demo`` runs; the defaults finish in a few minutes on 2 CPU cores."""

    history: int = 2000
    """Train-split queries sent first, as logged history (the teacher answers them all)."""
    requests: int = 320
    """Test-split queries sent as live traffic after the history."""
    intents: int = 8
    """Keep the queries of the K most frequent intents only (77: all of Banking77)."""
    warmup: int = 120
    """Live requests the teacher answers alone before the first distillation run: the run
    holds out this most recent slice, so the router is calibrated on the teacher's own answers
    to live traffic (0: the first run follows the history and is calibrated on it)."""
    every: int = 100
    """A new distillation run each time the teacher took this many more calls during the live
    traffic after the first run (requests the student deferred and shadow checks)."""
    first_every: int = 0
    """Until a run promotes a student, a new run each time the teacher took this many more
    calls instead of ``every`` (the distiller's ``schedule.first_student_trigger``); 0:
    ``every`` throughout."""
    max_runs: int = 0
    """Most distillation runs (0: no limit)."""
    data_dir: Path = Path("understudy-demo")
    """Where the gateway's database, students and logs go (emptied first)."""
    port: int | None = None
    """Gateway port (default: 8000, or a free port when 8000 is taken)."""
    keep_running: bool = False
    """Leave the gateway and the replay teacher up after the summary, until Ctrl-C."""
    seed: int = 0
    """Seed of the query order and of training."""
    price_in: float = 2.50
    """Teacher price, USD per 1M prompt tokens (default: GPT-4o's list price)."""
    price_out: float = 10.00
    """Teacher price, USD per 1M completion tokens (default: GPT-4o's list price)."""
    quality_target: float = 0.8
    """Agreement with the teacher the router must keep on the traffic the student serves."""
    shadow_rate: float = 0.2
    """Share of student answers also sent to the teacher: the gateway's live agreement, which
    sends the task back to the teacher when it falls below the quality target."""
    epochs: float = 6.0
    """Training epochs of each distillation run."""
    warm_start_epochs: float = 0.0
    """Epochs of a run that continues from the champion (``train.warm_start``); 0: every run
    trains a new student from scratch."""
    concurrency: int = 1
    """Requests in flight at once. 1 (the default): each request waits for the one before,
    so the log's order, and with it the promotions and the summary, is the same for the same
    ``seed`` whatever the machine's load."""
    data: Banking77 | None = None
    """The queries and the teacher's answers (default: the packaged Banking77 files)."""
    extra: dict[str, dict[str, object]] = field(default_factory=dict)
    """Further ``[section]`` settings for the config file (tests use it to shrink runs)."""


def gateway_config(options: DemoOptions, *, teacher_url: str, port: int, model: str) -> str:
    """The TOML config of the demo gateway: local tiny student, tiny distiller settings."""
    data_dir = options.data_dir.resolve()
    sections: dict[str, dict[str, object]] = {
        "teacher": {"url": teacher_url, "api_key": TEACHER_KEY, "timeout_s": 30.0},
        "student": {"backend": "local", "device": "cpu", "reload_interval_s": 0.5},
        "router": {
            "quality_target": options.quality_target,
            "shadow_rate": options.shadow_rate,
            "sampling_seed": options.seed,
        },
        # the gold labels standing in for the teacher in the history are priced as its answers
        "costs": {
            "prices": {
                name: f"{options.price_in:g}/{options.price_out:g}" for name in (model, GOLD_LABELS)
            }
        },
        "distiller.dataset": _held_out(options),
        # The classical candidate is judged on the same slice (the product widens it to up to
        # 1,000 of the live teacher's answers).
        "distiller.classical": {"held_out_min": options.warmup},
        "distiller.train": {
            "base_model": "tiny",
            "method": "full",
            "learning_rate": 3e-3,
            "epochs": options.epochs,
            "batch_size": 16,
            "weight_decay": 0.1,
            "completion_only_loss": True,
            "device": "cpu",
            "seed": options.seed,
            "isolation": "inline",
            "logging_steps": 10,
        },
        "distiller.gates": {
            "max_new_tokens": 16,
            "eval_batch_size": 64,
        },
        "distiller.schedule": {"new_examples_trigger": 0, "first_student_trigger": 0},
    }
    if options.warm_start_epochs > 0:
        sections["distiller.train"] |= {
            "warm_start": True,
            "warm_start_epochs": options.warm_start_epochs,
        }
    for name, values in options.extra.items():
        sections.setdefault(name, {}).update(values)
    lines = [
        "# Written by `understudy demo`; every run rewrites it.",
        f"data_dir = {_toml(str(data_dir))}",
        'host = "127.0.0.1"',
        f"port = {port}",
        f"admin_key = {_toml(ADMIN_KEY)}",
        'log_level = "info"',
    ]
    for name, values in sections.items():
        lines += ["", f"[{name}]"]
        lines += [f"{key} = {_toml(value)}" for key, value in values.items()]
    return "\n".join(lines) + "\n"


def _held_out(options: DemoOptions) -> dict[str, object]:
    """The held-out slice: the ``warmup`` most recent teacher answers (the live ones), or 10%
    of the log when there is no warm-up. The history's gold labels are logged under their own
    name (:data:`GOLD_LABELS`), so the product's default slice (the newest 10% of the live
    teacher's answers, up to 1,000) would not reach into them either; the demo keeps the
    slice its figures were measured with (BENCHMARKS.md, "Replay, 1,000-query streams")."""
    if options.warmup:
        return {"eval_fraction": 0.01, "eval_min": options.warmup, "eval_max": options.warmup}
    return {"eval_fraction": 0.1, "eval_min": 50}


def _toml(value: object) -> str:
    """A TOML value: strings, numbers, booleans and inline tables of those."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{json.dumps(k)} = {_toml(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return json.dumps(str(value))  # a JSON string is a valid TOML basic string
